"""Rich consoles that stay readable when piped: no 80-column wrapping of long lines."""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class PipedConsole(Console):
    """A console whose reader going away (`visionbench train | head -3`) is a BrokenPipeError
    the caller can record (a run says it stopped), where rich would exit the process."""

    def on_broken_pipe(self) -> None:
        stream = sys.stderr if self.stderr else sys.stdout
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())  # what follows goes nowhere, as rich does it
        raise BrokenPipeError(errno.EPIPE, "the output was closed")


def make_console(quiet: bool = False, stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    # off a terminal rich assumes 80 columns and wraps run ids and epoch lines; logs want whole lines
    width = None if stream.isatty() else 200
    return PipedConsole(quiet=quiet, stderr=stderr, highlight=False, width=width, soft_wrap=width is not None)


def bars_off(console: Console) -> bool:
    """No bars on a quiet console; in Jupyter rich draws its live bars in an ipywidgets Output,
    and without ipywidgets it can only warn, so there the bars are left out (the epoch lines
    still print)."""
    if console.quiet or not console.is_jupyter:
        return console.quiet
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return True
    return False


@contextmanager
def count_bar(console: Console, description: str) -> Iterator[Callable[[int, int], None]]:
    """An `update(done, total)` callback whose bar appears on the first call, not before:
    a cache that is already built shows nothing."""
    bar, task = None, None

    def update(done: int, total: int) -> None:
        nonlocal bar, task
        if bar is None:
            bar = Progress(
                TextColumn(description),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=console,
                transient=True,
                disable=bars_off(console),
            )
            bar.start()
            task = bar.add_task(description, total=total)
        bar.update(task, completed=done, total=total)

    try:
        yield update
    finally:
        if bar is not None:
            bar.stop()
