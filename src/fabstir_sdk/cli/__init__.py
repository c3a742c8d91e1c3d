"""The ``fabstir`` command: one module per command, the shared helpers below them.

``_args`` (the parser class, port numbers, where the chain and the key come from) and
``_signals`` (run until SIGINT or SIGTERM) are imported by the command modules (``demo``,
``chat``, ``devnet``, ``s5``, ``host``, ``model``, ``proxy``), which ``_main`` puts
together. Nothing outside this package imports it, but the entry points (``fabstir``,
``python -m fabstir_sdk.cli``, ``python -m fabstir_sdk.host``). Each command's heavy imports
happen when it runs, so ``fabstir --help`` stays instant.
"""

from ._args import port_number
from ._main import build_parser, main

__all__ = ["build_parser", "main", "port_number"]
