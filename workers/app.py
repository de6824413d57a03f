"""The example task app that the Procfile's workers serve (TASKQ_APP=workers.app).

Also what the tests run: each processor below is small and says what it shows.
"""

from __future__ import annotations

import asyncio
import time

from pydantic import BaseModel

from taskq import Limit, RateLimited, current_run, task


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


@task
def io_wait(inp: dict) -> dict:
    """Waits 50 ms as on a network call (a blocking sleep): what the I/O benchmark runs."""
    time.sleep(float(inp.get("seconds", 0.05)))
    return {}


@task
async def aio_wait(inp: dict) -> dict:
    """Awaits 50 ms (or `seconds`) on the worker's event loop: many at once in one thread."""
    await asyncio.sleep(float(inp.get("seconds", 0.05)))
    return {}


@task(timeout=1, retries=0)
async def aio_slow(inp: dict) -> dict:
    """Awaits past its 1 s timeout: an async run is cancelled at its deadline."""
    await asyncio.sleep(float(inp.get("seconds", 5)))
    return {}


@task(retries=3)
async def aio_sleep(inp: dict) -> dict:
    """Awaits `seconds` (saying so first): for cancel, kill and shutdown of async runs."""
    current_run().progress("awaiting")
    await asyncio.sleep(float(inp.get("seconds", 1)))
    return {"slept": float(inp.get("seconds", 1))}


@task
def spawner(inp: dict) -> dict:
    """Puts `n` echo runs from inside a run (no HTTP) and returns their ids."""
    return {"children": [echo.put({"i": i}).run_id for i in range(int(inp.get("n", 1)))]}


@task
def whoami(inp: dict) -> dict:
    """Returns the id of the process that ran it: for the processes pool's recycling."""
    import os

    return {"pid": os.getpid()}


@task(name="spend", retries=0)
def spend(inp: dict) -> dict:
    """Asks a person before going on: the run waits in action_required until answered."""
    answer = current_run().ask(
        f"approve spending {inp.get('amount', 0)}?",
        schema={"type": "object", "properties": {"approved": {"type": "boolean"}}, "required": ["approved"]},
    )
    if not answer["approved"]:
        return {"approved": False}
    note = current_run().ask("a note for the ledger?", schema={"type": "string", "maxLength": 200})
    return {"approved": True, "note": note}


@task(name="render", retries=0)
def render(inp: dict) -> dict:
    """Saves output files: `files` {name: text} from bytes (as `content_type`, or
    `types[name]`, else guessed from the name), then `again` {name: text} the same
    way (replacing those of the same name), `many` one-byte files, and one from a path."""
    import tempfile
    from pathlib import Path

    from taskq import Output

    urls = {}
    types = inp.get("types") or {}
    for batch in ("files", "again"):
        for name, text in (inp.get(batch) or {}).items():
            content_type = types.get(name, inp.get("content_type"))
            urls[name] = Output.from_bytes(name, str(text).encode(), content_type=content_type).save().public_url()
    for i in range(int(inp.get("many", 0))):
        Output.from_bytes(f"many-{i:05d}.txt", b"x").save()
    if inp.get("path_text") is not None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "result.txt"
            path.write_text(inp["path_text"])
            out = Output(path=path)
            out.save()
            urls["result.txt"] = out.public_url(expires=int(inp.get("expires", 3600)))
    if inp.get("size_bytes"):
        urls["big.bin"] = Output.from_bytes("big.bin", b"x" * int(inp["size_bytes"])).save().public_url()
    if inp.get("then_sleep_s"):
        time.sleep(float(inp["then_sleep_s"]))
    return {"urls": urls}


@task(name="ask_badly", retries=3)
def ask_badly(inp: dict) -> dict:
    """Asks with a schema taskq refuses (not JSON Schema, or `inp["schema"]`): the run
    fails at once saying so, never retried."""
    return current_run().ask("?", schema=inp.get("schema", {"type": "no-such-type"}))


@task(name="aspend", retries=0)
async def aspend(inp: dict) -> dict:
    """spend on the event loop: ask() and Output from an async processor."""
    from taskq import Output

    answer = current_run().ask("approve?", schema={"type": "boolean"})
    Output.from_bytes("receipt.txt", f"approved={answer}".encode()).save()
    await asyncio.sleep(0)
    return {"approved": answer}


# -- Flow control (docs/flow-control.md): limits that hold across every worker -------

# One budget, shared by name by every processor that lists it: at most two calls to
# "the model" at once, whichever processor makes them, on however many workers.
MODEL = Limit("model", concurrency=2)
# A budget in tokens: each run weighs what its input says it will spend.
TOKENS = Limit("tokens", rate_limit="100/s")


@task(name="summarize", limits=[MODEL])
def summarize(inp: dict) -> dict:
    """Stands for a call to a model (sleeps `seconds`): shares MODEL with translate."""
    time.sleep(float(inp.get("seconds", 0.2)))
    return {"summary": str(inp.get("text", ""))[:40]}


@task(name="translate", limits=[MODEL])
def translate(inp: dict) -> dict:
    """Likewise: together with summarize, at most two at once."""
    time.sleep(float(inp.get("seconds", 0.2)))
    return {"text": str(inp.get("text", ""))}


@task(name="complete", limits=[TOKENS.cost("input.max_tokens")])
def complete(inp: dict) -> dict:
    """Spends `max_tokens` of the 100 tokens a second: a run of 50 weighs 50."""
    return {"tokens": inp["max_tokens"]}


@task(name="crawl", concurrency=1, key="input.domain")
def crawl(inp: dict) -> dict:
    """One page at a time per domain (sleeps `seconds`); domains take turns, so a
    domain with a long backlog holds up no other."""
    time.sleep(float(inp.get("seconds", 0.2)))
    return {"domain": inp["domain"]}


@task(name="paced", rate_limit="5/s")
def paced(inp: dict) -> dict:
    """At most five starts a second, across every worker."""
    return {}


@task(name="polite", retries=0, limits=[MODEL])
def polite(inp: dict) -> dict:
    """Told "429, retry after `retry_after` s" on its first attempt: waits, then goes
    on. No retry is spent (it has none), and MODEL pauses for every worker meanwhile."""
    if current_run().attempt == 1:
        raise RateLimited(retry_after=float(inp.get("retry_after", 1)))
    return {"attempt": current_run().attempt}


@task(name="ponder", retries=0, limits=[MODEL])
def ponder(inp: dict) -> dict:
    """Holds a MODEL slot for `seconds` and is never retried: for a worker lost while
    holding one (its slot comes back when its lease runs out)."""
    time.sleep(float(inp.get("seconds", 1)))
    return {}


# -- When runs start (docs/scheduling.md) ------------------------------------------


@task(name="notify", priority="high")
def notify(inp: dict) -> dict:
    """Sends a notification: its runs go before normal ones in their lane, unless a
    run says otherwise (`"priority": "low"`)."""
    return {"sent": str(inp.get("text", ""))}


@task(name="nightly_report", schedule="0 3 * * *", schedule_input={"period": "day"})
def nightly_report(inp: dict) -> dict:
    """Runs by itself every night at 03:00 UTC (one run per night however many
    workers serve it), in the tenant of the first API key."""
    return {"period": inp["period"]}
