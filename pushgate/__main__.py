"""``python -m pushgate`` runs the command line."""

import sys

from pushgate.cli import main

sys.exit(main())
