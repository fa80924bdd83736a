"""``python -m cfm.cli``: the same as ``python -m cfm`` (it worked when the
command line was the module cfm/cli.py)."""
import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
