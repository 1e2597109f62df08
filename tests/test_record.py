"""Recording real traffic: the proxy, the capture importer and the writer they share
turn a session into scenarios that replay as it happened."""

import json
import os
import signal
import subprocess
import sys
import threading
from contextlib import contextmanager

import pytest

import capture_writer
from conftest import free_port, wait_until
from fake_tps import FakeTPS
from tpsharness import kernel
from tpsharness.errors import ScenarioFailure
from tpsharness.harness import Harness
from tpsharness.protocol import private_data_request, register_request
from tpsharness.record.anonymize import Anonymizer
from tpsharness.record.capture import import_capture
from tpsharness.record.proxy import RecordingProxy
from tpsharness.record.writer import write_scenarios
from tpsharness.scenario import Scenario, load, play, validate


@contextmanager
def proxy_to(upstream, **options):
    """A recording proxy in front of ``upstream``, on a kernel of its own thread."""
    proxy = RecordingProxy(("127.0.0.1", 0), upstream, **options)
    thread = threading.Thread(target=kernel.run, args=(proxy.serve(),), daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.request_stop()
        thread.join(10)
        assert not thread.is_alive(), "the proxy did not stop"


def two_devices_and_a_client(address):
    """The session the tests record: two cameras, an app that sends to each, one answer."""
    harness = Harness(address, timeout=3)
    try:
        cam1, cam2 = harness.device(), harness.device()
        cam1.register()
        cam2.register()
        app = harness.client()
        app.send(cam1.uuid, b"hello cam1")
        assert cam1.receive().body == b"hello cam1"
        app.send(cam2.uuid, bytes(range(256)))
        assert cam2.receive().body == bytes(range(256))
        cam1.send(app.uuid, b"answer from cam1")
        assert app.receive().body == b"answer from cam1"
        return {"cam1": cam1.uuid, "cam2": cam2.uuid, "app": app.uuid}
    finally:
        harness.close()


def recorded_session(upstream):
    with proxy_to(upstream.address) as proxy:
        uuids = two_devices_and_a_client(proxy.address)
        wait_until(lambda: sum(1 for e in proxy.conversation.events if e[2] == "actor closed") == 3)
    return proxy.conversation, uuids


def as_scenario(data):
    return Scenario("<recorded>", validate(data))


def test_a_proxy_session_with_two_devices_and_a_client_replays_green_against_the_fake(fake):
    conversation, uuids = recorded_session(fake)
    [written] = write_scenarios(conversation)
    data = written.data
    kinds = sorted(spec["kind"] for spec in data["actors"].values())
    assert kinds == ["client", "device", "device"]
    assert {spec["uuid"] for spec in data["actors"].values()} == set(uuids.values())
    steps = [step["do"] for step in data["steps"]]
    assert steps.count("expect_receipt") == 3 and steps.count("send") == 3
    assert "send_raw" not in steps          # every write was what the harness's own actors send
    fresh = FakeTPS()
    with fresh.start_in_thread():
        play(as_scenario(data), fresh.address)
    play(as_scenario(data), fake.address)      # and against the upstream it was recorded from


def test_the_anonymised_session_replays_and_keeps_no_original_uuid_payload_or_auth_code(fake, tmp_path):
    conversation, uuids = recorded_session(fake)
    anonymizer = Anonymizer()
    [written] = write_scenarios(anonymizer.anonymize(conversation))
    text = json.dumps(written.data)
    for original in uuids.values():
        assert original not in text
    for payload in ("hello cam1", "answer from cam1"):
        assert payload not in text
    assert json.dumps(bytes(range(256)).decode("latin-1"))[1:-1] not in text
    assert set(anonymizer.pseudonyms) >= set(uuids.values())
    play(as_scenario(written.data), fake.address)


def test_anonymised_auth_codes_become_0000_and_pseudonyms_are_stable_across_files(fake):
    serial = "CAM-0042-SECRET"
    with proxy_to(fake.address) as proxy:
        harness = Harness(proxy.address, timeout=3)
        raw = harness.raw()
        raw.send_raw(register_request(serial, auth_code="K3R7"))
        assert raw.next_reply().status == 200
        app = harness.raw()
        app.send_raw(private_data_request("APP-SECRET-1", serial, b"secret payload", auth_code="K5S5"))
        assert app.next_reply().status == 200
        wait_until(lambda: any(e[1] == 1 and e[2] == "received" and b"secret payload" in e[3]
                               for e in proxy.conversation.events))     # the relay, before the close
        harness.close()
        wait_until(lambda: len([e for e in proxy.conversation.events if e[2] == "actor closed"]) == 2)
    anonymizer = Anonymizer()
    anonymous = anonymizer.anonymize(proxy.conversation)
    per_device = write_scenarios(anonymous, per_device=True)
    again = write_scenarios(anonymizer.anonymize(proxy.conversation))
    texts = [json.dumps(w.data) for w in per_device + again]
    for text in texts:
        for secret in (serial, "APP-SECRET-1", "K3R7", "K5S5", "secret payload"):
            assert secret not in text
        assert anonymizer.pseudonyms[serial] in text
    assert len(anonymizer.pseudonyms[serial]) == len(serial)
    data = per_device[0].data
    assert not [spec for spec in data["actors"].values() if "auth_code" in spec]   # 0000, the default
    assert [s["do"] for s in data["steps"]][:2] == ["connect", "register"]   # now what a device sends
    play(as_scenario(per_device[0].data), fake.address)


def test_the_same_session_captured_as_pcap_imports_as_the_same_scenario(fake, tmp_path):
    conversation, _ = recorded_session(fake)
    direct = write_scenarios(conversation)[0].data
    for pcapng in (False, True):
        path = capture_writer.write(tmp_path / "session.pcap", capture_writer.packets(conversation),
                                    pcapng=pcapng)
        imported = import_capture(str(path), 6604)
        assert not imported.skipped and not imported.stopped
        assert write_scenarios(imported.conversation)[0].data["steps"] == direct["steps"]


def test_out_of_order_and_retransmitted_segments_import_as_the_same_scenario(fake, tmp_path):
    conversation, _ = recorded_session(fake)
    direct = write_scenarios(conversation)[0].data["steps"]
    shuffled = capture_writer.packets(conversation, mss=100, disorder=True)
    path = capture_writer.write(tmp_path / "shuffled.pcap", shuffled)
    imported = import_capture(str(path), 6604)
    assert not imported.skipped
    assert write_scenarios(imported.conversation)[0].data["steps"] == direct


def test_a_capture_that_starts_mid_stream_still_reaches_the_device(fake, tmp_path):
    conversation, uuids = recorded_session(fake)
    frames = capture_writer.packets(conversation)
    relay_at = next(i for i, (_, packet) in enumerate(frames) if b"hello cam1" in packet)
    late = frames[relay_at - 1:]         # from the client's request on: no handshake, no register
    imported = import_capture(str(capture_writer.write(tmp_path / "late.pcap", late)), 6604)
    [written] = write_scenarios(imported.conversation)
    actors = written.data["actors"]
    assert any(spec.get("uuid") == uuids["cam1"] and spec["kind"] == "device" for spec in actors.values())
    fresh = FakeTPS()
    with fresh.start_in_thread():
        play(as_scenario(written.data), fresh.address)


def test_a_recording_of_a_field_like_fake_fails_against_the_default_fake_where_they_differ():
    field = FakeTPS(faults=["one-read-one-message"])
    with field.start_in_thread(), proxy_to(field.address) as proxy:
        harness = Harness(proxy.address, timeout=3)
        cam = harness.device()
        cam.register()
        split = harness.raw()
        request = register_request("split-serial")
        split.send_raw(request[:40])
        assert split.next_reply().status == 400         # the field server reads each read alone
        split.send_raw(request[40:])
        assert split.next_reply().status == 400
        app = harness.client()
        app.send(cam.uuid, b"after the split")
        assert cam.receive().body == b"after the split"
        harness.close()
        wait_until(lambda: len([e for e in proxy.conversation.events if e[2] == "actor closed"]) == 3)
    [written] = write_scenarios(proxy.conversation)
    scenario = as_scenario(written.data)
    again = FakeTPS(faults=["one-read-one-message"])
    with again.start_in_thread():
        play(scenario, again.address)       # the field-like fake does it again
    default = FakeTPS()
    with default.start_in_thread(), pytest.raises(ScenarioFailure) as failure:
        play(scenario, default.address)
    steps = written.data["steps"]
    first_400 = next(n for n, s in enumerate(steps, 1) if s.get("status") == 400)
    actor = steps[first_400 - 1]["actor"]
    assert str(failure.value).startswith(f"<recorded>: step {first_400} ({actor}: expect_reply)")
    assert steps[first_400 - 2]["do"] == "send_raw"          # the first half of the split register
    assert "status 400" in failure.value.expected


def test_field_forms_are_kept_byte_for_byte_as_send_raw(fake):
    crlf = register_request("crlf-cam", trailing_crlf=True)
    no_space = register_request("tight-cam").replace(b"Content-Length: ", b"Content-Length:")
    pipelined = private_data_request("app-x", "crlf-cam", b"one") + private_data_request("app-x", "crlf-cam", b"two")
    with proxy_to(fake.address) as proxy:
        harness = Harness(proxy.address, timeout=3)
        cam, tight, app = harness.raw(), harness.raw(), harness.raw()
        cam.send_raw(crlf)
        assert cam.next_reply().status == 200
        tight.send_raw(no_space)
        assert tight.next_reply().status == 200
        app.send_raw(pipelined)
        assert [app.next_reply().status, app.next_reply().status] == [200, 200]
        harness.close()
        wait_until(lambda: len([e for e in proxy.conversation.events if e[2] == "actor closed"]) == 3)
    [written] = write_scenarios(proxy.conversation)
    writes = [s for s in written.data["steps"] if s["do"] in ("register", "send_raw", "send")]
    assert writes[0] == {"do": "register", "actor": "device1", "trailing_crlf": True}
    assert writes[1]["do"] == "send_raw" and "Content-Length:" in writes[1]["data"]
    assert "${device2}" in writes[1]["data"] and "Host: ${tps}" in writes[1]["data"]
    assert writes[2]["do"] == "send_raw" and writes[2]["data"].count("POST /PrivateData") == 2
    play(as_scenario(written.data), fake.address)


def test_gaps_become_waits_and_speed_divides_them(fake):
    with proxy_to(fake.address) as proxy:
        harness = Harness(proxy.address, timeout=3)
        cam = harness.device()
        cam.register()
        threading.Event().wait(0.4)         # the gap the recording must keep
        cam.register()
        harness.close()
        wait_until(lambda: any(e[2] == "actor closed" for e in proxy.conversation.events))
    data = write_scenarios(proxy.conversation)[0].data
    waits = [s["seconds"] for s in data["steps"] if s["do"] == "wait"]
    assert any(w >= 0.4 for w in waits), waits
    play(as_scenario(data), fake.address)
    long_gap = {"actors": {}, "steps": [{"do": "wait", "seconds": 20}]}
    import time
    started = time.monotonic()
    play(as_scenario({**long_gap, "speed": 100}), fake.address)
    assert time.monotonic() - started < 10          # 0.2 s; 20 s at speed 1


def test_per_device_writes_a_file_for_each_device_and_the_clients_that_spoke_to_it(fake):
    with proxy_to(fake.address) as proxy:
        harness = Harness(proxy.address, timeout=3)
        cams = [harness.device() for _ in range(2)]
        for cam in cams:
            cam.register()
        apps = [harness.client() for _ in range(2)]
        for app, cam in zip(apps, cams):
            app.send(cam.uuid, b"only yours")
            cam.receive()
        harness.close()
        wait_until(lambda: len([e for e in proxy.conversation.events if e[2] == "actor closed"]) == 4)
    files = write_scenarios(proxy.conversation, per_device=True, stem="s")
    assert len(files) == 2
    for written, cam, app in zip(files, cams, apps):
        assert written.stem == f"s_{cam.uuid}"
        assert {spec["uuid"] for spec in written.data["actors"].values()} == {cam.uuid, app.uuid}
        play(as_scenario(written.data), fake.address)
    [only] = write_scenarios(proxy.conversation, only=[apps[1].uuid])
    assert {spec["uuid"] for spec in only.data["actors"].values()} == {cams[1].uuid, apps[1].uuid}


def test_a_server_close_is_expect_close_and_an_actor_close_is_close(fake):
    with proxy_to(fake.address) as proxy:
        harness = Harness(proxy.address, timeout=3)
        old = harness.device()
        old.register()
        harness.device(old.uuid)             # takes the serial over: the TPS closes the old one
        assert old.closed_by_server()
        harness.close()
        wait_until(lambda: len([e for e in proxy.conversation.events if "closed" in e[2]]) >= 2)
    data = write_scenarios(proxy.conversation)[0].data
    assert data["actors"]["device2"]["uuid"] == "${device1}"
    closes = [(s["do"], s["actor"]) for s in data["steps"] if "close" in s["do"]]
    assert closes[0] == ("expect_close", "device1") and ("close", "device2") in closes
    play(as_scenario(data), fake.address)


# -- the command ------------------------------------------------------------------------------

def record_command(*args):
    return [sys.executable, "-m", "tpsharness", "record", *map(str, args)]


def recording_proxy(upstream, tmp_path, name):
    """``record --proxy`` in front of the fake ``upstream``, as a process that is
    relaying: (the process, its port)."""
    port = free_port()
    process = subprocess.Popen(record_command("--proxy", port, "--upstream", f"127.0.0.1:{upstream.address[1]}",
                                              "-o", tmp_path, "--name", name),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "relaying" in process.stderr.readline()
    except BaseException:
        process.kill()
        raise
    return process, port


def test_ctrl_c_mid_session_writes_the_recording(fake, tmp_path):
    process, port = recording_proxy(fake, tmp_path, "incident")
    try:
        harness = Harness(("127.0.0.1", port), timeout=3)
        cam = harness.device()
        cam.register()          # the session is still open when Ctrl-C comes
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=20)
        harness.close()
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert "interrupted" in err and f"wrote {tmp_path / 'test_incident.tps.json'}" in out
    scenario = load(tmp_path / "test_incident.tps.json")
    assert [s["do"] for s in scenario.data["steps"]][:3] == ["connect", "register", "expect_reply"]
    assert "expect_close" not in [s["do"] for s in scenario.data["steps"]]   # the proxy's own close
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".part")]
    play(scenario, fake.address)


