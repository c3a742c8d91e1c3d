"""``python -m fabstir_sdk``: the ``fabstir`` command, for when its script is not on PATH."""

import sys

from .cli import main

sys.exit(main())
