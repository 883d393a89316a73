"""Who may give which command: the site's staff list held against the sender's broker account.

A command's ``staff`` field is only a claim. The broker authenticates the sender, and the
example ACL (``pattern write <root>/+/commands/+/+/%u``) lets each account publish commands only
on the topic level named after itself, so the account level of a command topic is the one fact
about the sender that the payload cannot forge. :class:`StaffDirectory` checks the claim
against it: the staff member must be listed, the account must be one of the member's own
accounts or a relay (a console that logs staff in itself), and the member's roles must allow the
command's kind.

On a broker without accounts (the embedded broker of ``monitor run``, or any broker that lets
anonymous clients in) nothing binds the account level: a sender writes the account name the
staff list gives it (the demo's is ``local``) and whoever reaches the broker can claim it. That
is why the embedded broker listens on loopback only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Self

from monitor.models import StaffMember, StaffRole
from monitor.mqtt.payloads import Command, CommandError, ErrorCode
from monitor.mqtt.topics import CommandKind, command_target

__all__ = ["ROLE_COMMANDS", "StaffDirectory"]

ROLE_COMMANDS: Mapping[StaffRole, frozenset[CommandKind]] = {
    StaffRole.ROOM_STAFF: frozenset(CommandKind),
    StaffRole.MEDICAL_MONITOR: frozenset(
        {CommandKind.ACKNOWLEDGE, CommandKind.PAUSE, CommandKind.RESUME}
    ),
}
"""The commands each role may give. Staff in the room see the participant: they record doses
and assessments. A remote medical monitor sees the alarms, so may acknowledge and pause them."""


@dataclass(frozen=True, slots=True)
class StaffDirectory:
    """The site's staff by code and its relay accounts; empty refuses every command."""

    staff: Mapping[str, StaffMember]
    relays: frozenset[str]

    @classmethod
    def of(cls, members: Iterable[StaffMember], relays: Iterable[str] = ()) -> Self:
        """A directory of these members and relay accounts."""
        return cls({member.id: member for member in members}, frozenset(relays))

    def check(self, topic: str, command: Command) -> CommandError | None:
        """Why the sender on ``topic`` may not give ``command``, or ``None`` if it may.

        ``topic`` is one :func:`~monitor.mqtt.payloads.parse_command` accepted, so its account
        level is a valid name. Reasons name the account (from the topic) and the member's roles
        (from the site file), never the payload's ``staff`` value, as every reason is made.
        """
        target = command_target(topic)
        account = "" if target is None else target.account

        def refuse(code: ErrorCode, message: str) -> CommandError:
            return CommandError.refusing(command, topic, code, message)

        member = self.staff.get(command.staff)
        if member is None:
            return refuse(ErrorCode.UNKNOWN_STAFF, "staff: not in the site's staff list")
        if account not in member.accounts and account not in self.relays:
            return refuse(
                ErrorCode.NOT_AUTHORIZED, f"account {account!r} may not act as this staff member"
            )
        if not any(command.kind in ROLE_COMMANDS[role] for role in member.roles):
            roles = ", ".join(member.roles)
            return refuse(
                ErrorCode.NOT_AUTHORIZED,
                f"this staff member's roles ({roles}) do not allow {command.kind} commands",
            )
        return None
