"""``python -m pcad`` runs the command line."""

import sys

from pcad.cli.main import main

if __name__ == "__main__":  # importing the module (pytest --doctest-modules) runs nothing
    sys.exit(main())
