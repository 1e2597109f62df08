"""Whatever a server does, the harness side fails clearly, on time, in bounded memory.

Each server here is a few lines on plain sockets and threads, on 127.0.0.1: it
floods, echoes, answers garbage or requests where replies belong. A check against
it returns a failed CheckResult at the right stage (it never raises), within its
timeout plus GRACE, and its memory stays bounded.
"""

import json
import os
import socket
import threading
import time

import pytest

from fake_tps import FakeTPS
from tpsharness import check, kernel
from tpsharness.deadline import GRACE
from tpsharness.endpoint import (MAX_UNREAD, TRANSCRIPT_BYTES, Endpoint, Transcript)
from tpsharness.errors import ReceiptError, UnreadOverflow
from tpsharness.harness import Harness
from tpsharness.protocol import NEED_DATA, Reader, register_reply, reply

FIELD_ACK = reply(200)
VALID_REPLY = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


class TinyServer:
    """A listener whose n-th connection (1 = the check's device, 2 = its client) is
    handed to ``behaviours[n]`` on a thread of its own; a behaviour ends when the
    peer goes away or the server stops."""

    def __init__(self, *behaviours):
        self.behaviours = behaviours
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.address = self.listener.getsockname()
        self.stopping = threading.Event()
        self.threads = []
        self.connections = []
        self.accepter = threading.Thread(target=self._accept, daemon=True)
        self.accepter.start()

    def _accept(self):
        number = 0
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            number += 1
            self.connections.append(conn)
            behaviour = self.behaviours[min(number, len(self.behaviours)) - 1]
            thread = threading.Thread(target=self._serve, args=(behaviour, conn), daemon=True)
            thread.start()
            self.threads.append(thread)

    def _serve(self, behaviour, conn):
        try:
            behaviour(conn, self.stopping)
        except OSError:
            pass            # the check closed its end: what a flood ends with

    def close(self):
        self.stopping.set()
        self.listener.close()
        for conn in self.connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
        for thread in self.threads:
            thread.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def read_message(conn):
    """The next whole request the harness sent, read with the tolerant Reader."""
    reader = Reader()
    while True:
        message = reader.next()
        if message is not NEED_DATA:
            return message
        data = conn.recv(65536)
        if not data:
            raise OSError("closed")
        reader.feed(data)


def flood(chunk):
    def behaviour(conn, stopping):
        data = chunk * (65536 // len(chunk) + 1)
        while not stopping.is_set():
            conn.sendall(data)
    return behaviour


def register_then(after):
    """A device connection: a valid register reply, then ``after``."""
    def behaviour(conn, stopping):
        read_message(conn)
        conn.sendall(register_reply(utc_time="2026-01-01 00:00:00"))
        after(conn, stopping)
    return behaviour


def ack_then(after):
    """A client connection: the ack of its private data, then ``after``."""
    def behaviour(conn, stopping):
        read_message(conn)
        conn.sendall(FIELD_ACK)
        after(conn, stopping)
    return behaviour


def idle(conn, stopping):
    stopping.wait(10)


def resident_bytes():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


FLOODS = {
    "NUL bytes to the device": ("register", flood(b"\0"), idle),
    "CRLFs to the device": ("register", flood(b"\r\n"), idle),
    "valid replies to the waiting device": ("receipt", register_then(flood(VALID_REPLY)), ack_then(idle)),
    "NUL bytes to the waiting device": ("receipt", register_then(flood(b"\0")), ack_then(idle)),
    "NUL bytes to the client": ("send", register_then(idle), flood(b"\0")),
}


@pytest.mark.timeout(20)
@pytest.mark.parametrize("name", FLOODS)
def test_a_flooding_server_fails_the_check_at_its_deadline_in_bounded_memory(name):
    stage, device_side, client_side = FLOODS[name]
    with TinyServer(device_side, client_side) as server:
        before = resident_bytes()
        started = time.monotonic()
        result = check(*server.address, timeout=1.0)
        elapsed = time.monotonic() - started
        grown = resident_bytes() - before
    assert not result.ok and result.stage == stage, result.message
    assert elapsed < 1.0 + GRACE, f"{elapsed:.2f} s: {result.message}"
    assert grown < 150 * 1024 * 1024, f"RSS grew {grown / 1e6:.0f} MB"
    assert result.message.startswith(f"{stage}: TPS 127.0.0.1:{server.address[1]} ")


@pytest.mark.timeout(20)
def test_a_harness_device_flooded_with_nul_bytes_stops_receiving_at_its_timeout():
    with TinyServer(register_then(flood(b"\0"))) as server:
        harness = Harness(server.address, timeout=1.0)
        try:
            device = harness.device()
            started = time.monotonic()
            with pytest.raises(ReceiptError, match=r"receipt: TPS .* sent [\d.]+ [kM]?B.* but no private data"):
                device.receive(timeout=1.0)
            assert time.monotonic() - started < 1.0 + GRACE
        finally:
            harness.close()


def echo(conn, stopping):
    while not stopping.is_set():
        data = conn.recv(65536)
        if not data:
            return
        conn.sendall(data)


def answer_register_with(data):
    def behaviour(conn, stopping):
        read_message(conn)
        conn.sendall(data)
        stopping.wait(10)
    return behaviour


def test_an_echo_server_fails_the_register_stage_naming_the_request_it_sent_back():
    with TinyServer(echo) as server:
        result = check(*server.address, timeout=2)
    assert not result.ok and result.stage == "register"
    assert "sent a request (POST /TransProxy HTTP/1.1) where the register reply belongs after" \
        in result.message, result.message


def test_a_private_data_sent_back_where_the_ack_belongs_fails_the_send_stage():
    with TinyServer(register_then(idle), echo) as server:
        result = check(*server.address, timeout=2)
    assert not result.ok and result.stage == "send"
    assert ("sent a request (POST /PrivateData HTTP/1.1) (our own request, sent back) where the "
            "acknowledgement belongs") in result.message, result.message


def test_garbage_where_a_reply_belongs_is_called_garbage_not_a_request():
    with TinyServer(answer_register_with(b"hello\r\n\r\n"), idle) as server:
        result = check(*server.address, timeout=1.0)
    assert result.stage == "register"
    assert "sent bytes that are not a reply (hello) where the register reply belongs" in result.message


def test_private_data_a_tps_relays_back_to_our_own_connection_after_the_ack_is_received(fake):
    """Not an echo: a connection that holds the destination gets its own request relayed
    to it (after the ack), and receive() must return it (the fuzzer's replay found this)."""
    from tpsharness.device import Device
    from tpsharness.protocol import register_request

    async def main():
        device = Device(fake.address, "tpsharness-self-src", timeout=2)
        await device.connect()
        try:
            await device.send_raw(register_request("tpsharness-self-dest"))
            await device.next_reply(stage="register")
            ack = await device.send("tpsharness-self-dest", b"to myself")
            relayed = await device.receive()
            return ack.status, relayed.src, relayed.body
        finally:
            device.close()

    assert kernel.run(main(), timeout=5) == (200, "tpsharness-self-src", b"to myself")


HOSTILE_REGISTER_ANSWERS = {
    "hello and a blank line": b"hello\r\n\r\n",
    "a register request": b"POST /TransProxy HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
    "a bad request": b"GET / HTTP/1.1\r\n\r\n",
    "a JSON array": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n[1,2]",
    "register reply fields that are numbers": (
        lambda body: b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))(
        json.dumps({"TransProxy": {"Header": {"MessageType": "MSG_TRANSPROXY_REGISTER_RSP",
                                              "ErrorNum": 200, "ErrorString": None},
                                   "Body": {"KeepAliveIntervel": 1e308, "UtcTime": []}}}).encode()),
    "an interval of superscript digits": (
        lambda body: b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))(
        json.dumps({"TransProxy": {"Header": {"MessageType": "MSG_TRANSPROXY_REGISTER_RSP",
                                              "ErrorNum": "200", "ErrorString": ""},
                                   "Body": {"KeepAliveIntervel": "\u00b2\u00b3"}}}).encode()),
    "NUL bytes then nothing": b"\0" * 1000,
    "a status line without a reason": b"HTTP/1.1 200\r\n\r\n",
    "binary noise": bytes(range(256)) * 4 + b"\r\n\r\n",
}


