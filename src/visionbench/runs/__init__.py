"""Run records: one folder per run, the record of truth."""

from .record import Run, default_run_id, environment, list_runs, runs_root

__all__ = ["Run", "default_run_id", "environment", "list_runs", "runs_root"]
