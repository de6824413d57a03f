"""The one small HTTP client the client commands share: where the gateway is
(`--url` / TASKQ_URL), the key (`--api-key` / TASKQ_API_KEY), errors as the API
states them, and server-sent event streams.

It never follows a redirect: the gateway never redirects an API call, and a
redirect followed with the key would hand the key to whatever host it names. A 3xx
is an error that says where it pointed."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import urljoin, urlsplit

import click
import requests

DEFAULT_URL = "http://127.0.0.1:8000"
F = TypeVar("F", bound=Callable[..., Any])


class ApiError(click.ClickException):
    """An error answer from the gateway (or none at all), shown as the API said it."""

    exit_code = 2

    def __init__(self, status: int, message: str, detail: Any = None) -> None:
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status
        self.detail = detail


class Api:
    def __init__(self, url: str, api_key: str | None, timeout_s: float = 30) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.session = requests.Session()
        if api_key:
            self.session.headers["x-api-key"] = api_key
        self.session.headers["User-Agent"] = "taskq-cli"

    def close(self) -> None:
        """Closes the pooled connections (commands also run in-process, in tests)."""
        self.session.close()

    def call(self, method: str, path: str, *, timeout_s: float | None = None, **kw: Any) -> Any:
        """The answer's JSON; ApiError for an error answer or no answer."""
        try:
            r = self.session.request(
                method, self.url + path, timeout=timeout_s or self.timeout_s, allow_redirects=False, **kw
            )
        except requests.RequestException as exc:
            raise ApiError(0, f"cannot reach {self.url}: {type(exc).__name__}") from None
        if r.status_code >= 300:
            raise _error(r)
        return r.json()

    def get(self, path: str, **kw: Any) -> Any:
        return self.call("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.call("POST", path, json=body if body is not None else {}, **kw)

    def events(self, path: str, params: dict[str, Any] | None = None) -> Iterator[tuple[str | None, dict[str, Any]]]:
        """(event id, data) of each event of an SSE stream, until the server ends it."""
        try:
            r = self.session.get(self.url + path, params=params, stream=True, timeout=(10, 120), allow_redirects=False)
        except requests.RequestException as exc:
            raise ApiError(0, f"cannot reach {self.url}: {type(exc).__name__}") from None
        with r:
            if r.status_code >= 300:
                raise _error(r)
            event_id: str | None = None
            data: list[str] = []
            for line in r.iter_lines(decode_unicode=True):
                if line == "":
                    if data:
                        yield event_id, json.loads("\n".join(data))
                    event_id, data = None, []
                elif line.startswith("data:"):
                    data.append(line[5:].lstrip())
                elif line.startswith("id:"):
                    event_id = line[3:].strip()


def _error(r: requests.Response) -> ApiError:
    if r.is_redirect or 300 <= r.status_code < 400:
        return _redirected(r)
    try:
        err = r.json()["error"]
        return ApiError(r.status_code, err["message"], err.get("detail"))
    except (ValueError, KeyError, TypeError):
        return ApiError(r.status_code, r.reason or "error")


def _redirected(r: requests.Response) -> ApiError:
    """A redirect, refused: it names where it pointed (scheme, host and port only,
    so no token in its path or query ends up in a terminal or a CI log)."""
    target = urlsplit(urljoin(r.url, r.headers.get("Location", "")))
    origin = f"{target.scheme}://{target.netloc.rpartition('@')[2]}" if target.netloc else "nowhere"
    return ApiError(
        r.status_code,
        f"the server redirected to {origin}; not followed (the API key is never sent where a redirect points). "
        "If that is the gateway, use it as --url / TASKQ_URL",
    )


def api_options(fn: F) -> F:
    """Adds --url, --api-key and --json; the command receives `api` and `as_json`."""

    @click.option("--url", envvar="TASKQ_URL", default=DEFAULT_URL, show_default=True, help="the gateway (TASKQ_URL)")
    @click.option("--api-key", envvar="TASKQ_API_KEY", default=None, help="the API key (TASKQ_API_KEY)")
    @click.option("--json", "as_json", is_flag=True, envvar="TASKQ_JSON", help="print JSON instead of tables")
    @functools.wraps(fn)
    def wrapper(url: str, api_key: str | None, **kw: Any) -> Any:
        api = Api(url, api_key)
        try:
            return fn(api=api, **kw)
        finally:
            api.close()

    return wrapper  # type: ignore[return-value]
