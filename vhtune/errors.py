"""One error hierarchy for everything vhtune expects to go wrong.

Every expected failure is a ``VhtuneError``: its message is one sentence saying what is wrong, its ``hint``
says what to do. The CLI edge turns it into that sentence and ``exit_code``, never a traceback. Anything
else escaping to the edge is a bug and keeps its traceback.
"""

from __future__ import annotations


class VhtuneError(Exception):
    """Base of every expected failure."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class UsageError(VhtuneError):
    """The command line or a configuration value is wrong."""

    exit_code = 2


class CapabilityError(VhtuneError):
    """The host lacks something needed: root, tracefs, bcc, headers, a tracepoint, a device."""

    exit_code = 3


class RecordingError(VhtuneError):
    """A recording cannot be written or read (malformed, foreign, disk full, unwritable)."""

    exit_code = 4


class ProtocolError(VhtuneError):
    """A vhost-user peer sent something the protocol forbids; names the message and the field."""

    exit_code = 5

    def __init__(self, message: str, request: str | None = None, field: str | None = None) -> None:
        where = ".".join(p for p in (request, field) if p)
        super().__init__(f"{where}: {message}" if where else message)
        self.request = request
        self.field = field


class GuestMemoryError(ProtocolError):
    """A guest address or length falls outside the mapped guest memory."""


class DiscoveryError(VhtuneError):
    """A process, thread or device could not be inspected."""


class ProbeError(VhtuneError):
    """An eBPF program failed to compile, load or attach."""

    exit_code = 3


class TuneError(VhtuneError):
    """A tuning step could not be planned, applied, verified or rolled back."""

    exit_code = 6


class LabError(VhtuneError):
    """A lab scenario, peer or fault could not be set up or ran badly."""

    exit_code = 7
