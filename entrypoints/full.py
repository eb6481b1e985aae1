"""MLproject entry point `full`: a thin wrapper over `ddmlflow full`."""
import sys

from ddmlflow.cli import main

if __name__ == "__main__":
    sys.exit(main(["full", *sys.argv[1:]]))
