"""``python -m pcad`` runs the command line."""

import sys

from pcad.cli.main import main

sys.exit(main())
