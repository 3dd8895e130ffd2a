"""Governance-centre notifiers: a signed webhook behind a durable Redis outbox, and an MQTT bridge.

The modules of the notifiers:

* ``central.notify.request``: the request body, idempotency keys and the HMAC signature
  (what the receiving centre checks), and one signed POST;
* ``central.notify.outbox``: the webhook's durable outbox in a Redis stream;
* ``central.notify.webhook``: ``WebhookNotifier``, the sender with its retry and backoff rules;
* ``central.notify.mqtt``: ``MqttBridgeNotifier``, the payload on an MQTT topic;
* ``central.notify.notifiers`` (this module): the ``Notifier`` protocol and
  ``build_notifiers``, which makes them from the central's config.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Protocol

import redis

from central.config import NotifierConfig
from central.notify.mqtt import MqttBridgeNotifier
from central.notify.webhook import WebhookNotifier
from wire.client import Broker


class Notifier(Protocol):
    """What the central needs of a notifier: take a notification, run and stop its sender."""

    notifier_id: str

    def enqueue(self, payload: Mapping[str, Any], idempotency_key: str) -> str: ...

    def start(self) -> None: ...

    def stop(self, timeout: float | None = None) -> bool: ...


# -- from config -------------------------------------------------------------------------------


def build_notifiers(configs: list[NotifierConfig], redis_client: redis.Redis, ns: str,
                    broker: Broker, *, environ: Mapping[str, str] | None = None,
                    consumer: str = "central-1") -> dict[str, WebhookNotifier | MqttBridgeNotifier]:
    """One notifier per config (not started); webhook secrets come from ``secret_env``.

    Raises ValueError for a missing url/topic/secret_env, an unset or empty secret variable
    (naming it), or a repeated id.
    """
    env = os.environ if environ is None else environ
    out: dict[str, WebhookNotifier | MqttBridgeNotifier] = {}
    for cfg in configs:
        if cfg.id in out:
            raise ValueError(f"notifier {cfg.id!r} is configured twice")
        if cfg.kind == "webhook":
            if not cfg.url:
                raise ValueError(f"notifier {cfg.id}: a webhook needs 'url'")
            if not cfg.secret_env:
                raise ValueError(f"notifier {cfg.id}: a webhook needs 'secret_env' (the name "
                                 "of the environment variable holding its HMAC secret)")
            secret = env.get(cfg.secret_env)
            if not secret:
                raise ValueError(f"notifier {cfg.id}: environment variable {cfg.secret_env} "
                                 "(its secret_env) is not set or empty")
            out[cfg.id] = WebhookNotifier(cfg.id, cfg.url, secret.encode("utf-8"), redis_client,
                                          ns=ns, consumer=consumer)
        elif cfg.kind == "mqtt":
            if not cfg.topic:
                raise ValueError(f"notifier {cfg.id}: an mqtt notifier needs 'topic'")
            out[cfg.id] = MqttBridgeNotifier(cfg.id, cfg.topic, broker,
                                              client_id=f"perimeter-notify-{cfg.id}-{consumer}")
        else:  # pragma: no cover - the config pattern admits only the two kinds
            raise ValueError(f"notifier {cfg.id}: unknown kind {cfg.kind!r}")
    return out
