"""What the MQTT link needs to know of its broker, and where the environment may say it.

The site configuration resolves the file and the environment once and builds these; the link
never reads the configuration, so the MQTT room depends on nothing above the shared vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import SecretStr

from monitor.tls import TlsFiles

__all__ = ["MQTT_PASSWORD_ENV", "MQTT_URL_ENV", "BrokerSettings"]

MQTT_URL_ENV = "MONITOR_MQTT_URL"
MQTT_PASSWORD_ENV = "MONITOR_MQTT_PASSWORD"  # noqa: S105 - the variable's name, not a secret


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    """One broker: where, as whom, and how the connection is secured."""

    host: str
    port: int
    topic_root: str = "vitals"
    client_id: str | None = None
    username: str | None = None
    password: SecretStr | None = field(default=None, repr=False)
    tls: bool = False
    tls_files: TlsFiles | None = None
