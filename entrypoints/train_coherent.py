"""MLproject entry point `train_coherent`: a thin wrapper over `ddmlflow train-coherent`."""
import sys

from ddmlflow.cli import main

if __name__ == "__main__":
    sys.exit(main(["train-coherent", *sys.argv[1:]]))
