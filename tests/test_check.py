"""The check against the bundled fake: success, each failure stage, the deadline."""

import re
import time

import pytest

from conftest import free_port
from fake_tps import FakeTPS
from tpsharness import kernel
from tpsharness.checker import STAGES, check, check_async
from tpsharness.client import Client
from tpsharness.device import Device
from tpsharness.errors import Rejected, UnknownDestination
from tpsharness.syscalls import NewTask


def test_a_check_against_the_fake_passes_and_times_every_stage(fake):
    result = check(*fake.address, timeout=5)
    assert result.ok and result.stage is None
    assert set(result.timings) == {"connect", "register", "send", "receipt", "total"}
    assert result.uuid.startswith("tpsharness-")
    assert f"registered {result.uuid} and relayed 16 bytes" in result.message
    assert fake.stats.relays == 1


def test_send_is_timed_until_the_ack_and_receipt_after_it(fake):
    fake.configure(reply_delay=0.1)         # the fake holds the ack (and the relay) 100 ms
    result = check(*fake.address, timeout=5)
    assert result.ok
    timings = result.timings
    assert timings["send"] >= 100 and timings["register"] >= 100
    assert sum(timings[stage] for stage in STAGES) <= timings["total"]


def test_the_transcript_holds_both_sides_bytes(fake):
    result = check(*fake.address, payload=b"find me", timeout=5)
    sent = [data for _, actor, direction, data in result.transcript.entries
            if actor == "client" and direction == "sent"]
    received = [data for _, actor, direction, data in result.transcript.entries
                if actor == "device" and direction == "received"]
    assert sent and sent[0].endswith(b"\r\n\r\nfind me")
    assert any(data.endswith(b"find me") for data in received)


def test_a_given_serial_and_payload_are_used(fake):
    result = check(*fake.address, uuid="cam-given", payload=b"exact bytes", timeout=5)
    assert result.ok and result.uuid == "cam-given" and result.payload_size == 11


def test_legacy_dict_on_success_and_failure(fake):
    assert check(*fake.address, timeout=5).as_legacy_dict() == {"status": 0, "target": 1, "errors": ""}
    fake.configure(faults=["drop-relays"])
    failed = check(*fake.address, timeout=0.5).as_legacy_dict()
    assert failed["status"] == 1 and failed["target"] == 0 and failed["errors"].startswith("receipt:")


def test_refused_port_fails_at_connect():
    port = free_port()
    result = check("127.0.0.1", port, timeout=2)
    assert (result.ok, result.stage) == (False, "connect")
    assert result.message.startswith(f"connect: TPS 127.0.0.1:{port} refused the connection after")


@pytest.mark.parametrize("faults, stage, words", [
    (["silent"], "register", "sent no register reply within"),
    (["half-reply"], "register", "sent only"),
    (["reject-registers"], "register", r"^register: TPS 127\.0\.0\.1:\d+ answered 400 Bad Request after [\d.]+ ms$"),
    (["corrupt-register-replies"], "register", "without the register reply JSON"),
    (["garbage-replies"], "register", "answered bytes that are not a TPS message"),
    (["close-on-accept"], "register", "(closed|reset) the connection"),  # FIN, or RST if our request met it
    (["reset-on-accept"], "connect|register", "reset the connection"),  # the RST may beat our connect
    (["forget-registrations"], "send", "answered 404 Not Found"),
    (["drop-relays"], "receipt", "sent no private data within"),
    (["corrupt-relays"], "receipt", r"differ from the 16 sent at byte 15 \("),
])
def test_each_failure_is_named_by_its_stage(fake, faults, stage, words):
    fake.configure(faults=faults)
    result = check(*fake.address, timeout=0.5)
    assert not result.ok and re.fullmatch(stage, result.stage), result.message
    assert result.message.startswith(f"{result.stage}: ") and re.search(words, result.message), result.message


def test_check_auth_refusal_is_a_register_failure_naming_errornum(fake):
    fake.configure(check_auth="9999")
    result = check(*fake.address, timeout=2)
    assert result.stage == "register" and "ErrorNum 401 'Unauthorized'" in result.message


@pytest.mark.parametrize("faults", [["silent"], ["half-reply"], ["drop-relays"]])
def test_the_check_returns_within_its_timeout_plus_half_a_second(fake, faults):
    fake.configure(faults=faults)
    start = time.monotonic()
    result = check(*fake.address, timeout=1.0)
    elapsed = time.monotonic() - start
    assert not result.ok
    assert elapsed <= 1.5, f"took {elapsed:.2f} s"


