"""Webhook accounting: a run's deliveries and every attempt, redelivery of a
dead-lettered one, and the tenant's default signing secret."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from .. import paths
from ..webhooks import delivery
from .http import broker, tenant

runs_bp = Blueprint("webhook_deliveries", __name__, url_prefix=paths.RUNS)
secret_bp = Blueprint("webhook_secret", __name__, url_prefix="/v1")


def blueprints() -> list[Blueprint]:
    return [runs_bp, secret_bp]


@runs_bp.get("/<run_id>/webhook-deliveries")
def list_deliveries(run_id: str) -> dict[str, Any]:
    found = delivery.for_run(broker(), tenant(), run_id)
    return {"deliveries": [d.model_dump(mode="json") for d in found]}


@runs_bp.post("/<run_id>/webhook-deliveries/<delivery_id>/redeliver")
def redeliver(run_id: str, delivery_id: str) -> tuple[dict[str, Any], int]:
    return delivery.redeliver(broker(), tenant(), run_id, delivery_id).model_dump(mode="json"), 202


@secret_bp.get("/webhook-secret")
def webhook_secret() -> dict[str, Any]:
    """The secret that signs this tenant's deliveries when a webhook brings none."""
    return {"secret": delivery.tenant_secret(broker(), tenant())}
