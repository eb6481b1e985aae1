"""MLproject entry point `train_coarse`: a thin wrapper over `ddmlflow train-coarse`."""
import sys

from ddmlflow.cli import main

if __name__ == "__main__":
    sys.exit(main(["train-coarse", *sys.argv[1:]]))
