"""``python -m posheads.cli`` runs the ``posheads`` command, as ``python -m posheads`` does."""

import sys

from . import main

sys.exit(main())