def test_a_second_ctrl_c_while_the_recording_is_written_loses_nothing(fake, tmp_path):
    """timeout(1) and a process group's Ctrl-C both deliver the signal again: the one
    that comes once the relay stopped waits for the files (it lost them all)."""
    process, port = recording_proxy(fake, tmp_path, "twice")
    try:
        harness = Harness(("127.0.0.1", port), timeout=3)
        for _ in range(20):
            harness.device().register()
        process.send_signal(signal.SIGINT)
        assert "interrupted: 20 connections" in process.stderr.readline()   # the relay stopped
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=20)
        harness.close()
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert f"wrote {tmp_path / 'test_twice.tps.json'}" in out and "Traceback" not in err
    assert load(tmp_path / "test_twice.tps.json").data["steps"][0]["do"] == "connect"


def test_the_signals_of_a_proxy_session_stop_start_relay_and_wait_for_the_write():
    from tpsharness.record.cli import _Signals
    signals, stopped = _Signals(), []
    with pytest.raises(KeyboardInterrupt):
        signals.stop()                   # before the relay starts: the command stops
    signals.stop = lambda: stopped.append(True)
    signals.stop()                       # while it relays: the relay stops
    signals.stop = signals.writing
    signals.stop()                       # while the files are written: nothing but a line
    assert stopped == [True]


