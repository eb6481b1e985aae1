"""MLproject entry point `report`: a thin wrapper over `ddmlflow report`."""
import sys

from ddmlflow.cli import main

if __name__ == "__main__":
    sys.exit(main(["report", *sys.argv[1:]]))
