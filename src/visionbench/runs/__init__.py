"""Run records: one folder per run, the record of truth; `open_run` reopens a finished one."""

from .record import Run, RunView, default_run_id, environment, list_runs, runs_root

__all__ = ["Run", "RunView", "default_run_id", "environment", "list_runs", "runs_root"]
