"""PROTOCOL.md section 1: register, heartbeat, replacement, takeover."""

import time

import pytest

from tpsharness.protocol import RegisterReply, private_data_request, register_request


def test_register_reply_has_the_register_fields(tps):
    device = tps.device(register=False)
    reply = device.register()
    assert isinstance(reply, RegisterReply) and reply.status == 200
    assert reply.error_num == "200", f"ErrorNum {reply.error_num!r}, ErrorString {reply.error_string!r}"
    assert reply.keepalive_interval.isdigit() and int(reply.keepalive_interval) > 0, \
        f"KeepAliveIntervel {reply.keepalive_interval!r} is not a positive number of seconds"
    assert reply.utc_time.isdigit() and abs(int(reply.utc_time) - time.time()) < 3600, \
        f"UtcTime {reply.utc_time!r} is more than an hour from this machine's clock"


def test_register_reply_content_length_counts_the_body(tps):
    raw = tps.raw()
    raw.send(register_request("tpsharness-cl-" + str(time.monotonic_ns())))
    reply = raw.next_reply()
    head, _, body = reply.raw.partition(b"\r\n\r\n")
    lengths = [line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")[1:]
               if line.lower().startswith(b"content-length:")]
    assert lengths == [str(len(body)).encode()], f"Content-Length {lengths} for a {len(body)}-byte body"


def test_heartbeat_is_answered_and_keeps_the_connection(tps):
    device = tps.device()
    again = device.heartbeat()
    assert again.ok
    client = tps.client()
    client.send(device.serial, b"after the heartbeat")
    assert device.receive() == b"after the heartbeat"


def test_newer_registration_closes_the_older_connection(tps):
    old = tps.device()
    new = tps.device(serial=old.serial)
    assert old.closed_by_server(timeout=3), "the older connection stayed open"
    client = tps.client()
    client.send(new.serial, b"to the newer connection")
    assert new.receive() == b"to the newer connection"


def test_a_client_taking_a_devices_uuid_closes_the_device(tps):
    device = tps.device()
    raw = tps.raw()
    raw.send(private_data_request(device.serial, "tpsharness-nobody-" + str(time.monotonic_ns()), b"x"))
    raw.next_reply()
    assert device.closed_by_server(timeout=3), "the device's connection stayed open"


@pytest.mark.destructive
def test_a_second_serial_on_one_connection_does_not_kill_the_server(tps):
    """The field server closed such a connection, kept a dangling entry for the first
    serial, and crashed (SIGSEGV) on the next private data for it."""
    device = tps.device()
    device.send_raw(register_request(device.serial + "-other"))
    device.closed_by_server(timeout=1)
    raw = tps.raw()
    raw.send(private_data_request("tpsharness-app-x", device.serial, b"to the first serial"))
    try:
        raw.next_reply(timeout=2)
    except Exception:
        pass            # any answer, or none; what matters is the server's survival
    assert tps.alive(), "the TPS died after private data to a serial whose connection re-registered"


def test_a_register_without_a_serial_is_refused(tps):
    device = tps.device(register=False)
    raw_body = (b'{"TransProxy": {"Header": {"CSeq": "1", "MessageType": "MSG_TRANSPROXY_REGISTER_REQ", '
                b'"TerminalType": "Camera", "Version": "1.0"}, "Body": {"AuthCode": "0000"}}}')
    device.send_raw(register_request("unused", body=raw_body))
    reply = device.next_reply()
    assert reply.status == 400 or (isinstance(reply, RegisterReply) and not reply.ok), reply
