"""MLproject entry point `transfer`: a thin wrapper over `ddmlflow transfer`."""
import sys

from ddmlflow.cli import main

if __name__ == "__main__":
    sys.exit(main(["transfer", *sys.argv[1:]]))
