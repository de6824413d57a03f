"""Signing in and out of the dashboard, and what guards every page.

Sign-in: a form takes an API key; the session (Flask's signed cookie: HttpOnly,
SameSite=Lax, Path=/dashboard, Secure when configured) then holds the tenant's name
and a session id, never the key. The id is open in Redis until sign-out or expiry
(sessions.py), and every request checks it, so sign-out revokes the cookie. Every
state-changing request (sign in, cancel, redeliver, sign out) is a POST; a POST from
another site or from an opaque origin (`Origin: null`) is refused, and every one but
sign-in carries the session's CSRF token. The cookie is signed with TASKQ_SECRET_KEY
or, when unset, a key derived from the API keys (so all gateways of one deployment
agree, and changing the keys signs everyone out).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta
from typing import Any, cast
from urllib.parse import urlsplit

from flask import Blueprint, Flask, abort, current_app, g, redirect, request, session, url_for
from flask.blueprints import BlueprintSetupState
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from flask.wrappers import Request
from werkzeug.wrappers import Response as WerkzeugResponse

from ...ids import tenant_of
from ...settings import Settings
from ..http import broker
from . import sessions

PREFIX = "/dashboard"
PUBLIC_ENDPOINTS = {"dashboard.login", "dashboard.static"}

bp = Blueprint("dashboard", __name__, url_prefix=PREFIX, template_folder="templates", static_folder="static")


def secret_key(settings: Settings) -> str:
    """TASKQ_SECRET_KEY, or one derived from the API keys (never a constant)."""
    if settings.secret_key:
        return settings.secret_key
    material = "\n".join(sorted(settings.api_keys)).encode()
    return hmac.new(b"taskq dashboard session", material, hashlib.sha256).hexdigest()


@bp.record_once
def _configure(state: BlueprintSetupState) -> None:
    app = cast(Flask, state.app)  # a Flask app: this blueprint is registered on no other
    settings: Settings = app.extensions["taskq"].settings
    app.secret_key = secret_key(settings)
    app.session_interface = DashboardSessions()
    app.config.update(
        SESSION_COOKIE_NAME="taskq_dashboard",
        SESSION_COOKIE_PATH=PREFIX,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.dashboard_secure_cookie,
        PERMANENT_SESSION_LIFETIME=timedelta(seconds=settings.dashboard_session_s),
    )


class DashboardSessions(SecureCookieSessionInterface):
    """The session cookie is the dashboard's alone (its path is /dashboard): every
    other request gets Flask's null session, without a signer built for it (a
    measurable part of an API call's cost)."""

    def open_session(self, app: Any, request: Request) -> SecureCookieSession | None:
        if not request.path.startswith(PREFIX):
            return None
        return super().open_session(app, request)


def sign_in(api_key: str) -> bool:
    candidate = tenant_of(api_key)
    known = current_app.extensions["taskq.tenants"].get(candidate)
    if known is None or not hmac.compare_digest(known, api_key):
        return False
    session.clear()
    session.permanent = True
    session["tenant"] = candidate
    session["sid"] = sessions.open_session(broker(), candidate)
    session["csrf"] = secrets.token_urlsafe(24)
    return True


def sign_out() -> None:
    """Closes the session in Redis, so that its cookie, replayed, is refused."""
    if isinstance(sid := session.get("sid"), str):
        sessions.close(broker(), sid)
    session.clear()


@bp.before_request
def _signed_in() -> WerkzeugResponse | None:
    """The session's tenant becomes g.tenant, as an API key would; pages without a
    session go to the sign-in form, streams answer 401."""
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    tenant, sid = session.get("tenant"), session.get("sid")
    if not _still_signed_in(tenant, sid):
        session.clear()
        if request.method == "GET" and request.accept_mimetypes.accept_html:
            return redirect(url_for("dashboard.login", next=request.full_path if request.args else request.path))
        abort(401)
    g.tenant = tenant
    if request.method == "POST":
        _check_csrf()
    return None


def _still_signed_in(tenant: object, sid: object) -> bool:
    """The tenant's key is still accepted and the session was not signed out."""
    if not isinstance(tenant, str) or tenant not in current_app.extensions["taskq.tenants"]:
        return False
    return isinstance(sid, str) and sessions.is_open(broker(), sid, tenant)


def check_origin() -> None:
    """A POST sent by a page of another site is refused (403), and so is one from an
    opaque origin (`Origin: null`: a sandboxed frame, a data: URL, a cross-site
    redirect), which can be any site. Browsers send Origin with every POST; without
    it, a Referer, when there is one, must be of this site. A POST with neither comes
    from no browser, so from no page that could forge it for a visitor."""
    origin = request.headers.get("Origin")
    if origin is None:
        origin = request.headers.get("Referer")
        if origin is None:
            return
    if urlsplit(origin).netloc != request.host:
        abort(403)


def _check_csrf() -> None:
    check_origin()
    token = request.form.get("csrf", "")
    if not hmac.compare_digest(token, session.get("csrf", "")):
        abort(403)


@bp.app_context_processor
def _template_globals() -> dict[str, Any]:
    return {"csrf_token": lambda: session.get("csrf", "")}
