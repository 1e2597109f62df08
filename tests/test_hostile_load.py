"""A load run against a hostile TPS (issue 16, items 1-5): what it sends cannot grow
the run's memory or output, kill its reading, crash a driver, or be counted under
the wrong reason; impossible options are refused instead of hanging."""

import json
import logging
import math
import os
import socket
import time

import pytest

pytest.importorskip("hdrh")

import tpsharness  # noqa: E402
from tpsharness.load.fake import FakeProcess  # noqa: E402
from tpsharness.protocol import register_reply, reply  # noqa: E402

from hostile_tps import HostileTPS, forged  # noqa: E402
from test_load import cli  # noqa: E402

RUN = dict(devices=4, clients=2, window=2, duration=0.5, timeout=2.0, drain=1.0)


# -- 1. reason phrases -------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_unique_12_kb_reason_phrase_per_message_keeps_errors_output_and_result_small(tmp_path):
    def refuse_uniquely(tps, conn, message):
        phrase = f"{tps.count:08d}".encode() + b"R" * 12_000
        conn.sendall(b"HTTP/1.1 400 " + phrase + b"\r\nContent-Type: text/plain\r\n\r\n")

    with HostileTPS(relay=refuse_uniquely) as tps:
        started = time.monotonic()
        code, out, err = cli("load", *map(str, tps.address), "--devices", "4", "--clients", "2",
                             "--window", "4", "--duration", "2", "--quiet", "--json", str(tmp_path / "r.json"))
        elapsed = time.monotonic() - started
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["counters"]["rejected"] > 100              # many distinct phrases came
    assert len(result["errors"]) <= 32            # reasons are capped, the rest count as 'other'
    assert all(len(reason) < 80 and len(entry["example"]) < 300 for reason, entry in result["errors"].items())
    assert (tmp_path / "r.json").stat().st_size < 200_000
    assert len(out) < 20_000 and len(err) < 2_000
    assert elapsed < 15


# -- 2. forged payloads -------------------------------------------------------------------------------

@pytest.mark.parametrize("fields", [
    {"sender": 0xFFFFFFFF}, {"pair": 0xFFFFFFFF}, {"seq": 2 ** 63}, {"due": math.nan},
    {"due": math.inf}, {"due": -math.inf},
], ids=["sender", "pair", "sequence", "nan-time", "inf-time", "minus-inf-time"])
def test_a_forged_payload_with_a_valid_checksum_is_counted_and_reading_goes_on(fields):
    def relay_and_forge(tps, conn, message):
        device = HostileTPS.relay_as_field(tps, conn, message)
        device.sendall(message.raw.replace(message.body, forged(message.body, **fields)))

    with HostileTPS(relay=relay_and_forge) as tps:
        result = tpsharness.load(*tps.address, **RUN)
    assert result.sent > 0 and result.delivered == result.sent and result.lost == 0
    assert result.corrupted == result.sent                # each forgery counted, none believed
    assert result.aborted is None and result.exit_code == 1
    assert "a valid checksum, but" in result.integrity["corrupted"][0]["why"]


def test_a_copy_that_asks_for_an_answer_nobody_asked_for_is_a_duplicate_and_reading_goes_on():
    def relay_twice_asking(tps, conn, message):
        device = HostileTPS.relay_as_field(tps, conn, message)
        device.sendall(message.raw.replace(message.body, forged(message.body, flags=0xFFFFFFFF)))

    with HostileTPS(relay=relay_twice_asking) as tps:
        result = tpsharness.load(*tps.address, **RUN)
    assert result.delivered == result.sent > 0 and result.duplicated == result.sent
    assert result.replies == 0 and result.aborted is None and result.exit_code == 1


