"""``python -m ssmtl_core`` runs the ``ssmtl`` command line."""

import sys

from .cli import main

sys.exit(main())
