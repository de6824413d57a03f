"""The example task app that the Procfile's workers serve (TASKQ_APP=workers.app).

Also what the tests run: each processor below is small and says what it shows.
"""

from __future__ import annotations

import time

from pydantic import BaseModel

from taskq import current_run, task


class CompanyInput(BaseModel):
    name: str
    website: str | None = None


class CompanyOutput(BaseModel):
    name: str
    summary: str
    founded: int | None = None


@task(name="research", timeout=600)
def research(inp: CompanyInput) -> CompanyOutput:
    """Typed input and output: the input arrives as the model, the return is validated."""
    current_run().progress(f"looking up {inp.name}")
    return CompanyOutput(name=inp.name, summary=f"{inp.name} makes things.", founded=None)


@task
def echo(inp: dict) -> dict:
    """Returns its input: the smallest JSON round trip."""
    return inp


@task
def shout(text: str) -> str:
    """Text in, text out."""
    return text.upper()


@task
def noop(inp: dict) -> dict:
    """Does nothing; what the benchmarks measure taskq's own overhead with."""
    return {}


@task(retries=3)
def sleep(inp: dict) -> dict:
    """Sleeps `seconds` (reporting progress each second): for cancel, kill and shutdown."""
    seconds = float(inp.get("seconds", 1))
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        current_run().progress(f"{left:.1f} s to go")
        time.sleep(min(1.0, left))
    return {"slept": seconds}


@task(retries=0)
def hold(inp: dict) -> dict:
    """Sleeps `seconds` and is never retried: for a worker lost on a last attempt."""
    time.sleep(float(inp.get("seconds", 1)))
    return {"held": True}


class Flaky(Exception):
    pass


@task(retries=3, retry_on=(Flaky,))
def flaky(inp: dict) -> dict:
    """Fails the first `failures` attempts, then succeeds: retries made visible."""
    attempt = current_run().attempt
    if attempt <= int(inp.get("failures", 2)):
        raise Flaky(f"attempt {attempt} fails on purpose")
    return {"attempt": attempt}


@task(retries=0)
def broken(inp: dict) -> dict:
    """Always raises: a failure with no retries."""
    raise ValueError(inp.get("message", "broken on purpose"))


@task(timeout=1, retries=0)
def slow(inp: dict) -> dict:
    """Sleeps past its 1 s timeout."""
    time.sleep(float(inp.get("seconds", 5)))
    return {}


@task
def bad_output(inp: dict) -> CompanyOutput:
    """Returns what its return type does not allow."""
    return {"summary": 42}  # type: ignore[return-value]
