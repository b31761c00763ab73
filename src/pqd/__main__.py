"""``python -m pqd``: the same as the ``pqd`` console script."""

import sys

from pqd.cli import main

if __name__ == "__main__":
    sys.exit(main())
