"""``python -m fabstir_sdk.host [--debug] ...``: the reference host, the same as
``fabstir [--debug] host ...``."""

import sys

from ..cli import main

args = sys.argv[1:]
flags = ["--debug"] if args[:1] == ["--debug"] else []
sys.exit(main([*flags, "host", *args[len(flags) :]]))
