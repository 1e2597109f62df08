"""Every exception tpsharness raises on purpose, in one place, under one root.

``except TPSHarnessError`` catches them all (KillSignal excepted: it must reach
the task it kills). Kernel errors describe misuse of tasks; protocol errors blame a
peer's bytes; TPSError and its subclasses name the stage of a check that failed;
the rest are a scenario's, a command line's, a probe's and the fuzzer's.
"""

from __future__ import annotations


class KillSignal(BaseException):
    """Thrown into a task that is being killed.

    A BaseException, so that a victim's ``except Exception`` cannot swallow it.
    """


class TPSHarnessError(Exception):
    """The root of every exception tpsharness raises on purpose."""


class InvalidArgument(TPSHarnessError, ValueError):
    """An argument nothing can run with: a timeout, an address, a header field, a
    payload, a fake option. A ValueError too, as Python's own argument errors are."""


class TaskError(TPSHarnessError):
    """A task operation could not be done (bad tid, daemon, busy fd)."""


class TaskKilled(TaskError):
    """The task you waited for was killed before it finished."""


class NoSuchTask(TaskError):
    """No live task and no uncollected outcome has this tid."""


class NotWaitable(TaskError):
    """The task is a daemon: its outcome is not kept, so it cannot be waited for."""


class FdBusy(TaskError):
    """Another task already waits for the same readiness of this file descriptor."""


class Deadlock(TaskError):
    """Tasks remain, but none is ready and nothing (I/O, timer) can ever wake one."""


class ProtocolError(TPSHarnessError):
    """A peer sent bytes that are not a TPS message we can read.

    ``data`` holds the offending bytes (the message quotes them truncated).
    """

    def __init__(self, message: str, data: bytes | bytearray | memoryview = b"") -> None:
        super().__init__(message)
        self.data = bytes(data)


class MessageTooLarge(ProtocolError):
    """A header block or body exceeded the configured bound."""


class UnreadOverflow(ProtocolError):
    """A peer sent more messages than anyone reads: an endpoint's unread queue is full."""


class TPSError(TPSHarnessError):
    """A check against a TPS failed at a named stage.

    ``stage`` is one of connect, register, send, receipt; ``elapsed`` is the time
    spent in that stage, in seconds; ``timed_out`` tells silence from refusal.
    The message is given without the stage: ``str(error)`` puts ``"<stage>: "``
    before it, so that no raiser types the stage by hand.
    """

    stage = "check"

    def __init__(self, message: str, elapsed: float | None = None, *,
                 timed_out: bool = False) -> None:
        super().__init__(message)
        self.elapsed = elapsed
        self.timed_out = timed_out      # the TPS was silent until the deadline

    def __str__(self) -> str:
        return f"{self.stage}: {self.args[0] if self.args else ''}"


class ConnectError(TPSError):
    """The TPS could not be reached (refused, unresolved, timed out)."""

    stage = "connect"


class RegisterError(TPSError):
    """The TPS did not accept the device's registration."""

    stage = "register"


class SendError(TPSError):
    """The TPS did not acknowledge the client's private data (404, 400, silence)."""

    stage = "send"


class UnknownDestination(SendError):
    """The TPS answered 404: no device (or client) holds that DestUuid."""


class Rejected(SendError):
    """The TPS answered 400 (or another refusal) to the private data."""


class ReceiptError(TPSError):
    """The device did not receive exactly the payload the client sent."""

    stage = "receipt"


class ScenarioError(TPSHarnessError):
    """A scenario file is malformed; the message names the file and the step."""


class ScenarioFailure(TPSHarnessError, AssertionError):
    """A step did not see what it expected; the message says which, and shows the wire.

    An AssertionError too, so that pytest shows it as a failed assertion.
    ``expected`` and ``arrived`` are the step's two sentences on their own (what the
    step waited for, what came instead), for callers that show one line.
    """

    def __init__(self, message: str, *, expected: str = "", arrived: str = "") -> None:
        super().__init__(message)
        self.expected = expected
        self.arrived = arrived


class UsageError(TPSHarnessError):
    """The command line is wrong: print the usage and exit UNKNOWN."""


class LoadUsageError(UsageError, ValueError):
    """The parameters of a load run are impossible (rate 0, payload under the header...)."""


class BadProbe(TPSHarnessError, ValueError):
    """A /probe request the exporter cannot run (no target, a bad timeout)."""


class ForbiddenTarget(TPSHarnessError):
    """A /probe target that no ``--allow-target`` allows: the exporter connects nowhere
    and answers 403 with this one-line reason."""


class ConfigError(TPSHarnessError):
    """A configuration file (the exporter's ``--config`` or ``--web-config``) cannot be
    used; the message names the file and the key."""


class ServerDown(TPSHarnessError):
    """The server refused or did not accept a connection: it died or stopped listening."""


class UpstreamDown(TPSHarnessError):
    """The TPS a recording proxy relays to does not accept connections."""


class CaptureError(TPSHarnessError):
    """A capture file cannot be imported (not a capture, corrupt, truncated at its start)."""


class ServerStartError(TPSHarnessError):
    """The server command died at start or never listened; the message quotes its output."""


class Inexpressible(TPSHarnessError):
    """A scenario the fuzzer cannot play as one of its programs (--seeds); the message
    says why (more actors than its cast, a wait for a timeout...)."""


class Divergence(TPSHarnessError):
    """A program made the server differ from the model (the fuzzer makes one subclass
    per signature, so that hypothesis shrinks each signature on its own)."""


class Interrupted(TPSHarnessError):
    """SIGINT or SIGTERM asked a fuzz run to stop: an ordinary exception, so that a
    kernel task it unwinds ends as any failed task does (KeyboardInterrupt there was
    logged as an exception nobody collected, with its traceback)."""
