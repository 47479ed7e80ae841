"""When training stops: early stopping on the recorded metrics, and signals turned into a flag
the loop checks between steps."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager


def early_stop_due(rows: list[dict], patience: int) -> bool:
    """True once `patience` epochs in a row brought no better val accuracy (train accuracy
    where there is no validation split); 0 never stops. Reads the logged rows, so a resumed
    run decides exactly as an uninterrupted one."""
    if not patience or not rows:
        return False
    scores = [r.get("val_acc", r["train_acc"]) for r in rows]
    best_epoch = max(range(len(scores)), key=lambda i: (scores[i], -i))
    return len(scores) - 1 - best_epoch >= patience


class StopFlag:
    """Set by a signal handler; the loop checks it between steps and stops cleanly."""

    def __init__(self):
        self.signum: int | None = None

    def __bool__(self) -> bool:
        return self.signum is not None


class Stopped(KeyboardInterrupt):
    """A signal that stops at once: a second one, or one where no loop checks the flag."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


# SIGHUP: the terminal or ssh session closed - stopped as by SIGTERM, not killed mid-write
SIGNALS = [getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)]


@contextmanager
def stop_on_signals(at_once: bool = False):
    """SIGINT/SIGTERM/SIGHUP set a flag instead of killing: the loop saves a checkpoint and
    stops. A second signal, or the first one when `at_once` (no loop checks the flag: the
    final test pass), raises `Stopped` there and then."""
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    old = {s: signal.getsignal(s) for s in SIGNALS}

    def handler(signum, _):
        if flag or at_once:  # a second signal: the user means it, stop now
            raise Stopped(signum)
        flag.signum = signum

    for s in old:
        signal.signal(s, handler)
    try:
        yield flag
    finally:
        for s, h in old.items():
            signal.signal(s, h)
