"""MLproject entry point `train_global`: a thin wrapper over `ddmlflow train-global`."""
import sys

from ddmlflow.cli import main

if __name__ == "__main__":
    sys.exit(main(["train-global", *sys.argv[1:]]))
