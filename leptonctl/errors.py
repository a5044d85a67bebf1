"""The one error tree of leptonctl.

Every failure an operator can see is a ``LeptonError``.  Each class carries the
exit code the CLI returns for it and, where we know one, a hint that says what
to do next.  ``leptonctl.cli.app`` is the only place that turns these into
messages and exit codes.

Per-host failures (``HostError`` and children) are also *values*: fan-out
returns them in its per-host result mapping instead of raising, so one dead
host greys one row and does not abort the command.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit codes of the ``leptonctl`` command, documented in the README."""

    OK = 0
    FAILED = 1  # the command itself failed (state store, internal error, ...)
    USAGE = 2  # bad options, bad inventory, bad configuration
    HOSTS_UNREACHABLE = 3  # some selected hosts could not be reached or probed
    COMMAND_FAILED = 4  # every host answered, but a remote command exited non-zero
    SKIPPED = 75  # maintain: another maintenance run holds the lock (sysexits EX_TEMPFAIL)
    INTERRUPTED = 130


class LeptonError(Exception):
    """Base of every error leptonctl reports to an operator."""

    exit_code: ExitCode = ExitCode.FAILED

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(LeptonError):
    """Options that make no sense together, a bad value, an unknown name."""

    exit_code = ExitCode.USAGE


class InventoryError(UsageError):
    """A malformed inventory: names the file, the line or key, and what is wrong."""

    def __init__(
        self,
        message: str,
        *,
        source: str,
        line: int | None = None,
        key: str | None = None,
        hint: str | None = None,
    ) -> None:
        where = source if line is None else f"{source}:{line}"
        if key is not None:
            where = f"{where} ({key})"
        super().__init__(f"{where}: {message}", hint=hint)
        self.source = source
        self.line = line
        self.key = key
        self.detail = message


class LimitError(UsageError):
    """A ``--limit`` selector that names no host or group of the inventory."""


class PlaybookError(UsageError):
    """A malformed playbook: names the file (and line), the step (counted from 1) and the field."""

    def __init__(
        self,
        message: str,
        *,
        source: str,
        step: int | None = None,
        field: str | None = None,
        line: int | None = None,
        hint: str | None = None,
    ) -> None:
        where = source if line is None else f"{source}:{line}"
        if step is not None:
            where = f"{where}: step {step}"
        if field is not None:
            where = f"{where} ({field})"
        super().__init__(f"{where}: {message}", hint=hint)
        self.source = source
        self.step = step
        self.field = field
        self.line = line
        self.detail = message


class StateError(LeptonError):
    """The operator's state store cannot be opened, read or written."""


class NetGraphError(LeptonError):
    """The network graph is inconsistent (a bad link), or has no route between two hosts."""


# --------------------------------------------------------------------------
# Per-host outcomes.  Each is distinct and has its own hint.


class HostError(LeptonError):
    """Something went wrong on, or on the way to, one host."""

    exit_code = ExitCode.HOSTS_UNREACHABLE
    kind = "error"

    def __init__(self, host: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.host = host

    def to_json(self) -> dict[str, object]:
        doc: dict[str, object] = {"kind": self.kind, "message": self.message}
        if self.hint:
            doc["hint"] = self.hint
        return doc


class Unreachable(HostError):
    kind = "unreachable"


class AuthFailed(HostError):
    kind = "auth_failed"


class HostKeyUnknown(HostError):
    kind = "host_key_unknown"


class HostKeyMismatch(HostError):
    kind = "host_key_mismatch"


class TimedOut(HostError):
    kind = "timeout"


class AgentError(HostError):
    """The agent could not be pushed, answered with something we cannot read, or answered
    an operation with an error: then ``operation`` is the operation ("job-start") and
    ``reason`` the agent's own words."""

    kind = "agent_error"

    def __init__(
        self,
        host: str,
        message: str,
        *,
        hint: str | None = None,
        operation: str | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(host, message, hint=hint)
        self.operation = operation
        self.reason = reason

    @classmethod
    def refused(cls, host: str, operation: str, reason: str) -> AgentError:
        """The agent answered ``operation`` with an error."""
        return cls(host, f"{operation} failed: {reason}", operation=operation, reason=reason)

    def to_json(self) -> dict[str, object]:
        doc = super().to_json()
        if self.operation is not None:
            doc["operation"] = self.operation
        return doc


class CommandFailed(HostError):
    """A remote command exited non-zero.  Carries what an operator needs to see."""

    kind = "command_failed"
    exit_code = ExitCode.COMMAND_FAILED

    def __init__(
        self,
        host: str,
        command: str,
        exit_status: int | None,
        stdout: str = "",
        stderr: str = "",
        *,
        hint: str | None = None,
    ) -> None:
        tail = _tail(stderr or stdout)
        status = "killed by a signal" if exit_status is None else f"exit status {exit_status}"
        message = f"`{command}` failed with {status}"
        if tail:
            message = f"{message}: {tail}"
        super().__init__(host, message, hint=hint)
        self.command = command
        self.exit_status = exit_status
        self.stdout = stdout
        self.stderr = stderr

    def to_json(self) -> dict[str, object]:
        doc = super().to_json()
        doc.update(command=self.command, exit_status=self.exit_status)
        return doc


def _tail(text: str, lines: int = 5, width: int = 400) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip()][-lines:]
    joined = " | ".join(kept)
    return joined if len(joined) <= width else "..." + joined[-width:]
