"""The webhooks API (admins): endpoints, their deliveries, ping and redelivery."""

from typing import Any

import sqlalchemy as sa
from apiflask import APIBlueprint, abort
from flask import current_app

from sit import clock, errors
from sit.extensions import db, token_auth
from sit.models import MAX_ID, Webhook, WebhookDelivery, WebhookMessage, get_or_404
from sit.pagination import Order, paginate
from sit.schemas import (
    NewWebhookOut,
    PageHeaders,
    PageQuery,
    QueuedOut,
    WebhookCreatedHeaders,
    WebhookDeliveryDetailOut,
    WebhookDeliveryOut,
    WebhookIn,
    WebhookOut,
    WebhookPatch,
)
from sit.users import require_admin
from sit.webhooks import guard, messages, sender

bp = APIBlueprint("webhooks", __name__, tag="Webhooks", url_prefix="/api/webhooks")

WEBHOOK = "/<int:pk>/"
DELIVERY = "/<int:pk>/deliveries/<int:did>/"
ADMINS = "Only admins manage webhooks."
ADMINS_ONLY = {403: ADMINS}
INACTIVE = {**ADMINS_ONLY, 409: "The webhook is not active"}
BY_ID = Order("id", (Webhook.id,), descending=False)
NEWEST = Order("id.desc", (WebhookDelivery.id,), descending=True)
DELIVERIES = sa.select(
    *(WebhookDelivery.id, WebhookMessage.msg_id.label("message_id"), WebhookMessage.type),
    *(WebhookDelivery.attempt, WebhookDelivery.state, WebhookMessage.state.label("message_state")),
    *(WebhookDelivery.response_status, WebhookDelivery.duration, WebhookDelivery.error),
    WebhookDelivery.started_at,
).join(WebhookMessage, WebhookMessage.id == WebhookDelivery.message_id)
DETAIL = DELIVERIES.add_columns(
    WebhookDelivery.request_headers,
    WebhookMessage.body.label("request_body"),
    WebhookDelivery.response_body,
).where(
    WebhookDelivery.webhook_id == sa.bindparam("hook"), WebhookDelivery.id == sa.bindparam("pk")
)


def admins_webhook(pk: int) -> Webhook:
    """:raise 403: the caller is not an admin.
    :raise 404: no webhook has this id."""
    require_admin(ADMINS)
    return get_or_404(Webhook, pk)


def check_url(fields: dict[str, Any]) -> None:
    """:raise 400: the URL's host is, or resolves to, an address webhooks may not reach (a name
    that does not resolve now, or not within `WEBHOOK_TIMEOUT`, passes: each delivery checks
    again)."""
    if "url" not in fields:
        return
    try:
        config = current_app.config
        guard.check(fields["url"], config["WEBHOOK_ALLOWED_HOSTS"], config["WEBHOOK_TIMEOUT"])
    except guard.Refused as error:
        errors.invalid({"url": [str(error)]})
    except OSError:
        pass


def require_active(webhook: Webhook) -> None:
    """:raise 409: the webhook is not active."""
    if not webhook.active:
        abort(409, "The webhook is not active; activate it first (PATCH active: true).")


def ping(webhook: Webhook) -> dict[str, Any]:
    """:raise 409: the webhook is not active."""
    require_active(webhook)
    data = {"webhook": WebhookOut.model_validate(webhook).model_dump(mode="json")}
    return messages.store([webhook.id], messages.PING, messages.body(messages.PING, data))[0]


@bp.get("/")
@bp.auth_required(token_auth)
@bp.input(PageQuery, location="query")
@bp.output(list[WebhookOut], headers=PageHeaders)
@bp.doc(responses=ADMINS_ONLY)
def list_webhooks(query_data: PageQuery) -> Any:
    """List the webhooks, by id (admins)."""
    require_admin(ADMINS)
    rows, headers = paginate(sa.select(*Webhook.__table__.c), query_data, BY_ID)
    return rows, 200, headers