def test_a_forged_answer_to_a_client_is_counted_and_reading_goes_on():
    def relay_and_answer_falsely(tps, conn, message):
        HostileTPS.relay_as_field(tps, conn, message)
        conn.sendall(message.raw.replace(message.body, forged(message.body, due=math.nan)))

    with HostileTPS(relay=relay_and_answer_falsely) as tps:
        result = tpsharness.load(*tps.address, **RUN)
    assert result.delivered == result.sent > 0 and result.corrupted == result.sent
    assert result.aborted is None and result.exit_code == 1


# -- 3. heartbeats with every device gone --------------------------------------------------------------

def test_heartbeats_with_every_device_dropped_end_the_run_with_its_reason_not_a_crash(caplog):
    def register_then_drop(tps, conn, message):
        conn.sendall(register_reply(utc_time="0", keepalive_interval=1))
        conn.shutdown(socket.SHUT_RDWR)         # every device is gone before the traffic starts

    caplog.set_level(logging.ERROR)
    with HostileTPS(register=register_then_drop) as tps:
        result = tpsharness.load(*tps.address, heartbeat=True, **dict(RUN, duration=3.0))
    assert result.exit_code == 2 and "dropped every device connection" in result.aborted
    assert not [r for r in caplog.records if "min()" in r.getMessage() or r.exc_info]


# -- 4. impossible options ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fake_address():
    with FakeProcess() as address:
        yield address


@pytest.mark.parametrize("options, message", [
    (["--rate", "1e308"], "--rate must be at most 10,000,000 messages/s"),
    (["--window", "1000000000"], "messages in flight, over 1,000,000"),
    (["--duration", "inf"], "--duration must be a finite number of seconds"),
    (["--ramp", "inf"], "--ramp must be a finite number of seconds"),
    (["--timeout", "1e9"], "--timeout must be at most 3600 s"),
    (["--devices", "2000000"], "connections is over 1,000,000 for one run"),
])
def test_impossible_options_are_refused_at_once(fake_address, options, message):
    started = time.monotonic()
    code, out, err = cli("load", *map(str, fake_address), "--duration", "1", *options, timeout=20)
    assert code == 3, out + err
    assert message in err and "usage: tpsharness load" in err
    assert time.monotonic() - started < 15


@pytest.mark.slow
@pytest.mark.timeout(60)        # the run itself is 1 s; the generator falls far behind, by design
def test_the_highest_rate_runs_within_its_bounds_and_counts_what_it_could_not_send(fake_address):
    started = time.monotonic()
    result = tpsharness.load(*fake_address, devices=4, clients=2, rate=10_000_000, duration=1.0,
                             timeout=2.0, drain=1.0)
    assert time.monotonic() - started < 30
    refused = result.errors.get("generator backlog full", {"count": 0})["count"]
    assert result.sent > 0 and result.unsent > 0 and result.sent + refused + result.unsent == 10_000_000


# -- 5. reasons by cause ----------------------------------------------------------------------------------

def test_garbage_from_the_tps_is_a_protocol_error_not_a_timeout():
    def endless_header(tps, conn, message):
        conn.sendall(b"HTTP/1.1 200 OK\r\nX-Within: " + b"within " * 4000)

    with HostileTPS(register=endless_header) as tps:
        result = tpsharness.load(*tps.address, **RUN)
    assert result.exit_code == 2
    assert set(result.errors) == {"protocol error"}, result.errors
    assert result.errors["protocol error"]["count"] == RUN["devices"]


def test_a_reason_phrase_with_the_words_of_other_causes_is_counted_by_its_status():
    def refuse_with_words(tps, conn, message):
        conn.sendall(b"HTTP/1.1 503 refused reset closed within timed out\r\n\r\n")

    with HostileTPS(register=refuse_with_words) as tps:
        result = tpsharness.load(*tps.address, **RUN)
    assert set(result.errors) == {"503 refused reset closed within timed out"}, result.errors