@pytest.mark.parametrize("name", HOSTILE_REGISTER_ANSWERS)
def test_anything_answered_to_the_register_gives_a_result_never_an_exception(name):
    with TinyServer(answer_register_with(HOSTILE_REGISTER_ANSWERS[name]), idle) as server:
        started = time.monotonic()
        result = check(*server.address, timeout=1.0)
    assert time.monotonic() - started < 1.0 + GRACE
    # A register reply with odd but readable fields may register; then the relay fails.
    assert not result.ok and result.stage in ("register", "send"), result.message
    assert result.message.startswith(f"{result.stage}: "), result.message


def test_a_transcript_keeps_a_bounded_prefix_per_direction_and_says_what_it_cut():
    transcript = Transcript()
    transcript.record("device", "sent", b"register")
    for _ in range(400):
        transcript.record("device", "received", b"\0" * 16384)
    kept = sum(len(data) for _, actor, direction, data in transcript.entries if direction == "received")
    assert kept == TRANSCRIPT_BYTES
    lines = list(transcript.lines())
    assert lines[1].split("<<")[0].strip().endswith("device")
    assert any(".. ... 6.3 MB more received not kept" in line for line in lines), lines[-1]
    assert sum(1 for line in lines if "not kept" in line) == 1
    assert transcript.as_list()[-1]["direction"] == "cut"


def test_an_endpoint_refuses_to_keep_more_unread_messages_than_its_bound():
    endpoint = Endpoint(("127.0.0.1", 6604), "cam")
    with pytest.raises(UnreadOverflow, match=f"nobody asked for, more than an endpoint keeps "
                                             f"\\({MAX_UNREAD} messages"):
        for _ in range(MAX_UNREAD // 64 + 2):
            endpoint._take(VALID_REPLY * 64)
    assert endpoint.unread == 0


@pytest.mark.timeout(20)
def test_a_strict_check_passes_against_a_strict_fake():
    server = FakeTPS(strict_http=True)
    with server.start_in_thread():
        result = check(*server.address, timeout=5, strict=True)
    assert result.ok, result.message


def test_a_strict_check_fails_at_send_against_field_acks_without_content_length(fake):
    result = check(*fake.address, timeout=5, strict=True)
    assert not result.ok and result.stage == "send", result.message
    assert "reply 200 has no Content-Length: under strict HTTP/1.1" in result.message
