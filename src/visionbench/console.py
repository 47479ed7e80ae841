"""Rich consoles that stay readable when piped: no 80-column wrapping of long lines."""

from __future__ import annotations

import sys

from rich.console import Console


def make_console(quiet: bool = False, stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    # off a terminal rich assumes 80 columns and wraps run ids and epoch lines; logs want whole lines
    width = None if stream.isatty() else 200
    return Console(quiet=quiet, stderr=stderr, highlight=False, width=width, soft_wrap=width is not None)
