"""taskq's exceptions: every one of them, under one root. Those a request can meet
map to one HTTP status each, in one handler (gateway/http.py).

    TaskqError                      500
    ├── BadRequest                  400  body is not JSON, or not an object
    ├── Unauthorized                401  no key, or a key the gateway does not know
    ├── Forbidden                   403  an output URL whose signature does not hold
    ├── NotFound                    404  no such run or group (for this tenant)
    ├── ResultNotReady              408  the run did not end within `timeout`
    ├── Conflict                    409  an illegal state change (cancel a finished run)
    ├── Gone                        410  the run (or an output URL) has expired
    ├── PayloadTooLarge             413  body over TASKQ_MAX_BODY_BYTES
    ├── ValidationFailed            422  input does not fit; says which field and why
    │   └── SchemaRefused           422  a client JSON Schema taskq will not use, or whose
    │                                    evaluation ran past its budget (catalog.py); the
    │                                    same schema gets the same answer, so never retried
    ├── QueueFull                   429  the queue is at TASKQ_MAX_QUEUE_LENGTH
    ├── RateLimitExceeded           429  the tenant is at TASKQ_RATE_LIMIT_PER_S
    ├── TooManyStreams              429  the tenant holds TASKQ_MAX_STREAMS_PER_TENANT
    │                                    open streams and long polls on this gateway
    ├── BrokerUnavailable           503  Redis cannot be reached
    │   └── RedisFull               503  Redis's memory is past TASKQ_MEMORY_HIGH_WATER of
    │                                    maxmemory (a new run is refused: capacity.py), or
    │                                    Redis itself refused a write (OOM); nothing written
    ├── StorageUnavailable          503  a payload offloaded to the output storage could
    │                                    not be read from it (payload.py)
    │
    │   Never an HTTP answer:
    ├── ConfigurationError               the deployment or the app is declared wrongly: the
    │   │                                process refuses to start, saying what to fix
    │   └── LimitDeclarationError        a processor's flow control (limits.py)
    ├── OutputInvalid                    the processor's return value does not fit its
    │   │                                declared output: the run fails, not retried
    │   └── OutputRejected               an output file was refused (name, type, a limit,
    │                                    or the attempt lost its run): nothing kept
    ├── ChildDied                        a processes-pool child exited under its run
    ├── UpstreamError                    the `http` processor's upstream answered 5xx or
    │                                    could not be reached: retried
    ├── DeliveryBlocked                  a webhook's host resolved to an address taskq may
    │                                    not call (checked on the address connected to)
    ├── ConnectTimedOut                  a webhook receiver did not accept the connection
    └── RateLimited                      raised by a processor (the API it calls said 429):
                                         the run waits again, no retry spent, and the
                                         limits it holds pause for `retry_after` seconds

Signals raised *into* a running processor, BaseExceptions so that its own
`except Exception:` cannot swallow them:

    RunInterrupted                  the run was cancelled, timed out, lost its lease, or its
                                    worker is shutting down (raised in the run's thread)
    ActionRequired                  the processor asked a person (`ask()`): the run waits
"""

from __future__ import annotations

from typing import Any


class TaskqError(Exception):
    status_code = 500
    message = "internal error"

    def __init__(self, message: str | None = None, detail: Any = None, *, retry_after_s: int | None = None):
        super().__init__(message or self.message)
        self.message = message or self.message
        self.detail = detail
        self.retry_after_s = retry_after_s


class BadRequest(TaskqError):
    status_code = 400
    message = "request body is not valid JSON"


class Unauthorized(TaskqError):
    status_code = 401
    message = "missing or unknown API key"


class Forbidden(TaskqError):
    status_code = 403
    message = "forbidden"


class NotFound(TaskqError):
    status_code = 404
    message = "not found"


class ResultNotReady(TaskqError):
    status_code = 408
    message = "run has not finished within the timeout"


class Conflict(TaskqError):
    status_code = 409
    message = "illegal state change"


class Gone(TaskqError):
    status_code = 410
    message = "expired"


class PayloadTooLarge(TaskqError):
    status_code = 413
    message = "request body too large"


class ValidationFailed(TaskqError):
    status_code = 422
    message = "invalid input"


class SchemaRefused(ValidationFailed):
    message = "schema refused"


class QueueFull(TaskqError):
    status_code = 429
    message = "queue is full"


class RateLimitExceeded(TaskqError):
    status_code = 429
    message = "rate limit reached"


class TooManyStreams(TaskqError):
    status_code = 429
    message = "too many open streams and long polls for this API key"


class BrokerUnavailable(TaskqError):
    status_code = 503
    message = "Redis is unreachable"


class RedisFull(BrokerUnavailable):
    """Redis has no room now: past the high-water mark for new runs, or at maxmemory
    for any write. Like an outage, it passes (finished runs expire), so the loops
    that wait out an outage wait this out too."""

    message = "Redis is out of memory"


class StorageUnavailable(TaskqError):
    status_code = 503
    message = "the output storage is unreachable"


class ConfigurationError(TaskqError, ValueError):
    """The deployment or the app is declared wrongly: the process refuses to start."""


class LimitDeclarationError(ConfigurationError):
    """A processor's flow control is declared wrongly (a malformed rate_limit, an
    unknown key path, one Limit name with two budgets)."""


class OutputInvalid(TaskqError):
    """The processor's return value does not fit its declared output."""


class OutputRejected(OutputInvalid):
    """An output file was refused (bad name or type, over a limit, or the attempt lost
    its run): the run fails saying so, and nothing of the file is kept."""


class ChildDied(TaskqError):
    """The child process running a run exited (killed to stop the run, or crashed)."""


class UpstreamError(TaskqError):
    """The `http` processor's upstream answered 5xx or could not be reached: worth a retry."""


class DeliveryBlocked(TaskqError):
    """A webhook URL's host resolved to an address taskq may not call. The message is
    what the tenant reads in the attempt and never names the address; `address` is for
    the operator's log."""

    def __init__(self, message: str, address: str | None = None) -> None:
        super().__init__(message)
        self.address = address


class ConnectTimedOut(TaskqError):
    """A webhook receiver did not accept the connection in time."""


class RateLimited(TaskqError):
    """Raised by a processor when what it calls says "too many requests": the run goes
    back to waiting without spending a retry, and every limit it holds pauses for
    `retry_after` seconds, for every worker."""

    def __init__(self, retry_after: float = 30.0, message: str = "") -> None:
        self.retry_after = max(0.0, float(retry_after))
        super().__init__(message or f"rate limited; retry after {self.retry_after:g} s")

    def __reduce__(self) -> tuple[object, ...]:  # pickles (a processes-pool child sends it)
        return (RateLimited, (self.retry_after, self.message))


class RunInterrupted(BaseException):
    """Raised inside a running processor to stop it: the run was cancelled, or the
    worker is shutting down and the grace period is over.

    A BaseException, like RQ's ShutDownImminentException, so that a processor's own
    `except Exception:` cannot swallow it.
    """

    def __init__(self, reason: str = "interrupted"):
        super().__init__(reason)
        self.reason = reason


class ActionRequired(BaseException):
    """Raised by `current_run().ask()` when its question has no answer yet: the
    attempt ends with the run in `action_required`, holding no worker.

    A BaseException, like RunInterrupted, so that a processor's own
    `except Exception:` cannot swallow the question.
    """

    def __init__(self, required_action: dict[str, Any]):
        # In args, so that it pickles (a process pool sends it back to its parent).
        super().__init__(required_action)
        self.required_action = required_action
