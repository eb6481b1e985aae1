"""MLproject entry point `train_local`: a thin wrapper over `ddmlflow train-local`."""
import sys

from ddmlflow.cli import main

if __name__ == "__main__":
    sys.exit(main(["train-local", *sys.argv[1:]]))
