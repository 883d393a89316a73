"""Persistence: the durable spool and the InfluxDB writer behind it (see docs/storage.md).

The service persists a record in two steps: ``to_point`` turns it into a line-protocol point,
``Spool.accept`` commits it to disk (from then on it is "accepted" and survives a crash), and an
``InfluxWriter`` drains the spool into InfluxDB. Without InfluxDB, a ``Spool(forward=False)`` is the
local store and ``export_points`` reads it back.
"""

from monitor.storage.holding import DEFAULT_HELD_LIMIT, HoldingSpool, StoreHealth
from monitor.storage.influx import (
    ALARM_MEASUREMENT,
    DEVICE_MEASUREMENT,
    VITALS_MEASUREMENT,
    Backoff,
    InfluxWriteError,
    InfluxWriter,
    WriterStatus,
    alarm_point,
    device_point,
    make_point,
    reading_point,
    to_point,
)
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
    "ALARM_MEASUREMENT",
    "DEFAULT_HELD_LIMIT",
    "DEFAULT_HIGH_WATER",
    "DEVICE_MEASUREMENT",
    "VITALS_MEASUREMENT",
    "AcceptResult",
    "Backoff",
    "Batch",
    "HighWater",
    "HighWaterMark",
    "HoldingSpool",
    "InfluxSettings",
    "InfluxWriteError",
    "InfluxWriter",
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
    "WriterStatus",
    "alarm_point",
    "device_point",
    "export_points",
    "make_point",
    "reading_point",
    "to_point",
]
