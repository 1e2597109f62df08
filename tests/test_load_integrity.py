"""Load verdicts (issue 18): wrong deliveries and losses fail a run by default,
misrouting has its own count with witnesses and a pattern, coalesced acks are
detected and the ack latency never grows with the run."""

import csv
import os
import json
import re

import pytest

pytest.importorskip("hdrh")

import tpsharness  # noqa: E402
from tpsharness.load.accounting import Streams  # noqa: E402
from tpsharness.load.result import LoadResult  # noqa: E402
from tpsharness.load.thresholds import apply, parse_all  # noqa: E402

from test_load import ROOT, SHORT, cli  # noqa: E402

SHORT = dict(SHORT, duration=0.5)

FIELD = "--fake-option=--fault=one-read-one-message"       # the field-like stand-in (its old name)
FIELD_LIKE = [FIELD, "--fake-option=--profile=field"]


def counter(out, name):
    return int(re.search(rf"^{name} +([\d,]+) ", out, re.M).group(1).replace(",", ""))


# -- misrouting against a field-like TPS -----------------------------------------------------------

@pytest.mark.parametrize("field", FIELD_LIKE)
def test_a_field_like_tps_that_misroutes_pipelined_messages_fails_the_run_and_says_so(field):
    code, out, _ = cli("load", "--devices", "40", "--clients", "4", "--window", "8", "--duration", "0.5",
                       "--quiet", field)
    assert code == 1, out
    misrouted, sent = counter(out, "misrouted"), counter(out, "sent")
    assert misrouted > 0 and counter(out, "corrupted") == 0
    verdict = out.rstrip().splitlines()[-1]
    share = f"{100 * misrouted / sent:.1f}%"
    assert verdict.startswith(f"FAILED: {misrouted:,} of {sent:,} messages ({share}) reached the wrong device")
    assert re.search(r"^      load-\w+-app-\d+'s message #\d+ for load-\w+-cam-\d+ reached load-\w+-cam-\d+$",
                     out, re.M), out
    assert "pattern: every misrouted message arrived in the same read as, and after, a message for the device" in out
    assert "docs/protocol.md section 3" in out
    assert "errors: none" not in out
    assert "FAIL  misrouted==0   (measured" in out


@pytest.mark.parametrize("field", FIELD_LIKE)
def test_one_to_one_pairs_against_the_field_like_tps_pass_and_the_ack_latency_is_declared_unmeasurable(field):
    code, out, _ = cli("load", "--devices", "8", "--clients", "8", "--window", "8", "--duration", "0.5",
                       "--quiet", field)
    assert code == 0, out
    assert out.rstrip().splitlines()[-1] == "PASSED"
    assert counter(out, "misrouted") == 0 and counter(out, "lost") == 0
    acked, sent = counter(out, "acked"), counter(out, "sent")
    assert acked <= sent         # one ack per read: fewer once a read held two requests
    if acked < sent:             # (almost always, with 8 in flight; a read of one each is timing)
        assert f"acks: the TPS acknowledged {sent:,} messages with {acked:,} acks (coalesced)" in out
        assert re.search(r"^ack +- +not measurable", out, re.M)
    else:
        assert "coalesced" not in out and re.search(r"^ack +[\d,]+ ", out, re.M)


@pytest.mark.slow
def test_coalesced_acks_are_reported_in_the_result_and_the_ack_latency_is_withheld():
    result = tpsharness.load(window=8, fake_args=["--fault=one-read-one-message"],
                             **dict(SHORT, devices=4, clients=4))
    assert result.exit_code == 0 and result.acked < result.sent
    assert result.ack_note == (f"the TPS acknowledged {result.sent:,} messages with "
                               f"{result.acked:,} acks (coalesced)")
    assert result.unmeasurable("ack") and result.latency("ack")["count"] == 0
    assert result.to_dict()["latency_ms"]["ack"] is None
    assert result.to_dict()["latency_ms"]["relay"]["count"] == result.delivered


def test_acks_one_per_message_give_the_ack_latency():
    result = tpsharness.load(window=4, **SHORT)
    assert result.acked == result.sent and result.ack_note is None
    assert result.latency("ack")["count"] == result.sent
    assert result.latency("ack")["p50"] < 1000


# -- the other kinds of anomaly ---------------------------------------------------------------------

@pytest.mark.slow
def test_a_tps_that_drops_relays_fails_the_run_naming_the_loss():
    code, out, _ = cli("load", "--devices", "4", "--clients", "2", "--duration", "0.5", "--timeout", "0.5",
                       "--quiet", "--fake-option=--fault=drop-relays")
    assert code == 1, out
    lost, sent = counter(out, "lost"), counter(out, "sent")
    assert lost == sent > 0
    assert out.rstrip().splitlines()[-1] == f"FAILED: {lost:,} of {sent:,} messages (100.0%) lost"
    assert "never arrived" in out and "acknowledged every message it was sent" in out


