"""Exact replays: a recorded scenario fails where the server under replay sends what the
recorded one did not (a second ack, a relay, bytes, a close), naming the step, and
passes against a server that does what was recorded, however fast it is."""

import pytest

from conftest import wait_until
from fake_tps import FakeTPS
from tpsharness.errors import ScenarioError, ScenarioFailure, TPSError
from tpsharness.exact import MOVES, SETTLE
from tpsharness.harness import Harness
from tpsharness.protocol import private_data_request, register_reply, register_request, reply
from tpsharness.record.conversation import ACTOR_CLOSED, RECEIVED, SENT, Conversation
from tpsharness.record.writer import write_scenarios
from tpsharness.scenario import MAX_PENDING, MAX_TOTAL_SECONDS, Scenario, json_schema, play, validate

from test_record import proxy_to

ACK = reply(200)
REGISTER_OK = register_reply(utc_time=1)


def scenario(steps, actors=None, **top):
    data = {"actors": actors or {"cam": {"kind": "device"}, "app": {"kind": "client"}}, "steps": steps, **top}
    return Scenario("<exact>", validate(data))


def served(**options):
    """A fake of its own for one test, serving on a thread."""
    return FakeTPS(**options).start_in_thread()


REGISTERED = [{"do": "connect", "actor": "cam"}, {"do": "register", "actor": "cam"},
              {"do": "expect_reply", "actor": "cam", "status": 200}, {"do": "connect", "actor": "app"}]


def twice_then(*after):
    """The client pipelines two private data; the steps expect ONE ack (as from a field
    server) and both relays, wait, then do ``after``."""
    return [*REGISTERED, {"do": "send", "actor": "app", "to": "cam", "times": 2},
            {"do": "expect_reply", "actor": "app", "status": 200},
            {"do": "expect_receipt", "actor": "cam"}, {"do": "expect_receipt", "actor": "cam"},
            {"do": "wait", "seconds": 0.3}, *after]


# -- the player ---------------------------------------------------------------------------------

def test_an_exact_replay_fails_at_the_next_move_when_an_actor_holds_a_second_ack():
    steps = twice_then({"do": "send", "actor": "app", "to": "cam", "payload": "again"})
    fake = FakeTPS()
    with fake.start_in_thread(), pytest.raises(ScenarioFailure) as failure:
        play(scenario(steps, exact=True), fake.address)
    message = str(failure.value)
    assert message.startswith("<exact>: step 10 (app: send)\n")
    assert "step 6 (app: expect_reply)" in failure.value.arrived      # the step after which it came
    assert "for app" in failure.value.arrived and "200 OK" in failure.value.arrived
    assert "the recorded TPS had sent no more by this step" in failure.value.expected


def test_without_exact_the_same_scenario_passes_as_it_always_did(fake):
    play(scenario(twice_then({"do": "send", "actor": "app", "to": "cam", "payload": "again"})), fake.address)


def test_pending_allows_what_was_on_its_way_and_a_later_step_takes(fake):
    again = {"do": "send", "actor": "app", "to": "cam", "payload": "again"}
    later = [{"do": "expect_reply", "actor": "app", "status": 200}] * 2 + [{"do": "expect_receipt", "actor": "cam"}]
    play(scenario(twice_then({**again, "pending": {"app": 1}}, *later), exact=True), fake.address)
    with pytest.raises(ScenarioFailure) as failure:
        play(scenario(twice_then(again, *later), exact=True), fake.address)
    assert str(failure.value).startswith("<exact>: step 10 (app: send)")


def test_an_extra_relay_is_found_at_the_next_move_of_any_actor():
    steps = [*REGISTERED, {"do": "send", "actor": "app", "to": "cam", "payload": "once"},
             {"do": "expect_reply", "actor": "app", "status": 200},
             {"do": "expect_receipt", "actor": "cam", "payload": "once"},
             {"do": "wait", "seconds": 0.3},
             {"do": "send", "actor": "app", "to": "cam", "payload": "next"}]
    with served(faults=["duplicate-relays"]) as fake, pytest.raises(ScenarioFailure) as failure:
        play(scenario(steps, exact=True), fake.address)
    assert str(failure.value).startswith("<exact>: step 9 (app: send)")     # the client's move...
    assert "for cam" in failure.value.arrived and "POST /PrivateData" in failure.value.arrived   # ...the device's


