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


@contextmanager
def stop_on_signals():
    """SIGINT/SIGTERM set a flag instead of killing: the loop saves a checkpoint and stops."""
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum, _):
        if flag:  # a second signal: the user means it, stop now
            raise KeyboardInterrupt
        flag.signum = signum

    for s in old:
        signal.signal(s, handler)
    try:
        yield flag
    finally:
        for s, h in old.items():
            signal.signal(s, h)
