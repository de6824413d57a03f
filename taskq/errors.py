"""taskq's exceptions, one root, each mapped to one HTTP status by the gateway.

    TaskqError                      500
    ├── BadRequest                  400  body is not JSON, or not an object
    ├── Unauthorized                401  no key, or a key the gateway does not know
    ├── NotFound                    404  no such run or group (for this tenant)
    ├── ResultNotReady              408  the run did not end within `timeout`
    ├── Conflict                    409  an illegal state change (cancel a finished run)
    ├── Gone                        410  the run existed but has expired
    ├── PayloadTooLarge             413  body over TASKQ_MAX_BODY_BYTES
    ├── ValidationFailed            422  input does not fit; says which field and why
    ├── QueueFull                   429  the queue is at TASKQ_MAX_QUEUE_LENGTH, or the
    │                                    tenant at TASKQ_RATE_LIMIT_PER_S
    └── BrokerUnavailable           503  Redis cannot be reached

Worker-side signals that never reach HTTP:

    RunInterrupted (BaseException)  the run was cancelled or its worker is shutting down
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


class QueueFull(TaskqError):
    status_code = 429
    message = "queue is full"


class BrokerUnavailable(TaskqError):
    status_code = 503
    message = "Redis is unreachable"


class RunInterrupted(BaseException):
    """Raised inside a running processor to stop it: the run was cancelled, or the
    worker is shutting down and the grace period is over.

    A BaseException, like RQ's ShutDownImminentException, so that a processor's own
    `except Exception:` cannot swallow it.
    """

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason
