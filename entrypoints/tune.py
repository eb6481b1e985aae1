"""MLproject entry point `tune`: a thin wrapper over `ddmlflow tune`."""
import sys

from ddmlflow.cli import main

if __name__ == "__main__":
    sys.exit(main(["tune", *sys.argv[1:]]))