@bp.post("/")
@bp.auth_required(token_auth)
@bp.input(WebhookIn, location="json")
@bp.output(NewWebhookOut, status_code=201, headers=WebhookCreatedHeaders)
@bp.doc(responses=ADMINS_ONLY)
def create_webhook(json_data: WebhookIn) -> Any:
    """Create a webhook (admins); without a secret, one is made up and answered this once."""
    require_admin(ADMINS)
    fields = json_data.model_dump()
    check_url(fields)
    webhook = Webhook(**fields | {"secret": fields["secret"] or messages.new_secret()})
    db.session.add(webhook)
    db.session.commit()
    location = f"{current_app.config['PUBLIC_URL']}/api/webhooks/{webhook.id}/"
    return NewWebhookOut.model_validate(webhook), 201, {"Location": location}


@bp.get(WEBHOOK)
@bp.auth_required(token_auth)
@bp.output(WebhookOut)
@bp.doc(responses=ADMINS_ONLY)
def get_webhook(pk: int) -> Any:
    """Get one webhook (admins); its secret is never shown again."""
    return admins_webhook(pk)


@bp.patch(WEBHOOK)
@bp.auth_required(token_auth)
@bp.input(WebhookPatch, location="json")
@bp.output(WebhookOut)
@bp.doc(responses=ADMINS_ONLY)
def update_webhook(pk: int, json_data: WebhookPatch) -> Any:
    """Change a webhook (admins); deactivating it fails its pending messages, activating it
    again forgets why it was deactivated."""
    webhook = admins_webhook(pk)
    fields = json_data.model_dump(exclude_unset=True)
    check_url(fields)
    if webhook.active and fields.get("active") is False:
        sender.fail_pending(webhook.id, "the webhook was deactivated")
    webhook.change(fields)
    db.session.commit()
    return webhook


@bp.delete(WEBHOOK)
@bp.auth_required(token_auth)
@bp.output({}, status_code=204)
@bp.doc(responses=ADMINS_ONLY)
def delete_webhook(pk: int) -> Any:
    """Delete a webhook, its messages and its deliveries (admins)."""
    db.session.delete(admins_webhook(pk))
    db.session.commit()
    return ""


@bp.post(f"{WEBHOOK}ping")
@bp.auth_required(token_auth)
@bp.output(QueuedOut, status_code=202)
@bp.doc(responses=INACTIVE)
def ping_webhook(pk: int) -> Any:
    """Send the webhook a `ping` message (admins); see its delivery in its deliveries."""
    message = ping(admins_webhook(pk))
    db.session.commit()
    return message, 202


@bp.get(f"{WEBHOOK}deliveries/")
@bp.auth_required(token_auth)
@bp.input(PageQuery, location="query")
@bp.output(list[WebhookDeliveryOut], headers=PageHeaders)
@bp.doc(responses=ADMINS_ONLY)
def list_deliveries(pk: int, query_data: PageQuery) -> Any:
    """List a webhook's delivery attempts, newest first (admins)."""
    webhook = admins_webhook(pk)
    listed = DELIVERIES.where(WebhookDelivery.webhook_id == webhook.id)
    rows, headers = paginate(listed, query_data, NEWEST)
    return rows, 200, headers


@bp.get(DELIVERY)
@bp.auth_required(token_auth)
@bp.output(WebhookDeliveryDetailOut)
@bp.doc(responses=ADMINS_ONLY)
def get_delivery(pk: int, did: int) -> Any:
    """Get one delivery attempt: the request's headers and body, the response's first 4 KiB."""
    webhook = admins_webhook(pk)
    found = did <= MAX_ID and db.session.execute(DETAIL, {"hook": webhook.id, "pk": did})
    row = found.one_or_none() if found else None
    if row is None:
        abort(404, f"Webhook {pk} has no delivery {did}.")
    return row


@bp.post(f"{DELIVERY}redeliver")
@bp.auth_required(token_auth)
@bp.output(QueuedOut, status_code=202)
@bp.doc(responses=INACTIVE)
def redeliver(pk: int, did: int) -> Any:
    """Deliver a delivery's message again, now, with the same webhook-id (admins)."""
    webhook = admins_webhook(pk)
    delivery = db.session.get(WebhookDelivery, did) if did <= MAX_ID else None
    if delivery is None or delivery.webhook_id != webhook.id:
        abort(404, f"Webhook {pk} has no delivery {did}.")
    require_active(webhook)
    message = delivery.message
    message.state, message.due_at = "pending", clock.utcnow()
    db.session.commit()
    return message, 202
