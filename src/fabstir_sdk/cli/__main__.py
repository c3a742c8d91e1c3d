"""``python -m fabstir_sdk.cli``: the ``fabstir`` command."""

import sys

from ._main import main

sys.exit(main())