def test_an_upstream_that_is_down_is_an_error_at_start(tmp_path):
    result = subprocess.run(record_command("--proxy", 0, "--upstream", f"127.0.0.1:{free_port()}",
                                           "-o", tmp_path), capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "does not accept connections" in result.stderr
    assert os.listdir(tmp_path) == []


def test_the_command_never_overwrites_without_force(fake, tmp_path):
    (tmp_path / "test_s.tps.json").write_text("hand-edited")
    conversation, _ = recorded_session(fake)
    path = capture_writer.write(tmp_path / "s.pcap", capture_writer.packets(conversation))
    result = subprocess.run(record_command("--pcap", path, "-o", tmp_path, "--name", "s"),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "test_s.tps.json").read_text() == "hand-edited"
    assert f"wrote {tmp_path / 'test_s_2.tps.json'}" in result.stdout
    load(tmp_path / "test_s_2.tps.json")
    forced = subprocess.run(record_command("--pcap", path, "-o", tmp_path, "--name", "s", "--force"),
                            capture_output=True, text=True, timeout=30)
    assert forced.returncode == 0 and load(tmp_path / "test_s.tps.json").data["steps"]


def test_the_proxy_binds_loopback_unless_told_otherwise(fake):
    proxy = RecordingProxy(("127.0.0.1", 0), fake.address)
    try:
        assert proxy.address[0] == "127.0.0.1"
    finally:
        proxy.close()
    from tpsharness.cli import build_parser
    args = build_parser().parse_args(["record", "--proxy", "7000", "--upstream", "127.0.0.1:6604", "-o", "x"])
    assert args.proxy == ("127.0.0.1", 7000)


def test_the_plugin_replays_faster_with_speed(pytester):
    path = pytester.path / "test_slow.tps.json"
    path.write_text(json.dumps({"actors": {"cam": {"kind": "device"}},
                                "steps": [{"do": "connect", "actor": "cam"}, {"do": "wait", "seconds": 20},
                                          {"do": "register", "actor": "cam"},
                                          {"do": "expect_reply", "actor": "cam", "status": 200}]}))
    import time
    started = time.monotonic()
    pytester.runpytest("-p", "no:randomly", "--speed", "100").assert_outcomes(passed=1)
    assert time.monotonic() - started < 10          # 0.2 s of waiting; 20 s at speed 1
    result = pytester.runpytest("-p", "no:randomly", "--speed", "0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--speed must be a number from 0.1 to 100; got '0'*"])


