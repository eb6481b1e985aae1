"""MLproject entry point `compose`: a thin wrapper over `ddmlflow compose`."""
import sys

from ddmlflow.cli import main

if __name__ == "__main__":
    sys.exit(main(["compose", *sys.argv[1:]]))
