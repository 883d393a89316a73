"""The topic tree: one place that knows every topic name, so publishers, ACLs and docs agree.

Every topic lives under ``<topic_root>/<site>`` (``MqttConfig.topic_root``, default ``vitals``,
and ``SiteSection.code``), so several sites can share a broker and one ACL line per site (or a
``+`` for all of them) covers a role. Only identifiers and pseudonymous participant codes appear
in topics: broker logs and ACLs see topics, and they must never carry a name.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import NamedTuple

from pydantic import TypeAdapter, ValidationError

from monitor.models import Identifier, ParticipantCode

__all__ = [
    "COMMAND_KINDS",
    "INVALID_SESSION",
    "CommandKind",
    "CommandTarget",
    "Topics",
    "command_target",
    "topic_matches",
]

INVALID_SESSION = "_invalid"
"""Reply-topic level for commands whose topic names no valid session (cannot clash: a session
identifier never starts with ``_``)."""

_ROOT_PATTERN = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")
_IDENTIFIER: TypeAdapter[str] = TypeAdapter(Identifier)
_PARTICIPANT: TypeAdapter[str] = TypeAdapter(ParticipantCode)


class CommandKind(enum.StrEnum):
    """What a staff command asks for; the last level of its topic and its ``kind`` field."""

    ACKNOWLEDGE = "acknowledge"
    PAUSE = "pause"
    RESUME = "resume"
    DOSE = "dose"
    CONSCIOUSNESS = "consciousness"


COMMAND_KINDS: tuple[str, ...] = tuple(kind.value for kind in CommandKind)


def _identifier(value: str, what: str) -> str:
    try:
        return _IDENTIFIER.validate_python(value)
    except ValidationError:
        msg = f"{what} {value!r} is not an identifier (letters, digits, '.', '_', '-')"
        raise ValueError(msg) from None


def _participant(value: str) -> str:
    try:
        return _PARTICIPANT.validate_python(value)
    except ValidationError:
        msg = f"participant {value!r} is not a pseudonymous code"
        raise ValueError(msg) from None


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic names of one site; every builder validates its levels, so no topic can be forged
    from a name, an empty level or a wildcard."""

    root: str
    site: str

    def __post_init__(self) -> None:
        if not _ROOT_PATTERN.match(self.root):
            msg = f"topic root {self.root!r} must be levels of letters, digits, '.', '_', '-'"
            raise ValueError(msg)
        _identifier(self.site, "site")

    @property
    def base(self) -> str:
        """``<root>/<site>``: the prefix of every topic of this site."""
        return f"{self.root}/{self.site}"

    # --- published by gateways ------------------------------------------------------------

    def readings(self, session: str, participant: str) -> str:
        """Batches of one participant's readings from a gateway."""
        return f"{self.base}/readings/{_identifier(session, 'session')}/{_participant(participant)}"

    def device(self, session: str, participant: str, device: str) -> str:
        """The latest event of one wearable (retained: a late dashboard sees its link state)."""
        return (
            f"{self.base}/devices/{_identifier(session, 'session')}/"
            f"{_participant(participant)}/{_identifier(device, 'device')}"
        )

    # --- published by the detector --------------------------------------------------------

    def alarms(self, session: str, participant: str) -> str:
        """Every alarm transition of one participant."""
        return f"{self.base}/alarms/{_identifier(session, 'session')}/{_participant(participant)}"

    def active_alarms(self, session: str) -> str:
        """The retained snapshot of a session's current alarms."""
        return f"{self.base}/active-alarms/{_identifier(session, 'session')}"

    def escalations(self, session: str, participant: str) -> str:
        """Alarms the medical monitor must see (see ``EscalationTracker``)."""
        return (
            f"{self.base}/escalations/{_identifier(session, 'session')}/{_participant(participant)}"
        )

    def replies(self, session: str | None) -> str:
        """Replies to commands; ``None`` for a command whose topic named no valid session."""
        level = INVALID_SESSION if session is None else _identifier(session, "session")
        return f"{self.base}/replies/{level}"

    def status(self, service: str) -> str:
        """A service's retained online/offline status (its last will says offline)."""
        return f"{self.base}/status/{_identifier(service, 'service')}"

    # --- published by dashboards ----------------------------------------------------------

    def command(self, session: str, kind: CommandKind | str, account: str) -> str:
        """Where broker account ``account`` sends one kind of command for one session.

        The last level is the sender's own broker user name: the ACL's ``pattern`` line lets
        each account publish only there, so the detector learns who sent a command from the
        topic, which the payload cannot forge.
        """
        return (
            f"{self.base}/commands/{_identifier(session, 'session')}/{CommandKind(kind).value}/"
            f"{_identifier(account, 'account')}"
        )

    # --- subscription filters -------------------------------------------------------------

    @property
    def commands_filter(self) -> str:
        """Every command of every session and account of this site (the detector's)."""
        return f"{self.base}/commands/+/+/+"

    @property
    def readings_filter(self) -> str:
        """Every reading batch of this site."""
        return f"{self.base}/readings/+/+"

    @property
    def devices_filter(self) -> str:
        """Every device event of this site."""
        return f"{self.base}/devices/+/+/+"

    @property
    def alarms_filter(self) -> str:
        """Every alarm transition of this site."""
        return f"{self.base}/alarms/+/+"

    @property
    def active_alarms_filter(self) -> str:
        """Every session's snapshot of this site."""
        return f"{self.base}/active-alarms/+"

    @property
    def escalations_filter(self) -> str:
        """Every escalation of this site (medical monitors subscribe to it)."""
        return f"{self.base}/escalations/+/+"

    @property
    def replies_filter(self) -> str:
        """Every command reply of this site."""
        return f"{self.base}/replies/+"

    @property
    def status_filter(self) -> str:
        """Every service status of this site."""
        return f"{self.base}/status/+"


class CommandTarget(NamedTuple):
    """The levels of a command topic after ``commands``, as received (unvalidated)."""

    session: str
    kind: str
    account: str


def command_target(topic: str) -> CommandTarget | None:
    """The session, kind and account levels of a command topic; ``None`` if it is not one.

    Reads only the last four levels, so the parser does not need to know the root: the broker
    routes only this site's command topics to the detector anyway.
    """
    levels = topic.split("/")
    if len(levels) < 4 or levels[-4] != "commands":
        return None
    return CommandTarget(levels[-3], levels[-2], levels[-1])


def topic_matches(topic: str, topic_filter: str) -> bool:
    """MQTT filter matching (``+`` one level, ``#`` the rest), for routing incoming messages."""
    levels = topic.split("/")
    patterns = topic_filter.split("/")
    for index, pattern in enumerate(patterns):
        if pattern == "#":
            return not (index == 0 and topic.startswith("$"))
        if index >= len(levels):
            return False
        if pattern == "+":
            if index == 0 and levels[0].startswith("$"):
                return False
            continue
        if pattern != levels[index]:
            return False
    return len(levels) == len(patterns)
