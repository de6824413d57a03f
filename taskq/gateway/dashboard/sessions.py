"""Dashboard sessions that sign-out can end: each sign-in opens a session id in Redis
(`taskq:dashboard:session:{digest}`, holding the tenant, expiring with the session),
the signed cookie carries the id, every request checks it is still open, and
sign-out deletes it. A cookie captured before sign-out is refused after it, however
long its signature stays valid. (Flask's cookie session alone cannot be revoked: the
gateway keeps no state, so the state that says "signed out" lives in Redis.)"""

from __future__ import annotations

import hashlib
import secrets

from ... import keys
from ...broker import Broker, translated


def _key(session_id: str) -> str:
    # The digest, not the id: what Redis holds cannot be put in a cookie.
    return keys.dashboard_session(hashlib.sha256(session_id.encode()).hexdigest()[:32])


def open_session(broker: Broker, tenant: str) -> str:
    """A new session id for `tenant`, open for `dashboard_session_s`."""
    session_id = secrets.token_urlsafe(24)
    with translated():
        broker.redis.set(_key(session_id), tenant, ex=broker.settings.dashboard_session_s)
    return session_id


def is_open(broker: Broker, session_id: str, tenant: str) -> bool:
    """Whether the session is open (and for `tenant`); each use extends it, as each
    request renews the cookie."""
    with translated():
        return broker.redis.getex(_key(session_id), ex=broker.settings.dashboard_session_s) == tenant


def close(broker: Broker, session_id: str) -> None:
    with translated():
        broker.redis.delete(_key(session_id))
