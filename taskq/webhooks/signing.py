"""How a delivery is signed, per Standard Webhooks: `whsec_` secrets, the
`webhook-id` / `webhook-timestamp` / `webhook-signature` headers, so the official
`standardwebhooks` verifier accepts what taskq sends."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

from .. import headers as headers_rules
from ..headers import RESERVED_HEADERS

SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """A fresh `whsec_` secret: 24 random bytes, base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a secret, read exactly as the standardwebhooks libraries read
    it: an optional `whsec_` prefix, then base64. Raises ValueError for a secret they
    would refuse, so whatever string the client gave, `Webhook(that_string)` verifies."""
    body = secret[len(SECRET_PREFIX) :] if secret.startswith(SECRET_PREFIX) else secret
    try:
        key = base64.b64decode(body + "==")
    except (binascii.Error, ValueError) as exc:
        raise ValueError("webhook secret must be base64, optionally after a 'whsec_' prefix") from exc
    if not key:
        raise ValueError("webhook secret must not be empty")
    return key


def sign(key: bytes, msg_id: str, timestamp_s: int, body: bytes) -> str:
    digest = hmac.new(key, f"{msg_id}.{timestamp_s}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def request_headers(key: bytes, msg_id: str, timestamp_s: int, body: bytes, extra: dict[str, str]) -> dict[str, str]:
    """The delivery's headers: the user's own first, then the signature, which they
    cannot override."""
    headers = {
        name.strip(): value
        for name, value in extra.items()
        if headers_rules.is_valid(name.strip(), value) and name.strip().lower() not in RESERVED_HEADERS
    }
    headers.update(
        {
            "content-type": "application/json",
            "user-agent": "taskq-webhooks/1",
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp_s),
            "webhook-signature": sign(key, msg_id, timestamp_s, body),
        }
    )
    return headers