def test_a_reply_where_none_was_recorded_is_found():
    recorded_against_a_silent_tps = [{"do": "connect", "actor": "cam"}, {"do": "register", "actor": "cam"},
                                     {"do": "wait", "seconds": 0.3}, {"do": "close", "actor": "cam"}]
    played = scenario(recorded_against_a_silent_tps, exact=True)
    with served(faults=["silent"]) as silent:
        play(played, silent.address)
    with served() as default, pytest.raises(ScenarioFailure) as failure:
        play(played, default.address)
    assert str(failure.value).startswith("<exact>: step 4 (cam: close)")
    assert "HTTP/1.1 200 OK" in failure.value.arrived
    assert "arrived after step 2 (cam: register)" in failure.value.arrived


def test_bytes_that_are_not_a_message_are_found():
    steps = [{"do": "connect", "actor": "app"}, {"do": "send", "actor": "app", "to": "nobody"},
             {"do": "wait", "seconds": 0.3}, {"do": "close", "actor": "app"}]
    with served(faults=["silent"]) as silent:
        play(scenario(steps, exact=True), silent.address)
    with served(faults=["garbage-replies"]) as garbage, pytest.raises(ScenarioFailure) as failure:
        play(scenario(steps, exact=True), garbage.address)
    assert str(failure.value).startswith("<exact>: step 4 (app: close)")
    assert "bytes that are not a TPS message" in failure.value.arrived


def test_a_close_the_recording_did_not_have_is_found_and_an_expected_one_is_not():
    steps = [*REGISTERED[:3], {"do": "wait", "seconds": 0.5}, {"do": "heartbeat", "actor": "cam"}]
    with served(idle_timeout=0.05) as hasty:
        with pytest.raises(ScenarioFailure) as failure:
            play(scenario(steps, exact=True), hasty.address)
        assert str(failure.value).startswith("<exact>: step 5 (cam: heartbeat)")
        assert "the TPS closed the connection" in failure.value.arrived
        play(scenario([*steps[:4], {"do": "expect_close", "actor": "cam"}], exact=True), hasty.address)


def test_a_close_a_later_step_expects_may_come_before_another_actors_move():
    steps = [*REGISTERED[:3], {"do": "wait", "seconds": 0.5}, {"do": "connect", "actor": "app"},
             {"do": "expect_close", "actor": "cam"}, {"do": "close", "actor": "app"}]
    with served(idle_timeout=0.3) as hasty:
        play(scenario(steps, exact=True), hasty.address)    # cam's close came before app connected


def test_the_end_is_checked_after_a_short_settle(fake):
    steps = [*REGISTERED, {"do": "send", "actor": "app", "to": "cam", "times": 2},
             {"do": "expect_reply", "actor": "app", "status": 200},
             {"do": "expect_receipt", "actor": "cam"}, {"do": "expect_receipt", "actor": "cam"}]
    with pytest.raises(ScenarioFailure) as failure:
        play(scenario(steps, exact=True), fake.address)
    assert str(failure.value).startswith("<exact>: the end, after step 8 (cam: expect_receipt)")
    assert f"{SETTLE:g} s after the last" in failure.value.expected and "for app" in failure.value.arrived
    play(scenario(steps, exact=True, pending_at_end={"app": 1}), fake.address)


def test_what_arrives_after_the_actor_closed_is_no_ones(fake):
    steps = [*REGISTERED, {"do": "send", "actor": "app", "to": "cam"},
             {"do": "close", "actor": "app", "pending": {"app": 1, "cam": 1}},   # the ack and relay may come first
             {"do": "expect_receipt", "actor": "cam"}, {"do": "wait", "seconds": 0.1},
             {"do": "close", "actor": "cam"}]
    for _ in range(5):
        play(scenario(steps, exact=True), fake.address)


# -- the format -----------------------------------------------------------------------------------

@pytest.mark.parametrize("top, step_pending, error", [
    ({}, {"app": 1}, "'pending' belongs to an exact scenario"),
    ({"exact": True}, {"nobody": 1}, "'pending' names no actor: 'nobody'"),
    ({"exact": True}, {"app": 0}, f"'pending' 'app' must be a count from 1 to {MAX_PENDING}, not 0"),
    ({"exact": True}, {"app": True}, "must be a count from 1"),
    ({"exact": True}, {"app": MAX_PENDING + 1}, f"not {MAX_PENDING + 1}"),
    ({"exact": "yes"}, None, "'exact' must be true or false"),
    ({"pending_at_end": {"app": 1}}, None, "top level: 'pending_at_end' belongs to an exact scenario"),
])
def test_the_loader_knows_exact_and_pending(top, step_pending, error):
    step = {"do": "connect", "actor": "app", **({"pending": step_pending} if step_pending else {})}
    with pytest.raises(ScenarioError) as refused:
        validate({"actors": {"app": {"kind": "client"}}, "steps": [step], **top}, "f.json")
    assert error in str(refused.value)