def test_a_tps_that_corrupts_relays_fails_the_run_naming_corruption_not_misrouting():
    code, out, _ = cli("load", "--devices", "4", "--clients", "2", "--duration", "0.5", "--quiet",
                       "--fake-option=--fault=corrupt-relays")
    assert code == 1, out
    assert counter(out, "misrouted") == 0 and counter(out, "corrupted") > 0
    assert "arrived corrupted" in out.rstrip().splitlines()[-1]
    assert "wrong device" not in out
    assert "checksum does not match" in out


def test_a_tps_that_misroutes_every_relay_fails_with_its_witnesses():
    result = tpsharness.load(window=2, fake_args=["--fault=misroute-relays"], **SHORT)
    assert result.exit_code == 1 and result.misrouted == result.sent > 0 and result.delivered == 0
    assert result.lost == 0 and result.corrupted == 0      # misrouted messages are not lost
    first = result.integrity["misrouted"][0]
    assert first["at"] != first["to"] and first["sender"].endswith(tuple(f"app-{i}" for i in range(4)))
    assert result.verdict.startswith(f"FAILED: {result.misrouted:,} of {result.sent:,} messages (100.0%) "
                                     "reached the wrong device")


def test_duplicates_fail_the_run_by_default():
    result = tpsharness.load(window=2, fake_args=["--fault=duplicate-relays"], **SHORT)
    assert result.duplicated > 0 and result.exit_code == 1
    assert "arrived more than once" in result.verdict


# -- thresholds: defaults, replacements, off -------------------------------------------------------

@pytest.mark.slow
def test_a_user_threshold_on_a_count_replaces_its_default():
    result = tpsharness.load(window=2, fake_args=["--fault=drop-relays"], thresholds=["lost.rate<=100%"],
                             **dict(SHORT, drain=0.3))
    assert result.lost == result.sent > 0
    assert [expression for expression, _, _ in result.thresholds] == [
        "misrouted==0", "misattributed==0", "corrupted==0", "duplicated==0", "reordered==0", "rejected==0",
        "unanswered==0", "unregistered==0", "lost.rate<=100%"]
    assert result.exit_code == 0
    assert result.verdict == (f"PASSED ({result.lost:,} of {result.sent:,} messages (100.0%) lost, "
                              "within lost.rate<=100%)")


def test_the_documented_option_turns_the_integrity_thresholds_off():
    code, out, _ = cli("load", "--devices", "4", "--clients", "2", "--duration", "0.5", "--quiet",
                       "--no-integrity-thresholds", "--fake-option=--fault=misroute-relays")
    assert code == 0, out
    assert "thresholds:" not in out
    assert re.search(r"^PASSED \([\d,]+ of [\d,]+ messages \(100\.0%\) reached the wrong device, "
                     r"not judged \(integrity thresholds off\)\)$", out, re.M), out


def test_a_clean_run_holds_every_default_and_passes():
    code, out, _ = cli("load", "--devices", "4", "--clients", "2", "--duration", "0.5", "--quiet")
    assert code == 0, out
    assert ("ok    misrouted==0, misattributed==0, lost==0, corrupted==0, duplicated==0, reordered==0, rejected==0, "
            "unanswered==0, unregistered==0   "
            "(integrity, by default)") in out
    assert "errors: none" in out and out.rstrip().splitlines()[-1] == "PASSED"


# -- the verdict in every face ---------------------------------------------------------------------

def _part(**counters):
    return {"counters": counters, "histograms": {}, "errors": {}, "series": [], "duration": 8.0,
            "aborted": None, "workers": []}


def test_the_verdict_line_names_each_kind_that_failed_the_first_with_its_share():
    result = apply(LoadResult([_part(sent=353_112, delivered=189_425, misrouted=163_677, lost=10)]),
                   parse_all([]))
    assert result.verdict == "FAILED: 163,677 of 353,112 messages (46.4%) reached the wrong device; 10 lost"
    assert result.exit_code == 1


def test_the_verdict_says_a_run_that_could_not_be_carried_out_and_what_went_wrong_meanwhile():
    part = _part(sent=100, delivered=90, lost=10)
    part["aborted"] = "the TPS dropped every device connection"
    result = apply(LoadResult([part]), parse_all([]))
    assert result.exit_code == 2
    assert result.verdict == ("FAILED: the run could not be carried out: the TPS dropped every device "
                              "connection; 10 of 100 messages (10.0%) lost")