def test_no_original_uuid_payload_or_auth_code_survives_in_any_file_the_command_writes(fake, tmp_path):
    serial, app_uuid, payload = "CAM-SECRET-777", "APP-SECRET-42", b"the secret payload \x00\xff!"
    with proxy_to(fake.address) as proxy:
        harness = Harness(proxy.address, timeout=3)
        cam = harness.device(serial, auth_code="K9Q1")
        app = harness.client(app_uuid, auth_code="K8Q2")
        app.send(serial, payload)
        assert cam.receive().body == payload
        cam.send(app_uuid, payload[::-1])
        assert app.receive().body == payload[::-1]
        cut = harness.raw()         # a peer that closes mid-request: the message is cut short
        cut.send_raw(private_data_request("APP-CUT-SECRET-9", serial, b"CUT-SECRET-PAYLOAD-0123456789",
                                          auth_code="K7Q3")[:-5])
        wait_until(lambda: b"CUT-SECRET" in b"".join(e[3] for e in proxy.conversation.events))
        harness.close()
        wait_until(lambda: len([e for e in proxy.conversation.events if e[2] == "actor closed"]) == 3)
    capture = capture_writer.write(tmp_path / "secret.pcap", capture_writer.packets(proxy.conversation))
    out = tmp_path / "out"
    for extra in ([], ["--per-device"]):
        result = subprocess.run(record_command("--pcap", capture, "-o", out, "--anonymize", *extra),
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
    files = sorted(out.iterdir())
    assert len(files) == 2          # the session; with --per-device, the camera's (the cut request's too)
    secrets = [serial, app_uuid, "K9Q1", "K8Q2", "secret.pcap", "APP-CUT-SECRET-9", "K7Q3", "CUT-SECRET"]
    for data in (payload, payload[::-1]):
        secrets += [json.dumps(data.decode("latin-1"))[1:-1], data.hex(), data.decode("latin-1")[:10]]
    for path in files:
        text = path.read_text()
        for secret in secrets:
            assert secret not in text and secret.lower() not in text.lower(), (path.name, secret)
        play(load(path), fake.address)


def test_traffic_options_with_a_template_are_a_usage_error(fake, tmp_path):
    result = subprocess.run(record_command(*fake.address, "-o", tmp_path / "t.json", "--anonymize", "--per-device"),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 3
    assert "--per-device, --anonymize go with --proxy or --pcap, not with a template" in result.stderr
    assert not (tmp_path / "t.json").exists()


def test_per_device_puts_the_connections_that_named_no_uuid_in_one_file():
    from tpsharness.record.conversation import Conversation
    conversation = Conversation()
    for conn in (1, 2, 3):
        conversation.open(0.0, conn, f"10.0.0.2:{40000 + conn}")
        conversation.add(0.1, conn, "sent", b"GET / HTTP/1.0\r\n\r\n")
        conversation.add(0.2, conn, "received", b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n\r\n")
    [written] = write_scenarios(conversation, per_device=True, stem="s")
    assert written.stem == "s_unidentified" and len(written.data["actors"]) == 3


def crash_session(address):
    """The field server's crash: a second serial on one connection leaves a dangling
    entry, and private data to the first serial kills the server."""
    harness = Harness(address, timeout=3)
    try:
        cam = harness.raw()
        cam.send_raw(register_request("cam-A"))
        assert cam.next_reply().status == 200
        cam.send_raw(register_request("cam-B", cseq=2))
        assert cam.closed_by_server()
        app = harness.raw()
        app.send_raw(private_data_request("app-1", "cam-A", b"to the dangling entry"))
        assert app.closed_by_server()
    finally:
        harness.close()


def test_a_session_that_kills_the_tps_is_written_destructive_and_kills_it_again(tmp_path):
    dying = FakeTPS(faults=["die-on-dangling-entry"])
    with dying.start_in_thread():
        process, port = recording_proxy(dying, tmp_path, "crash")
        try:
            crash_session(("127.0.0.1", port))
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=20)
        finally:
            process.kill()
    assert process.returncode == 0, err
    assert "the upstream no longer accepts connections: the files are marked destructive" in err
    scenario = load(tmp_path / "test_crash.tps.json")
    assert scenario.destructive and "upstream_died" in scenario.data["recorded"]
    again = FakeTPS(faults=["die-on-dangling-entry"])
    with again.start_in_thread():
        play(scenario, again.address)           # it dies again, as recorded
    default = FakeTPS()
    with default.start_in_thread(), pytest.raises(ScenarioFailure) as failure:
        play(scenario, default.address)
    last = len(scenario.data["steps"])
    assert str(failure.value).startswith(f"{tmp_path / 'test_crash.tps.json'}: step {last} (client1: expect_close)")
