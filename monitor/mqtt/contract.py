"""Who may publish and read what: the contract ``docs/mqtt.md`` and the example ACL are held to.

The tests check that ``config/mosquitto/acl`` grants each role exactly what this table says, so
the document, the broker's rules and the code cannot tell three different stories.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from pydantic import BaseModel

from monitor.mqtt.payloads import (
    AcknowledgeCommand,
    ActiveAlarms,
    AlarmMessage,
    CommandReply,
    ConsciousnessCommand,
    DeviceStatus,
    DoseCommand,
    EscalationMessage,
    PauseCommand,
    ResumeCommand,
    ServiceStatus,
    VitalsBatch,
)

__all__ = ["TOPICS", "Role", "TopicSpec"]


class Role(enum.StrEnum):
    """A kind of broker user; the example password file has one user per role."""

    GATEWAY = "gateway"
    DETECTOR = "detector"
    DASHBOARD = "dashboard"
    MEDICAL_MONITOR = "medical-monitor"


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One topic of the contract: ``pattern`` under ``<topic_root>/<site>/``."""

    name: str
    pattern: str
    payloads: tuple[type[BaseModel], ...]
    qos: int
    retained: bool
    publishers: tuple[Role, ...]
    readers: tuple[Role, ...]
    summary: str
    own_level: bool = False
    """Publishers write only on the last level named after their own broker account: every
    account gets that through one ``pattern`` line of the ACL, not a per-role ``topic`` line."""

    @property
    def level(self) -> str:
        """The first level after the site: what the ACL grants on (``<level>/#``)."""
        return self.pattern.split("/", 1)[0]


TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(
        name="Readings",
        pattern="readings/<session>/<participant>",
        payloads=(VitalsBatch,),
        qos=1,
        retained=False,
        publishers=(Role.GATEWAY, Role.DETECTOR),
        readers=(Role.DETECTOR, Role.DASHBOARD),
        summary="Batches of one participant's readings from a gateway, numbered per topic so the "
        "detector counts lost batches (`SequenceTracker`). The detector publishes here too when "
        "it runs its own BLE connector.",
    ),
    TopicSpec(
        name="Device status",
        pattern="devices/<session>/<participant>/<device>",
        payloads=(DeviceStatus,),
        qos=1,
        retained=True,
        publishers=(Role.GATEWAY, Role.DETECTOR),
        readers=(Role.DETECTOR, Role.DASHBOARD),
        summary="Every event of one wearable (link changes, no data, battery, malformed payloads). "
        "Retained: the latest event per device, whose `state` is the link's current state, so a "
        "dashboard that connects late sees which devices are connected.",
    ),
    TopicSpec(
        name="Alarm events",
        pattern="alarms/<session>/<participant>",
        payloads=(AlarmMessage,),
        qos=1,
        retained=False,
        publishers=(Role.DETECTOR,),
        readers=(Role.DASHBOARD, Role.MEDICAL_MONITOR),
        summary="Every transition of every alarm, the same record that is persisted. "
        "`event.sequence` numbers a session's events without gaps; `event.alarm_id` is stable for "
        "the alarm's life, so a duplicate delivery is harmless.",
    ),
    TopicSpec(
        name="Active alarms",
        pattern="active-alarms/<session>",
        payloads=(ActiveAlarms,),
        qos=1,
        retained=True,
        publishers=(Role.DETECTOR,),
        readers=(Role.DASHBOARD, Role.MEDICAL_MONITOR),
        summary="The retained snapshot of a session's current alarms, republished after every "
        "batch of alarm events and at start-up. An empty `alarms` list means nothing is active; "
        'there is never an empty message meaning "unknown". If the detector\'s status is '
        "`offline`, the snapshot may be stale.",
    ),
    TopicSpec(
        name="Escalations",
        pattern="escalations/<session>/<participant>",
        payloads=(EscalationMessage,),
        qos=1,
        retained=False,
        publishers=(Role.DETECTOR,),
        readers=(Role.MEDICAL_MONITOR,),
        summary="The alarm events a medical monitor must see (rule below).",
    ),
    TopicSpec(
        name="Commands",
        pattern="commands/<session>/<kind>/<account>",
        payloads=(
            AcknowledgeCommand,
            PauseCommand,
            ResumeCommand,
            DoseCommand,
            ConsciousnessCommand,
        ),
        qos=1,
        retained=False,
        publishers=(Role.DASHBOARD, Role.MEDICAL_MONITOR),
        readers=(Role.DETECTOR,),
        summary="Staff commands; `<kind>` is the command's `kind`, `<account>` the sender's own "
        "broker user name (the ACL lets each account publish only there), which must be one the "
        "command's `staff` may send from (above). Never retained (a retained command is refused: "
        "it would be carried out again on every reconnect).",
        own_level=True,
    ),
    TopicSpec(
        name="Command replies",
        pattern="replies/<session>",
        payloads=(CommandReply,),
        qos=1,
        retained=False,
        publishers=(Role.DETECTOR,),
        readers=(Role.DASHBOARD, Role.MEDICAL_MONITOR),
        summary="The outcome of every command, matched by `command_id`. A command whose topic "
        "names no valid session is answered on `replies/_invalid`.",
    ),
    TopicSpec(
        name="Service status",
        pattern="status/<service>",
        payloads=(ServiceStatus,),
        qos=1,
        retained=True,
        publishers=(Role.DETECTOR,),
        readers=(Role.DASHBOARD, Role.MEDICAL_MONITOR),
        summary="Retained `online` on every connect; `offline` with reason `shutdown` on a clean "
        "stop; the last will, `offline` with reason `connection_lost`, when the broker loses the "
        "connection. `<service>` is `detector` for the monitor service.",
    ),
)
