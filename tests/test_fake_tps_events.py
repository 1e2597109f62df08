"""The fake's structured events: one per connect, register, heartbeat, relay, reply,
close (with its reason) and fault fired, each naming the peer, with short fields,
handed to ``FakeTPS(on_event=...)`` as they happen."""

import threading

from conftest import Wire, wait_until
from fake_tps import Event, FakeTPS
from tpsharness.protocol import private_data_request, register_request


class Recorder:
    def __init__(self):
        self.events = []
        self.lock = threading.Lock()

    def __call__(self, event):
        with self.lock:
            self.events.append(event)

    def kinds(self):
        with self.lock:
            return [(event.kind, dict(event.fields)) for event in self.events]


def _serving(**options):
    recorder = Recorder()
    server = FakeTPS(on_event=recorder, **options)
    return server, recorder


def test_a_conversation_gives_one_event_per_thing_done_in_order():
    server, recorder = _serving()
    with server.start_in_thread():
        device, client = Wire(server.address), Wire(server.address)
        device.send(register_request("cam-ev"))
        assert device.message().ok
        device.send(register_request("cam-ev"))
        assert device.message().ok
        client.send(private_data_request("app-ev", "cam-ev", b"hello"))
        assert client.message().status == 200
        assert device.message().body == b"hello"
        client.close()
        assert wait_until(lambda: any(kind == "close" for kind, _ in recorder.kinds()))
        device.close()
    events = recorder.events
    device_address = events[0].peer
    seen = [(event.kind, dict(event.fields)) for event in events if event.kind != "close"]
    assert seen[:2] == [("connect", {}), ("connect", {})]
    assert seen[2:] == [
        ("register", {"serial": "cam-ev"}), ("reply", {"status": 200}),
        ("heartbeat", {"serial": "cam-ev"}), ("reply", {"status": 200}),
        ("reply", {"status": 200}),
        ("relay", {"to": device_address, "src": "app-ev", "dest": "cam-ev",
                   "bytes": len(private_data_request("app-ev", "cam-ev", b"hello"))}),
    ]
    closes = [event for event in events if event.kind == "close"]
    assert closes[0].fields == {"reason": "closed by the peer"}
    assert all(isinstance(event, Event) and ":" in event.peer for event in events)


def test_a_close_names_its_reason():
    server, recorder = _serving()
    with server.start_in_thread():
        old, new = Wire(server.address), Wire(server.address)
        old.send(register_request("cam-twice"))
        assert old.message().ok
        new.send(register_request("cam-twice"))
        assert new.message().ok
        assert old.closed_by_server()
        new.send(register_request("cam-other"))        # a second, unknown serial
        assert new.closed_by_server()
    reasons = [event.fields["reason"] for event in recorder.events if event.kind == "close"]
    assert reasons[0].startswith("replaced: cam-twice taken by ")
    assert reasons[1] == "a second, unknown serial"


def test_a_fault_that_fires_is_an_event_naming_the_fault():
    server, recorder = _serving(faults=["drop-relays"])
    with server.start_in_thread():
        device, client = Wire(server.address), Wire(server.address)
        device.send(register_request("cam-fault"))
        assert device.message().ok
        client.send(private_data_request("app", "cam-fault", b"lost"))
        assert client.message().status == 200
    faults = [dict(event.fields) for event in recorder.events if event.kind == "fault"]
    assert faults == [{"hook": "relay", "faults": "drop-relays"}]
    assert not [event for event in recorder.events if event.kind == "relay"]


def test_fields_are_short_whatever_a_peer_sends():
    server, recorder = _serving(max_body=2_000_000)
    with server.start_in_thread():
        device = Wire(server.address)
        device.send(register_request("s" * 15000))
        assert device.message().ok
    [register] = [event for event in recorder.events if event.kind == "register"]
    assert len(register.fields["serial"]) < 100 and register.fields["serial"].startswith("sss")
    assert register.to_dict()["kind"] == "register" and "time" in register.to_dict()


def test_a_listener_that_fails_costs_its_events_not_the_server():
    def broken(event):
        raise RuntimeError("a bug in the listener")

    server = FakeTPS(on_event=broken)
    with server.start_in_thread():
        device = Wire(server.address)
        device.send(register_request("cam-after-a-broken-listener"))
        assert device.message().ok
        assert server.on_event is None
        device.close()


def test_without_a_listener_the_text_events_are_kept_as_before(fake, wire):
    assert fake.on_event is None
    client = wire()
    client.send(b"GET / HTTP/1.1\r\n\r\n")
    assert client.message().status == 400
    assert any(text.startswith("400 to ") for text in fake.events_since(0))


def test_the_text_events_stay_bounded():
    server = FakeTPS()
    with server.start_in_thread():
        client = Wire(server.address)
        for _ in range(300):
            client.send(b"GET / HTTP/1.1\r\n\r\n")
            assert client.message().status == 400
        client.close()
    assert len(server.events) == 200
