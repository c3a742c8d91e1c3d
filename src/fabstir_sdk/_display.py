"""Notebook niceties: small HTML tables for ``_repr_html_`` and optional progress bars.

Both cost nothing at ``import fabstir_sdk``: tables are plain string building, and tqdm is
imported only when a bar is actually shown. Bars are shown in a Jupyter kernel (or when
``FABSTIR_PROGRESS=1``), never in scripts, servers or test runs unless asked, and are
silently skipped when tqdm is not installed (``pip install 'fabstir-sdk[notebook]'``).
"""

from __future__ import annotations

import html
import importlib.util
import json
import os
import sys
from collections.abc import Iterable
from types import TracebackType
from typing import Any

from .chain.units import ETH_DECIMALS, format_units

__all__ = ["PROGRESS_ENV", "Progress", "html_table", "native_amount", "progress_wanted"]

#: ``1`` forces progress bars on, ``0`` off; unset: on only inside a Jupyter kernel.
PROGRESS_ENV = "FABSTIR_PROGRESS"

_CELL_LIMIT = 200  # characters of one value shown in a table cell


def _cell(value: object) -> str:
    if isinstance(value, bool) or value is None:
        text = str(value)
    elif isinstance(value, dict | list | tuple):
        text = json.dumps(value, default=str, sort_keys=True)
    else:
        text = str(value)
    if len(text) > _CELL_LIMIT:
        text = text[: _CELL_LIMIT - 1] + "…"
    return html.escape(text, quote=True)


def html_table(title: str, rows: Iterable[tuple[str, object]]) -> str:
    """A two-column table, every label and value HTML-escaped (values come from hosts and
    chains we do not control, so nothing in them may become markup)."""
    body = "".join(
        f"<tr><th style='text-align:left'>{_cell(label)}</th>"
        f"<td style='text-align:left'><code>{_cell(value)}</code></td></tr>"
        for label, value in rows
    )
    return f"<table><caption>{_cell(title)}</caption><tbody>{body}</tbody></table>"


def native_amount(amount: int, token: str) -> str:
    """``amount`` in base units, and in ETH when ``token`` is the zero address (the only
    token whose decimals are known without asking the chain)."""
    if int(token, 16) == 0:
        return f"{amount} wei ({format_units(amount, ETH_DECIMALS)} ETH)"
    return f"{amount} base units"


def progress_wanted(explicit: bool | None = None) -> bool:
    """Whether to draw bars: ``explicit`` wins, then $FABSTIR_PROGRESS, then "in Jupyter"."""
    if explicit is not None:
        return explicit
    forced = os.environ.get(PROGRESS_ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    return _in_kernel()


def _in_kernel() -> bool:
    """Whether this code runs in a Jupyter kernel (not plain IPython, not a script that
    merely imported ipykernel). Looks only at modules already imported."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and hasattr(shell, "kernel")


def _bar_class() -> Any:
    """tqdm's widget bar in a kernel with ipywidgets, its text bar otherwise; None without
    tqdm. (``tqdm.auto`` would pick the widget bar and fail when ipywidgets is missing.)"""
    if importlib.util.find_spec("tqdm") is None:
        return None
    widgets = _in_kernel() and importlib.util.find_spec("ipywidgets") is not None
    return importlib.import_module("tqdm.notebook" if widgets else "tqdm").tqdm


class Progress:
    """A progress bar that may not exist: every method is a no-op when bars are off or tqdm
    is missing. ``after`` delays drawing until that much progress was made, so small
    uploads never flash a bar."""

    def __init__(
        self,
        description: str,
        *,
        total: int | None = None,
        unit: str = "it",
        after: int = 0,
        enabled: bool | None = None,
    ) -> None:
        self._options: dict[str, Any] = {"desc": description, "total": total, "unit": unit}
        if unit == "B":
            self._options.update(unit_scale=True, unit_divisor=1024)
        self._cls = _bar_class() if progress_wanted(enabled) else None
        self._after = after
        self._done = 0
        self._bar: Any = None
        self.shown = False

    def update(self, amount: int = 1, *, status: str | None = None) -> None:
        self._done += amount
        if self._cls is None:
            return
        if self._bar is None:
            if self._done < self._after:
                return
            self._bar = self._cls(leave=True, initial=self._done - amount, **self._options)
            self.shown = True
        if status is not None:
            self._bar.set_postfix_str(status, refresh=False)
        self._bar.update(amount)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
