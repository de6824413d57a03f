"""Processors that make spans of their own, for the trace tests (tests/test_tracing.py):
each fails its first attempt, so a run has a retried attempt, and makes a span
`inside` in every attempt, which must nest in that attempt's span."""

from __future__ import annotations

from opentelemetry import trace

from taskq import current_run, task

tracer = trace.get_tracer("tests.apps.traced")


@task(name="traced", retries=2)
def traced(inp: dict) -> dict:
    with tracer.start_as_current_span("inside"):
        if current_run().attempt == 1:
            raise RuntimeError("the first attempt fails on purpose")
    return inp


@task(name="traced_async", retries=2)
async def traced_async(inp: dict) -> dict:
    with tracer.start_as_current_span("inside"):
        if current_run().attempt == 1:
            raise RuntimeError("the first attempt fails on purpose")
    return inp
