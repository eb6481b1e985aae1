"""MLproject entry point `decompose`: a thin wrapper over `ddmlflow decompose`."""
import sys

from ddmlflow.cli import main

if __name__ == "__main__":
    sys.exit(main(["decompose", *sys.argv[1:]]))