def test_a_register_answered_with_bytes_that_are_not_a_reply_is_a_protocol_error():
    def greet(tps, conn, message):
        conn.sendall(b"HELLO there friend\r\nX: y\r\n\r\n")

    with HostileTPS(register=greet) as tps:
        result = tpsharness.load(*tps.address, **RUN)
    assert set(result.errors) == {"protocol error"}, result.errors


# Every sentence endpoint.py and device.py raise for a connect or a register, as they
# write it (timeouts carry timed_out=True and are told by it, whatever their words).
@pytest.mark.parametrize("sentence, timed_out, cause", [
    ("refused the connection after 0.1 ms", False, "refused"),
    ("refused the connection (every address failed: ...) after 0.1 ms", False, "refused"),
    ("reset the connection before the register reply after 1.0 ms", False, "reset"),
    ("closed the connection while sending, after 1.0 ms", False, "closed by the TPS"),
    ("closed the connection before the register reply (after a partial message: b'HT') after 1 ms",
     False, "closed by the TPS"),
    ("answered bytes that are not a TPS message (no status line) after 1.0 ms", False, "protocol error"),
    ("sent bytes that are not a reply (HELLO there friend) where the register reply belongs after 1 ms",
     False, "protocol error"),
    ("sent a request (POST /PrivateData) where the register reply belongs after 1.0 ms", False,
     "protocol error"),
    ("sent a request (POST /TransProxy) (our own request, sent back) where the register reply belongs "
     "after 1.0 ms", False, "protocol error"),
    ("sent 4,097 messages (1.0 MB) nobody asked for, while this endpoint waited for the register "
     "reply, after 1.0 ms", False, "protocol error"),
    ("answered 404 Not Found after 1.0 ms", False, "404 Not Found"),
    ("answered status 502 after 1.0 ms", False, "502"),
    ("answered 200 OK without the register reply JSON (body b'') after 1.0 ms", False,
     "200 without register JSON"),
    ("refused 'cam-1' with ErrorNum 401 (bad auth) after 1.0 ms", False, "register refused"),
    ("did not accept the connection within 5000.0 ms after 5000.0 ms", True, "timeout"),
    ("did not take the request within 5000.0 ms", True, "timeout"),
    ("sent 1.2 MB but no register reply within 5000.0 ms", True, "timeout"),
    ("sent only 12 bytes of a register reply, then nothing, within 5000.0 ms", True, "timeout"),
    ("sent no register reply within 5000.0 ms", True, "timeout"),
])
def test_each_connect_and_register_sentence_counts_under_its_cause(sentence, timed_out, cause):
    from tpsharness.errors import RegisterError
    from tpsharness.load.accounting import cause_of

    error = RegisterError(f"TPS 127.0.0.1:6604 {sentence}", 1.0, timed_out=timed_out)
    assert cause_of(error, "127.0.0.1:6604") == cause


# -- review findings: what may offset a loss, who sent it, answers, registers -----------------------

def _ack_only(tps, conn, message):
    """Ack a message and relay nothing; the device's connection, or None."""
    conn.sendall(reply(200))
    return tps.devices.get(message.dest)


def test_forged_copies_of_messages_never_relayed_do_not_hide_the_loss():
    def drop_and_forge(tps, conn, message):
        device = _ack_only(tps, conn, message)
        device.sendall(message.raw.replace(message.body, forged(message.body, pair=0xFFFFFFFF)))

    with HostileTPS(relay=drop_and_forge) as tps:
        result = tpsharness.load(*tps.address, thresholds=["corrupted.rate<=100%"], **RUN)
    assert result.sent > 0 and result.delivered == 0
    assert result.lost == result.sent and result.corrupted == result.sent
    assert result.exit_code == 1 and result.verdict.startswith(
        f"FAILED: {result.sent:,} of {result.sent:,} messages (100.0%) lost")