@pytest.mark.parametrize("options", [dict(nul_replies=True), dict(strict_http=True), {}])
def test_field_form_with_or_without_nul_and_strict_form_acks_are_accepted(options):
    server = FakeTPS(**options)
    with server.start_in_thread():
        assert check(*server.address, timeout=5).ok


def test_strict_mode_refuses_the_field_servers_unframeable_acks(fake):
    result = check(*fake.address, timeout=2, strict=True)
    assert result.stage == "send" and "no Content-Length" in result.message


def test_check_runs_beside_a_fake_in_one_scheduler():
    server = FakeTPS()

    async def main():
        await NewTask(server.serve())
        return await check_async(*server.address, timeout=5)

    try:
        assert kernel.run(main(), timeout=10).ok
    finally:
        server.close()


# -- the library's typed errors ------------------------------------------------------------

def test_client_send_raises_typed_errors_for_404_and_400(fake):
    fake.configure(check_auth="1")

    async def main():
        client = Client(fake.address, "app", auth_code="1", timeout=2)
        await client.connect()
        with pytest.raises(UnknownDestination, match="'nobody' is not registered"):
            await client.send("nobody", b"x")
        bad = Client(fake.address, "app2", auth_code="2", timeout=2)
        await bad.connect()
        with pytest.raises(Rejected, match="401 Unauthorized"):
            await bad.send("nobody", b"x")
        client.close()
        bad.close()

    kernel.run(main(), timeout=10)


def test_device_keeps_relayed_data_that_arrives_before_its_heartbeat_reply(fake):
    async def main():
        device = Device(fake.address, "cam-busy", timeout=2)
        client = Client(fake.address, "app", timeout=2)
        await device.connect()
        await client.connect()
        await device.register()
        await client.send("cam-busy", b"first")      # relayed before the heartbeat's reply
        reply = await device.heartbeat()
        data = await device.receive()
        device.close()
        client.close()
        return reply.ok, data.body, device.keepalive_interval

    assert kernel.run(main(), timeout=10) == (True, b"first", 120)


def test_device_run_answers_the_sender_and_heartbeats(fake):
    fake.configure(keepalive_interval=1)

    async def main():
        device = Device(fake.address, "cam-echo", timeout=2)
        client = Client(fake.address, "app", timeout=2)
        await device.connect()
        await device.register()
        await client.connect()
        runner = await NewTask(device.run(lambda message: b"echo " + message.body, duration=1.2,
                                          heartbeat_fraction=0.5))
        await client.send("cam-echo", b"ping")
        answer = await client.receive()
        from tpsharness.syscalls import WaitTask
        await WaitTask(runner)
        device.close()
        client.close()
        return answer.body, answer.src

    assert kernel.run(main(), timeout=10) == (b"echo ping", "cam-echo")
    assert fake.stats.heartbeats >= 1


def test_the_last_guard_turns_a_hang_into_a_failed_result_that_names_the_stage():
    from tpsharness.checker import CheckProgress, run_bounded
    from tpsharness.syscalls import Sleep

    progress = CheckProgress()

    async def hangs_while_sending():
        progress.timings.update(connect=1.0, register=2.0)
        progress.stage, progress.payload_size = "send", 16
        await Sleep(60)

    start = time.monotonic()
    result = run_bounded(hangs_while_sending(), ("127.0.0.1", 6604), timeout=0.1, progress=progress)
    assert time.monotonic() - start < 2
    assert not result.ok and result.stage == "send"
    assert result.message.startswith("send: TPS 127.0.0.1:6604 gave no result within 0.6 s")
    assert set(result.timings) == {"connect", "register", "total"}
    assert result.payload_size == 16


def test_the_guard_names_connect_when_nothing_reported_progress():
    from tpsharness.checker import run_bounded
    from tpsharness.syscalls import Sleep

    async def hangs():
        await Sleep(60)

    result = run_bounded(hangs(), ("127.0.0.1", 6604), timeout=0.1)
    assert (result.ok, result.stage) == (False, "connect")


@pytest.mark.parametrize("host, port, options", [
    ("127.0.0.1", 70000, {}),               # the socket layer would wrap it to 4464
    ("127.0.0.1", 0, {}),
    ("127.0.0.1", True, {}),
    (None, 6604, {}),                       # an empty name fails the connect stage instead
    ("127.0.0.1", 6604, {"timeout": "5"}),
    ("127.0.0.1", 6604, {"timeout": True}),
])
def test_check_refuses_arguments_no_check_can_run_with(host, port, options):
    with pytest.raises(ValueError):
        check(host, port, **options)


def test_a_harness_refuses_a_port_out_of_range():
    from tpsharness.harness import Harness
    with pytest.raises(ValueError, match="1-65535"):
        Harness(("127.0.0.1", 70000))
