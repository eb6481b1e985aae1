"""MLproject entry point `evaluate`: a thin wrapper over `ddmlflow evaluate`."""
import sys

from ddmlflow.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
