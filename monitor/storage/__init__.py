"""Persistence: the durable spool and the InfluxDB writer behind it (see docs/storage.md).

The service persists a record in two steps: ``to_point`` turns it into a line-protocol point,
``Spool.accept`` commits it to disk (from then on it is "accepted" and survives a crash), and an
``InfluxWriter`` drains the spool into InfluxDB. Without InfluxDB, a ``Spool(forward=False)`` is the
local store and ``export_points`` reads it back.

The writer and the points (``monitor.storage.influx``) are imported from their module, not from
here: they load the InfluxDB client library, which the site configuration, building
:class:`InfluxSettings`, and ``monitor export`` do not need.
"""

from monitor.storage.holding import DEFAULT_HELD_LIMIT, HoldingSpool, StoreHealth
from monitor.storage.settings import InfluxSettings
from monitor.storage.spool import (
    DEFAULT_HIGH_WATER,
    AcceptResult,
    Batch,
    HighWater,
    HighWaterMark,
    JournalEntry,
    PointKey,
    PointState,
    Spool,
    SpooledPoint,
    SpoolError,
    SpoolLockedError,
    SpoolPoint,
    StoredPoint,
    export_points,
)

__all__ = [
    "DEFAULT_HELD_LIMIT",
    "DEFAULT_HIGH_WATER",
    "AcceptResult",
    "Batch",
    "HighWater",
    "HighWaterMark",
    "HoldingSpool",
    "InfluxSettings",
    "JournalEntry",
    "PointKey",
    "PointState",
    "Spool",
    "SpoolError",
    "SpoolLockedError",
    "SpoolPoint",
    "SpooledPoint",
    "StoreHealth",
    "StoredPoint",
    "export_points",
]
