"""A response action for systems without an API we know: a signed webhook asking someone's
automation (a SOAR playbook, a script at the sharing portal) to do it, e.g. "expire every share
link created by dr.x".

It sends through the notification channel it names, with the same signed delivery the alert
engine uses (engines/delivery.py: HMAC signature, retries, a stable Idempotency-Key), so a
receiver verifies it the same way and drops a repeat. The receiver's acceptance (HTTP 2xx) is
the result: the connector cannot see whether the remote action was carried out, and says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pacsguard.core.errors import ConnectorError
from pacsguard.core.settings import Channel, DeliveryPolicy, WebhookConnectorSettings
from pacsguard.engines.delivery import AlertMessage, deliver

CONNECTOR = "webhook"


@dataclass(frozen=True)
class WebhookRequest:
    """What to ask for: the action text with the entity filled in, and who it is about."""

    connector: str           # webhook:<name>
    action: str              # the connector's name, as the action id in the record
    target: str
    text: str
    delivery_id: str


def request_for(hook: WebhookConnectorSettings, alert_id: str, entity: str) -> WebhookRequest:
    text = hook.action.replace("{entity}", entity)
    # One stable id per (alert, connector): a repeat is recognisable by the receiver.
    delivery_id = f"{alert_id}.{hook.step}.{hook.name}".replace(":", "-")
    return WebhookRequest(f"{CONNECTOR}:{hook.name}", hook.name, entity, text, delivery_id)


class WebhookConnector:
    def __init__(self, hook: WebhookConnectorSettings, channel: Channel, policy: DeliveryPolicy | None = None,
                 *, dry_run: bool = False) -> None:
        self.hook = hook
        self.channel = channel
        self.policy = policy or DeliveryPolicy()
        self.dry_run = dry_run

    def ask(self, request: WebhookRequest, alert: dict[str, Any]) -> str:
        """Send the request (not in a dry run); the detail line. Raises ConnectorError when not accepted."""
        if self.dry_run:
            return f"would ask {self.channel.name} to: {request.text}"
        message = AlertMessage(subject=f"[pacsguard] response action: {request.text}", text=request.text,
                               alert={**alert, "response": {"step": self.hook.step, "connector": request.connector,
                                                            "action": request.text, "target": request.target}})
        result = deliver(self.channel, message, delivery_id=request.delivery_id, policy=self.policy)
        if not result.ok:
            raise ConnectorError(request.connector, "ask for", repr(request.text),
                                 result.error or result.reason, where=f" through channel {self.channel.name}")
        return f"asked {self.channel.name} to: {request.text} (accepted: {result.status})"