def test_a_damaged_message_offsets_its_loss_once_however_many_copies_come():
    def damage_twice(tps, conn, message):
        device = _ack_only(tps, conn, message)
        body = message.body
        damaged = body[:-1] + bytes([body[-1] ^ 0xFF])          # a padding byte: the checksum fails
        device.sendall(message.raw.replace(body, damaged) * 2)

    with HostileTPS(relay=damage_twice) as tps:
        result = tpsharness.load(*tps.address, **RUN)
    assert result.sent > 0 and result.delivered == 0 and result.lost == 0
    assert result.corrupted == 2 * result.sent and result.exit_code == 1


def test_a_relay_under_another_srcuuid_is_misattributed_not_delivered():
    def relay_as_someone_else(tps, conn, message):
        device = _ack_only(tps, conn, message)
        device.sendall(message.raw.replace(b"SrcUuid: " + message.src.encode(), b"SrcUuid: " + b"x" * len(message.src)))

    with HostileTPS(relay=relay_as_someone_else) as tps:
        result = tpsharness.load(*tps.address, **RUN)
    assert result.sent > 0 and result.delivered == 0 and result.lost == 0
    assert result.misattributed == result.sent and result.exit_code == 1
    assert "reached their device naming the wrong sender (SrcUuid)" in result.verdict
    assert result.integrity["misattributed"]


def _relay_both_ways(drop_answers):
    def relay(tps, conn, message):
        clients = tps.__dict__.setdefault("clients", {})
        if message.src in tps.devices:          # a device's answer to its client
            conn.sendall(reply(200))
            if not drop_answers:
                clients[message.dest].sendall(message.raw)
            return
        clients[message.src] = conn
        HostileTPS.relay_as_field(tps, conn, message)
    return relay


@pytest.mark.parametrize("drop_answers", [False, True], ids=["answered", "answers-dropped"])
def test_answers_a_tps_drops_are_counted_and_judged(drop_answers):
    with HostileTPS(relay=_relay_both_ways(drop_answers)) as tps:
        result = tpsharness.load(*tps.address, reply_every=2, **RUN)
    assert result.delivered == result.sent > 0 and result.answers > 0
    if drop_answers:
        assert result.replies == 0 and result.unanswered == result.answers and result.exit_code == 1
        assert (f"{result.answers:,} of {result.answers:,} devices' answers never reached their client"
                in result.verdict)
    else:
        assert result.replies == result.answers and result.unanswered == 0 and result.exit_code == 0


def test_devices_the_tps_refuses_to_register_fail_the_run():
    def refuse_every_other(tps, conn, message):
        if int(message.serial.rsplit("-", 1)[1]) % 2:
            conn.sendall(reply(403))
        else:
            HostileTPS.register_as_field(tps, conn, message)

    with HostileTPS(register=refuse_every_other) as tps:
        result = tpsharness.load(*tps.address, **RUN)
    assert result.devices == 2 and result.unregistered == 2 and result.delivered == result.sent > 0
    assert result.exit_code == 1 and "2 of 4 devices could not register" in result.verdict
    with HostileTPS(register=refuse_every_other) as tps:
        result = tpsharness.load(*tps.address, integrity=False, **RUN)
    assert result.exit_code == 0 and "2 of 4 devices could not register, not judged" in result.verdict


def test_a_lost_witness_says_it_may_be_a_refused_message_when_the_tps_refused_some():
    from tpsharness.load.output import summary_text

    def refuse_or_drop(tps, conn, message):
        if tps.count % 2:
            conn.sendall(reply(503))
        else:
            _ack_only(tps, conn, message)

    with HostileTPS(relay=refuse_or_drop) as tps:
        result = tpsharness.load(*tps.address, **RUN)
    assert result.rejected > 0 and result.lost > 0
    assert "never arrived (lost, or one of those refused)" in summary_text(result)


# -- output files: checked before the run, written whole, never replaced by surprise ----------------