def test_json_csv_and_the_result_carry_the_verdict(tmp_path):
    result = tpsharness.load(window=2, fake_args=["--fault=misroute-relays"], **SHORT)
    result.write_json(str(tmp_path / "run.json"))
    data = json.loads((tmp_path / "run.json").read_text())
    assert data["verdict"] == result.verdict and data["exit_code"] == 1
    assert data["counters"]["misrouted"] == result.misrouted
    assert {"expression": "misrouted==0", "held": False, "observed": str(result.misrouted),
            "default": True} in data["thresholds"]
    again = LoadResult.read_json(str(tmp_path / "run.json"))
    assert again.verdict == result.verdict and again.exit_code == 1
    paths = result.write_csv(str(tmp_path / "run"))
    rows = dict(csv.reader(open(paths[2], encoding="utf-8")))
    assert rows["verdict"] == result.verdict and rows["misrouted"] == str(result.misrouted)
    assert rows["exit_code"] == "1"


# -- the accounting itself ----------------------------------------------------------------------------

def test_a_message_misrouted_ahead_of_its_stream_is_not_lost_and_makes_nothing_reordered():
    streams = Streams([0], [0])
    streams.next_seq[0] = 4
    streams.misroute(0, 2, 5)          # #2 reached device 5, before #1 reached its device
    for seq in (0, 1, 3):
        assert streams.receive(0, seq)
    assert (streams.delivered, streams.misrouted, streams.reordered, streams.duplicated) == (3, 1, 0, 0)
    assert streams.arrived == 4 and streams.never_arrived() == []
    assert streams.examples["misrouted"] == [(0, 2, 5, -1)]


def test_a_late_arrival_at_its_own_device_is_reordered_and_a_second_one_duplicated():
    streams = Streams([0], [0])
    streams.next_seq[0] = 3
    for seq in (0, 2, 1, 1):
        streams.receive(0, seq)
    assert (streams.delivered, streams.reordered, streams.duplicated) == (3, 1, 1)
    assert streams.examples["reordered"] == [(0, 1, 0, 2)]


def test_messages_that_arrived_nowhere_are_named_by_stream_and_number():
    streams = Streams([0, 0], [0, 1])
    streams.next_seq[:] = [3, 2]
    streams.receive(0, 0)
    streams.receive(0, 2)
    assert streams.never_arrived() == [(0, 1), (1, 0), (1, 1)]


def _shape(text):
    """Lines as a summary lays them out, whatever the figures and uuids."""
    shapes = []
    for line in text.splitlines():
        if re.match(r"^ +\d+s  sent", line) or line.startswith(("$ ", "    --", "tpsharness load: no HOST")):
            continue
        line = re.sub(r"load-[0-9a-f]{6}-(app|cam)-\d+", r"\1", line)
        shapes.append(re.sub(r" +", " ", re.sub(r"\d[\d,.]*", "N", line)).strip())
    return shapes


def test_the_misrouting_example_in_the_docs_is_what_a_run_prints():
    docs = open(os.path.join(ROOT, "docs", "load.md"), encoding="utf-8").read()
    example = docs.split("## Misrouted messages", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    code, out, _ = cli("load", "--devices", "40", "--clients", "4", "--window", "8", "--duration", "0.5",
                       FIELD)
    assert code == 1
    assert _shape(out) == _shape(example.split("$ echo $?")[0])


def test_a_tps_that_refuses_every_message_fails_the_run():
    result = tpsharness.load(window=2, fake_args=["--fault=forget-registrations"], **SHORT)
    assert result.rejected == result.sent > 0 and result.delivered == 0 and result.lost == 0
    assert result.exit_code == 1
    assert result.verdict == f"FAILED: {result.sent:,} of {result.sent:,} messages (100.0%) refused by the TPS"


def test_the_progress_line_counts_what_went_wrong_so_far():
    import io
    from tpsharness.load.output import Progress
    from test_load import snapshot
    out = io.StringIO()
    progress = Progress(out, tty=False)
    progress(dict(snapshot(1), total_wrong=1234))
    assert "errors 1  WRONG 1,234  relay p99" in out.getvalue()


def test_a_copy_of_a_misrouted_or_misattributed_message_frees_no_window_slot():
    """Only a message's first arrival anywhere lets its sender send again: a TPS that
    relays each message twice must not let a closed loop send twice the window."""
    from tpsharness.load.accounting import Streams
    streams = Streams(client_of=[0], device_of=[0])
    streams.next_seq[0] = 2
    assert streams.misroute(0, 0, 1) is True and streams.misroute(0, 0, 1) is False
    assert streams.misattribute(0, 1, 0) is True and streams.misattribute(0, 1, 0) is False
    assert (streams.arrived, streams.misrouted, streams.misattributed) == (2, 2, 2)
