"""Every exception tpsharness raises on purpose, in one place.

Kernel errors describe misuse of tasks; protocol errors blame a peer's bytes;
TPSError and its subclasses name the stage of a check that failed.
"""


class KillSignal(BaseException):
    """Thrown into a task that is being killed.

    A BaseException, so that a victim's ``except Exception`` cannot swallow it.
    """


class TaskError(Exception):
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


class ProtocolError(Exception):
    """A peer sent bytes that are not a TPS message we can read.

    ``data`` holds the offending bytes (the message quotes them truncated).
    """

    def __init__(self, message, data=b""):
        super().__init__(message)
        self.data = bytes(data)


class MessageTooLarge(ProtocolError):
    """A header block or body exceeded the configured bound."""


class UnreadOverflow(ProtocolError):
    """A peer sent more messages than anyone reads: an endpoint's unread queue is full."""


class TPSError(Exception):
    """A check against a TPS failed at a named stage.

    ``stage`` is one of connect, register, send, receipt; ``elapsed`` is the time
    spent in that stage, in seconds; ``timed_out`` tells silence from refusal.
    """

    stage = "check"

    def __init__(self, message, elapsed=None, *, timed_out=False):
        super().__init__(message)
        self.elapsed = elapsed
        self.timed_out = timed_out      # the TPS was silent until the deadline


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


class ScenarioError(Exception):
    """A scenario file is malformed; the message names the file and the step."""
