"""``python -m tdnn_siamese``: the same as the ``tdnn-siamese`` command."""

import sys

from .cli import main

sys.exit(main())