def _closed_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _load_in_process(capsys, *options):
    """``tpsharness load`` against a port nothing listens on: a run that starts fails
    with 2 after its summary; an output refused first is a usage error (3) before it."""
    from tpsharness.cli import main
    code = main(["load", "127.0.0.1", str(_closed_port()), "--devices", "1", "--clients", "1",
                 "--duration", "0.2", "--timeout", "1", "--quiet", *options])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("make, option, message", [
    (lambda tmp: (tmp / "jd").mkdir() or tmp / "jd", "--json", "a directory"),
    (lambda tmp: (tmp / "old.json").write_text("kept\n") and tmp / "old.json", "--json",
     "exists: --force replaces it"),
    (lambda tmp: (tmp / "elsewhere.json").symlink_to(tmp / "target.json") or tmp / "elsewhere.json",
     "--json", "a symlink, never written through"),
    (lambda tmp: tmp / "missing" / "r.json", "--json", "no directory"),
    (lambda tmp: (tmp / "r_latency.csv").write_text("kept\n") and tmp / "r", "--csv",
     "r_latency.csv: exists: --force replaces it"),
])
def test_an_output_that_cannot_be_written_is_refused_before_the_run(tmp_path, capsys, make, option, message):
    target = make(tmp_path)
    code, out, err = _load_in_process(capsys, option, str(target))
    assert code == 3, out + err
    assert message in err and "usage: tpsharness load" in err
    assert out == ""                                            # no run, so no summary
    assert not (tmp_path / "target.json").exists()              # nothing written through the link
    for kept in ("old.json", "r_latency.csv"):
        if (tmp_path / kept).exists():
            assert (tmp_path / kept).read_text() == "kept\n"


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="Linux's /proc")
def test_an_output_in_a_directory_no_file_can_be_made_in_is_refused_before_the_run(capsys):
    code, out, err = _load_in_process(capsys, "--json", "/proc/self/fd/999")
    assert code == 3, out + err
    assert "--json /proc/self/fd/999: cannot create a file in '/proc/self/fd'" in err
    assert out == ""


def test_force_replaces_an_output_and_leaves_no_temporary_file(tmp_path, capsys):
    (tmp_path / "r.json").write_text("old\n")
    code, out, err = _load_in_process(capsys, "--json", str(tmp_path / "r.json"), "--force")
    assert code == 2, out + err                 # nothing listens: the run is not carried out
    assert json.loads((tmp_path / "r.json").read_text())["format"].startswith("tpsharness-load/")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_a_result_that_cannot_be_encoded_leaves_the_old_file_whole(tmp_path):
    from tpsharness.load.result import LoadResult
    path = tmp_path / "r.json"
    path.write_text("old\n")
    result = LoadResult([])
    result.counters["sent"] = math.nan              # JSON has no NaN: encoding fails part-way
    with pytest.raises(ValueError):
        result.write_json(str(path), force=True)
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


# -- options for the bundled fake: the fake's own parser judges them before it starts ---------------

@pytest.mark.parametrize("option, complaint", [
    ("--fake-option=--nope", "--fake-option: python -m fake_tps: error: unrecognized arguments: --nope"),
    ("--fake-option=--reply-delay=-1", "--fake-option: python -m fake_tps: error: argument --reply-delay: "),
    ("--fake-option=--help", "--fake-option --help: asks for help or the version, not a run"),
])
def test_a_bad_fake_option_is_a_usage_error_with_the_fakes_own_line(option, complaint):
    code, out, err = cli("load", "--duration", "1", "--quiet", option, timeout=20)
    assert code == 3, out + err
    assert err.splitlines()[-1].startswith(f"tpsharness load: error: {complaint}")
    assert "[--strict-http]" not in err and "could not be carried out" not in err     # not its usage
    assert "no HOST PORT given" not in out                  # the fake never started


def test_a_fake_option_with_a_host_is_a_usage_error(fake_address):
    code, out, err = cli("load", *map(str, fake_address), "--fake-option=--strict-http", timeout=20)
    assert code == 3, out + err
    assert "--fake-option is for the bundled fake TPS, which runs only without a HOST" in err
