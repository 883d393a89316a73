"""What the InfluxDB writer needs to know of its server, and where the environment may say it.

The site configuration resolves the file and the environment once and builds these; the writer
never reads the configuration, so the storage room depends on nothing above the shared vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = [
    "INFLUX_API_ENV",
    "INFLUX_BUCKET_ENV",
    "INFLUX_ORG_ENV",
    "INFLUX_TOKEN_ENV",
    "INFLUX_URL_ENV",
    "InfluxSettings",
]

INFLUX_URL_ENV = "MONITOR_INFLUX_URL"
INFLUX_API_ENV = "MONITOR_INFLUX_API"
INFLUX_BUCKET_ENV = "MONITOR_INFLUX_BUCKET"
INFLUX_ORG_ENV = "MONITOR_INFLUX_ORG"
INFLUX_TOKEN_ENV = "MONITOR_INFLUX_TOKEN"  # noqa: S105 - the variable's name, not a secret


@dataclass(frozen=True, slots=True)
class InfluxSettings:
    """One InfluxDB server: the API generation, where points go, and a private CA if any."""

    url: str
    api: Literal["v1", "v2"] = "v2"
    bucket: str = "vitals"
    org: str | None = None
    ca_file: Path | None = None
