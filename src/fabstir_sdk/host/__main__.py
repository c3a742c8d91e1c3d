"""``python -m fabstir_sdk.host run ...``: the reference host (same as ``fabstir host``)."""

import sys

from ._cli import main

sys.exit(main())
