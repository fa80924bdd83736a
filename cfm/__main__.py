"""``python -m cfm``: the ``cfm`` command line (see :mod:`cfm.cli`)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
