"""Run records: one folder per run, the record of truth; `open_run` reopens a finished one."""

from .listing import list_runs
from .record import Run, RunView, check_writable, default_run_id, environment, runs_root

__all__ = [
    "Run",
    "RunView",
    "check_writable",
    "default_run_id",
    "environment",
    "list_runs",
    "runs_root",
]