def test_the_schema_knows_exact_and_pending():
    schema = json_schema()
    top = schema["properties"]
    assert top["exact"]["type"] == "boolean"
    counts = {"type": "integer", "minimum": 1, "maximum": MAX_PENDING}
    assert top["pending_at_end"]["additionalProperties"] == counts
    steps = {s["properties"]["do"]["const"]: s["properties"] for s in top["steps"]["items"]["oneOf"]}
    assert {do for do, fields in steps.items() if "pending" in fields} == set(MOVES)
    assert steps["send"]["pending"]["additionalProperties"] == counts


def test_pending_goes_only_on_moves():
    with pytest.raises(ScenarioError) as refused:
        validate({"exact": True, "actors": {"app": {"kind": "client"}},
                  "steps": [{"do": "expect_reply", "actor": "app", "pending": {"app": 1}}]}, "f.json")
    assert "unknown field 'pending'" in str(refused.value)


# -- recording ------------------------------------------------------------------------------------

def field_incident(address):
    """An app pipelining two private data to one camera, then two to two cameras, each
    time waiting for a second ack that a field server never sends."""
    harness = Harness(address, timeout=3)
    try:
        cam1, cam2 = harness.device(), harness.device()
        app = harness.raw()
        for first, second in ((cam1, cam1), (cam1, cam2)):
            app.send_raw(private_data_request("app-7", first.uuid, b"snapshot") +
                         private_data_request("app-7", second.uuid, b"reboot"))
            assert app.next_reply().status == 200
            with pytest.raises(TPSError):
                app.next_reply(timeout=0.3)          # the second ack: never, from a field server
        return cam1, cam2
    finally:
        harness.close()


def test_a_field_recording_of_pipelined_private_data_replays_against_the_field_and_fails_against_the_default():
    field = FakeTPS(profile="field")
    with field.start_in_thread(), proxy_to(field.address) as proxy:
        field_incident(proxy.address)
        wait_until(lambda: sum(1 for e in proxy.conversation.events if e[2] == "actor closed") == 3)
    [written] = write_scenarios(proxy.conversation)
    data = written.data
    assert data["exact"] is True
    steps = data["steps"]
    bursts = [n for n, step in enumerate(steps, 1) if step["do"] == "send_raw"]
    assert len(bursts) == 2 and "pending" not in steps[bursts[1] - 1]     # nothing was on its way
    ack = max(n for n in range(1, bursts[1]) if steps[n - 1]["do"] == "expect_reply")
    recorded = Scenario("<field incident>", data)
    with served(profile="field") as again:
        play(recorded, again.address)                   # the field server does it again
    with served() as default, pytest.raises(ScenarioFailure) as failure:
        play(recorded, default.address)
    assert str(failure.value).startswith(f"<field incident>: step {bursts[1]} (client1: send_raw)\n")
    assert f"step {ack} (client1: expect_reply)" in failure.value.arrived
    assert "for client1" in failure.value.arrived and "200 OK" in failure.value.arrived


def pipelined_conversation():
    """A camera registered; an app writes two private data in two writes without reading,
    and both acks (and relays) come after the second write."""
    cam_register = register_request("cam-1")
    one, two = private_data_request("app-1", "cam-1", b"one"), private_data_request("app-1", "cam-1", b"two")
    conversation = Conversation()
    conversation.open(0.0, 1, "10.0.0.2:40001")
    conversation.add(0.001, 1, SENT, cam_register)
    conversation.add(0.002, 1, RECEIVED, REGISTER_OK)
    conversation.open(0.003, 2, "10.0.0.2:40002")
    conversation.add(0.004, 2, SENT, one)
    conversation.add(0.0041, 2, SENT, two)
    conversation.add(0.0042, 1, RECEIVED, one)
    conversation.add(0.0043, 2, RECEIVED, ACK)
    conversation.add(0.0044, 1, RECEIVED, two)
    conversation.add(0.0045, 2, RECEIVED, ACK)
    return conversation


def test_the_recorder_marks_an_ack_and_a_relay_on_their_way_at_a_pipelined_write_as_pending(fake):
    [written] = write_scenarios(pipelined_conversation())
    writes = [step for step in written.data["steps"] if step["do"] == "send"]
    assert "pending" not in writes[0]
    assert writes[1]["pending"] == {"client1": 1, "device1": 1}
    recorded = Scenario("<pipelined>", written.data)
    for _ in range(20):                 # however soon the fake answers the first write
        play(recorded, fake.address)


