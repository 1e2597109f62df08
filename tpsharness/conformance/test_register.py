"""docs/protocol.md section 1: register, heartbeat, replacement, takeover."""

import os
import time

import pytest

from tpsharness.harness import Harness
from tpsharness.protocol import RegisterReply, private_data_request, register_request


def test_register_reply_has_the_register_fields(tps: Harness) -> None:
    device = tps.device(register=False)
    reply = device.register()
    assert isinstance(reply, RegisterReply) and reply.status == 200
    assert reply.error_num == "200", f"ErrorNum {reply.error_num!r}, ErrorString {reply.error_string!r}"
    assert reply.keepalive_interval.isdigit() and int(reply.keepalive_interval) > 0, \
        f"KeepAliveIntervel {reply.keepalive_interval!r} is not a positive number of seconds"
    assert reply.utc_time.isdigit() and abs(int(reply.utc_time) - time.time()) < 3600, \
        f"UtcTime {reply.utc_time!r} is more than an hour from this machine's clock"


def test_register_reply_content_length_counts_the_body(tps: Harness) -> None:
    raw = tps.raw()
    raw.send_raw(register_request("tpsharness-cl-" + str(time.monotonic_ns())))
    reply = raw.next_reply()
    head, _, body = reply.raw.partition(b"\r\n\r\n")
    lengths = [line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")[1:]
               if line.lower().startswith(b"content-length:")]
    assert lengths == [str(len(body)).encode()], f"Content-Length {lengths} for a {len(body)}-byte body"


def test_heartbeat_is_answered_and_keeps_the_connection(tps: Harness) -> None:
    device = tps.device()
    again = device.heartbeat()
    assert again.ok
    client = tps.client()
    client.send(device.uuid, b"after the heartbeat")
    assert device.receive().body == b"after the heartbeat"


def test_newer_registration_closes_the_older_connection(tps: Harness) -> None:
    old = tps.device()
    new = tps.device(uuid=old.uuid)
    assert old.closed_by_server(timeout=3), "the older connection stayed open"
    client = tps.client()
    client.send(new.uuid, b"to the newer connection")
    assert new.receive().body == b"to the newer connection"


def test_a_client_taking_a_devices_uuid_closes_the_device(tps: Harness) -> None:
    """docs/protocol.md section 1: only a PrivateData whose DestUuid is found claims
    its SrcUuid, so the takeover is sent to a registered destination."""
    device = tps.device()
    destination = tps.device()
    raw = tps.raw()
    raw.send_raw(private_data_request(device.uuid, destination.uuid, b"taking the uuid"))
    assert raw.next_reply().status == 200
    assert device.closed_by_server(timeout=3), "the device's connection stayed open"
    assert destination.receive().body == b"taking the uuid"


def test_a_second_serial_held_by_another_connection_is_taken_over(tps: Harness) -> None:
    """docs/protocol.md section 1: the holder is closed and the first serial stays."""
    first = tps.device()
    holder = tps.device()
    first.send_raw(register_request(holder.uuid))
    reply = first.next_reply()
    assert isinstance(reply, RegisterReply) and reply.ok, f"the takeover register got {reply}"
    assert holder.closed_by_server(timeout=3), "the serial's holder stayed open"
    client = tps.client()
    for serial in (first.uuid, holder.uuid):
        client.send(serial, f"to {serial}".encode())
        assert first.receive().body == f"to {serial}".encode(), f"private data for {serial} went astray"


@pytest.mark.destructive
def test_a_register_with_numeric_fields_registers_the_numbers_text(tps: Harness) -> None:
    """docs/protocol.md section 1: the field project's device simulator sends its
    SerialNumber and AuthCode as JSON numbers; the number's decimal text is the serial.
    Destructive: the public C++ field server aborts on it (a jsoncpp assertion)."""
    number = int.from_bytes(os.urandom(6), "big") + 10 ** 15     # unique on a shared server
    device = tps.device(uuid=str(number), register=False)
    body = ('{"TransProxy": {"Header": {"CSeq": 3, "MessageType": "MSG_TRANSPROXY_REGISTER_REQ", '
            '"TerminalType": "Camera", "Version": "1.0"}, "Body": {"AuthCode": %d, '
            '"SerialNumber": %d}}}' % (number % 10000, number)).encode()
    device.send_raw(register_request("unused", body=body))
    reply = device.next_reply()
    assert isinstance(reply, RegisterReply) and reply.ok, f"a numeric register got {reply}"
    tps.client().send(str(number), b"to a numeric serial")
    assert device.receive().body == b"to a numeric serial"


@pytest.mark.destructive
def test_a_second_serial_on_one_connection_does_not_kill_the_server(tps: Harness) -> None:
    """The field server closed such a connection, kept a dangling entry for the first
    serial, and crashed (SIGSEGV) on the next private data for it."""
    device = tps.device()
    device.send_raw(register_request(device.uuid + "-other"))
    device.closed_by_server(timeout=1)
    raw = tps.raw()
    raw.send_raw(private_data_request("tpsharness-app-x", device.uuid, b"to the first serial"))
    try:
        raw.next_reply(timeout=2)
    except Exception:
        pass            # any answer, or none; what matters is the server's survival
    assert tps.alive(), "the TPS died after private data to a serial whose connection re-registered"


def test_a_register_without_a_serial_is_refused(tps: Harness) -> None:
    device = tps.device(register=False)
    raw_body = (b'{"TransProxy": {"Header": {"CSeq": "1", "MessageType": "MSG_TRANSPROXY_REGISTER_REQ", '
                b'"TerminalType": "Camera", "Version": "1.0"}, "Body": {"AuthCode": "0000"}}}')
    device.send_raw(register_request("unused", body=raw_body))
    reply = device.next_reply()
    assert reply.status == 400 or (isinstance(reply, RegisterReply) and not reply.ok), reply
