"""An endpoint used before it is connected fails with the stage's TPSError, as its
sends always did, not with an AttributeError on a socket that is not there."""

import pytest

from tpsharness import kernel
from tpsharness.client import Client
from tpsharness.device import Device
from tpsharness.endpoint import Raw
from tpsharness.errors import ConnectError, ReceiptError, RegisterError, SendError

ADDRESS = ("127.0.0.1", 6604)       # never dialled: nothing here connects


def test_receive_before_connect_is_the_receipt_stage_failure() -> None:
    with pytest.raises(ReceiptError, match="not connected to 127.0.0.1:6604"):
        kernel.run(Device(ADDRESS, "cam-1").receive(timeout=1.0), timeout=5.0)


def test_next_reply_before_connect_is_the_named_stage_failure() -> None:
    client = Client(ADDRESS, "app-1")
    with pytest.raises(SendError, match="not connected"):
        kernel.run(client.next_reply(1.0), timeout=5.0)
    with pytest.raises(RegisterError, match="not connected"):
        kernel.run(client.next_reply(1.0, stage="register"), timeout=5.0)


def test_wait_closed_before_connect_says_there_is_no_connection() -> None:
    with pytest.raises(ConnectError, match="not connected"):
        kernel.run(Raw(ADDRESS).wait_closed(1.0), timeout=5.0)