def test_a_relay_on_its_way_when_another_actor_moves_is_pending():
    conversation = pipelined_conversation()
    heartbeat = register_request("cam-1", cseq="2")
    events = conversation.events
    events.insert(6, (0.00415, 1, SENT, heartbeat))         # the camera heartbeats before the relays
    events.append((0.0046, 1, RECEIVED, REGISTER_OK))
    [written] = write_scenarios(conversation)
    [beat] = [step for step in written.data["steps"] if step["do"] == "heartbeat"]
    assert beat["pending"] == {"client1": 2, "device1": 2}      # both acks, both relays


def test_a_request_the_tps_never_answered_is_pending_at_the_end_only_when_the_recording_stopped_soon_after():
    conversation = pipelined_conversation()
    conversation.events[:] = conversation.events[:6]       # both writes, nothing back
    conversation.ended = 0.05
    [written] = write_scenarios(conversation)
    assert written.data["pending_at_end"] == {"client1": 2, "device1": 2}
    conversation.ended = 5.0
    [written] = write_scenarios(conversation)
    assert "pending_at_end" not in written.data


def test_a_cut_scenario_allows_at_its_end_what_the_session_received_after_the_cut():
    conversation = Conversation()
    conversation.open(0.0, 1, "10.0.0.2:40001")
    conversation.add(0.001, 1, SENT, register_request("cam-1"))
    conversation.add(0.002, 1, RECEIVED, REGISTER_OK)
    conversation.open(0.003, 2, "10.0.0.2:40002")
    late = MAX_TOTAL_SECONDS - 1
    conversation.add(late, 2, SENT, private_data_request("app-1", "cam-1", b"late"))
    conversation.add(late + 0.001, 2, RECEIVED, ACK)
    conversation.add(late + 2, 1, SENT, register_request("cam-1", cseq="2"))   # its wait passes the bound
    conversation.add(late + 3, 1, RECEIVED, private_data_request("app-1", "cam-1", b"late"))
    [written] = write_scenarios(conversation)
    assert written.cut and written.data["pending_at_end"] == {"device1": 1}
    assert [step["do"] for step in written.data["steps"]][-3:] == ["send", "expect_reply", "wait"]


def test_a_hand_made_conversation_without_an_end_uses_its_last_event():
    conversation = Conversation()
    conversation.open(0.0, 1, "10.0.0.2:40001")
    conversation.add(0.001, 1, SENT, register_request("cam-1"))
    assert conversation.end == 0.001
    [written] = write_scenarios(conversation)
    assert written.data["pending_at_end"] == {"device1": 1}
    assert [step["do"] for step in written.data["steps"]] == ["connect", "register"]
    assert written.data["actors"]["device1"] == {"kind": "device", "uuid": "cam-1"}


def half_a_reply(end_with_a_close):
    """A camera that got half its register reply (then nothing), heartbeat a second
    later, and closed or not."""
    conversation = Conversation()
    conversation.open(0.0, 1, "10.0.0.2:40001")
    conversation.add(0.001, 1, SENT, register_request("cam-1"))
    conversation.add(0.002, 1, RECEIVED, REGISTER_OK[:len(REGISTER_OK) // 2])
    conversation.add(0.2, 1, SENT, register_request("cam-1", cseq="2"))
    if end_with_a_close:
        conversation.add(0.4, 1, ACTOR_CLOSED)
    conversation.ended = 5.0
    return conversation


def test_a_message_the_tps_never_finished_is_pending_from_its_first_byte_on():
    [closed] = write_scenarios(half_a_reply(end_with_a_close=True))
    moves = {step["do"]: step.get("pending") for step in closed.data["steps"]}
    assert moves == {"connect": None, "register": None, "heartbeat": {"device1": 1}, "wait": None,
                     "close": {"device1": 1}}
    assert "pending_at_end" not in closed.data
    [left_open] = write_scenarios(half_a_reply(end_with_a_close=False))
    assert left_open.data["pending_at_end"] == {"device1": 1}
    with served(faults=["half-reply"]) as halving:
        for _ in range(3):
            play(Scenario("<half>", closed.data), halving.address)
    with served() as default, pytest.raises(ScenarioFailure) as failure:
        play(Scenario("<half>", closed.data), default.address)
    assert str(failure.value).startswith("<half>: step 6 (device1: close)")   # two whole replies
    assert "at most 1 more for device1" in failure.value.expected
