"""MLproject entry point `reproduce`: a thin wrapper over `ddmlflow reproduce`."""
import sys

from ddmlflow.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", *sys.argv[1:]]))
