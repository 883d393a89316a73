"""An embedded MQTT broker (amqtt) on loopback, so ``monitor run`` works with nothing installed.

It is the default only when the site file names no broker and ``MONITOR_MQTT_URL`` is unset: a
demo or a single-room trial on one machine. It speaks MQTT 3.1.1, listens on 127.0.0.1 only and
accepts anonymous clients, which is why it never binds to another interface; a deployment with
dashboards on other machines configures a real broker (see ``config/mosquitto/``).
"""

from __future__ import annotations

import logging
import socket
from types import TracebackType
from typing import Self

from amqtt.broker import Broker

__all__ = ["EmbeddedBroker"]

LOOPBACK = "127.0.0.1"
_log = logging.getLogger(__name__)


class EmbeddedBroker:
    """``async with EmbeddedBroker() as broker``: then connect to ``broker.url``."""

    def __init__(self, port: int = 0) -> None:
        self.host = LOOPBACK
        self.port = port or _free_port()
        self._broker: Broker | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    async def __aenter__(self) -> Self:
        for name in ("amqtt", "transitions"):  # chatty at INFO about every client
            logging.getLogger(name).setLevel(logging.WARNING)
        broker = Broker(
            {
                "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
                "plugins": {
                    "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
                },
            }
        )
        await broker.start()
        self._broker = broker
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        broker, self._broker = self._broker, None
        if broker is not None:
            try:
                await broker.shutdown()
            except Exception:  # shutting down anyway: say so, do not mask the real exit
                _log.warning("the embedded MQTT broker did not shut down cleanly", exc_info=True)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
        return port
