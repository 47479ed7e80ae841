"""Early stopping reads the logged epochs: patience counts epochs since the best val accuracy."""

from __future__ import annotations

import signal

import pytest

from visionbench.engine.stopping import Stopped, early_stop_due, stop_on_signals


def rows(*accs):
    return [{"epoch": i + 1, "train_acc": 0.5, "val_acc": a} for i, a in enumerate(accs)]


def test_stops_after_patience_epochs_without_a_better_val_accuracy():
    assert not early_stop_due(rows(0.5, 0.6, 0.6), 2)  # a tie is no improvement: 1 epoch so far
    assert early_stop_due(rows(0.5, 0.6, 0.6, 0.55), 2)
    assert not early_stop_due(rows(0.5, 0.6, 0.6, 0.61), 2)
    assert not early_stop_due(rows(0.5, 0.4, 0.3, 0.2), 0)  # 0: off


def test_without_validation_train_accuracy_decides():
    history = [{"train_acc": a} for a in (0.3, 0.4, 0.4, 0.4)]
    assert early_stop_due(history, 2) and not early_stop_due(history, 3)


def test_sighup_stops_like_sigterm_and_a_second_signal_or_at_once_stops_there():
    with stop_on_signals() as stop:
        signal.raise_signal(signal.SIGHUP)  # the terminal closed: a flag, not a kill
        assert stop.signum == signal.SIGHUP
        with pytest.raises(Stopped) as second:
            signal.raise_signal(signal.SIGTERM)
        assert second.value.signum == signal.SIGTERM
    with stop_on_signals(at_once=True), pytest.raises(Stopped) as first:
        signal.raise_signal(signal.SIGHUP)
    assert first.value.signum == signal.SIGHUP
