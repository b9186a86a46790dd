"""``python -m posheads`` runs the ``posheads`` command."""

import sys

from .cli import main

sys.exit(main())
