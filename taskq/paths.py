"""The API's URL paths, spelled once: the gateway's routes and every link taskq
writes into an answer (a result URL, the next page of a run's files, a file)."""

from __future__ import annotations

RUNS = "/v1/tasks/runs"
GROUPS = "/v1/tasks/groups"
BETA_RUNS = "/v1beta/tasks/runs"
BETA_GROUPS = "/v1beta/tasks/groups"
ASYNC = "/v1/async"
OUTPUT_FILES = "/v1/outputs/"  # + {run_id}/{uid}/{name}, signed (outputs/directory.py)


def run_result(run_id: str) -> str:
    return f"{RUNS}/{run_id}/result"


def run_outputs(run_id: str, cursor: str | None = None) -> str:
    """Where every file of the run is listed, from `cursor` on."""
    return f"{RUNS}/{run_id}/outputs" + (f"?cursor={cursor}" if cursor else "")
