"""taskq's exceptions, one root, each mapped to one HTTP status by the gateway.

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
    ├── QueueFull                   429  the queue is at TASKQ_MAX_QUEUE_LENGTH, or the
    │                                    tenant at TASKQ_RATE_LIMIT_PER_S
    ├── TooManyStreams              429  the tenant holds TASKQ_MAX_STREAMS_PER_TENANT
    │                                    open streams and long polls on this gateway
    └── BrokerUnavailable           503  Redis cannot be reached

Worker-side signals that never reach HTTP:

    RunInterrupted (BaseException)  the run was cancelled, timed out, lost its lease, or its
                                    worker is shutting down (raised in the run's thread)
    ActionRequired (BaseException)  the processor asked a person (`ask()`): the run waits
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


class TooManyStreams(TaskqError):
    status_code = 429
    message = "too many open streams and long polls for this API key"


class BrokerUnavailable(TaskqError):
    status_code = 503
    message = "Redis is unreachable"


class LimitDeclarationError(TaskqError, ValueError):
    """A processor's flow control is declared wrongly (a malformed rate_limit, an
    unknown key path, one Limit name with two budgets): the worker refuses to start."""


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
