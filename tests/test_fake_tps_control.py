"""fake_tps under control of the test thread: configure() and clear() while it serves,
the fault catalogue, and the bounds of what it holds for a peer."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

import pytest

from conftest import Wire, wait_until
from fake_tps import FAULTS, FakeTPS
from fake_tps.__main__ import make_parser
from fake_tps.faults import Fault, Hooks
from tpsharness.defaults import HOST, KEEPALIVE_INTERVAL, PORT
from tpsharness.protocol import RegisterReply, private_data_request, register_request, reply

WireFactory = Callable[..., Wire]


def _hold_register_replies(fake: FakeTPS, monkeypatch: pytest.MonkeyPatch
                           ) -> tuple[threading.Event, threading.Event]:
    """Make the server thread stop inside its answer to a register (after the table
    changed, before the reply is built) until ``release`` is set; ``entered`` says it
    is there."""
    entered, release = threading.Event(), threading.Event()
    build = fake._register_reply

    def held(error_num: str = "200", error_string: str = "Success OK") -> bytes:
        entered.set()
        assert release.wait(10), "the test never released the server"
        return build(error_num, error_string)

    monkeypatch.setattr(fake, "_register_reply", held)
    return entered, release


def _asked_of_the_server(fake: FakeTPS, monkeypatch: pytest.MonkeyPatch,
                         call: Callable[[], None]) -> threading.Thread:
    """Run ``call`` on a thread of its own; return once it has either finished or
    asked the server to run it (woken its control task)."""
    progress = threading.Event()
    wake = fake.wake

    def wake_and_tell() -> None:
        wake()
        progress.set()

    monkeypatch.setattr(fake, "wake", wake_and_tell)

    def run() -> None:
        call()
        progress.set()

    caller = threading.Thread(target=run, daemon=True)
    caller.start()
    assert progress.wait(10), "the call neither finished nor reached the server"
    return caller


def test_configure_from_another_thread_waits_for_the_request_being_answered(
        fake: FakeTPS, wire: WireFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before, configure() set the options from the calling thread at once, so a request
    being answered saw some of them old and some new; now it runs in the server's thread
    between two requests, as clear() does."""
    entered, release = _hold_register_replies(fake, monkeypatch)
    device = wire()
    device.send(register_request("cam-1"))
    assert entered.wait(10), "the register never reached the server"
    caller = _asked_of_the_server(fake, monkeypatch, lambda: fake.configure(keepalive_interval=7))
    release.set()
    answered = device.message()
    assert isinstance(answered, RegisterReply) and answered.keepalive_interval == str(KEEPALIVE_INTERVAL)
    caller.join(10)
    assert not caller.is_alive()
    assert fake.keepalive_interval == 7
    device.send(register_request("cam-1"))       # a heartbeat, answered under the new option
    heartbeat = device.message()
    assert isinstance(heartbeat, RegisterReply) and heartbeat.keepalive_interval == "7"


def test_clear_from_another_thread_waits_for_the_request_being_answered(
        fake: FakeTPS, wire: WireFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    entered, release = _hold_register_replies(fake, monkeypatch)
    device = wire()
    device.send(register_request("cam-1"))
    assert entered.wait(10), "the register never reached the server"
    caller = _asked_of_the_server(fake, monkeypatch, fake.clear)
    release.set()
    assert isinstance(device.message(), RegisterReply)     # answered whole, then closed
    assert device.closed_by_server()
    caller.join(10)
    assert not caller.is_alive()
    assert fake.registered() == set() and fake.stats.registrations == 0


def test_configure_and_clear_while_traffic_flows_lose_nothing_and_mix_no_options(fake: FakeTPS) -> None:
    """A client keeps sending private data (404s) while the test thread switches two
    options that shape one reply together and clears the fake: every reply is in one
    of the two configured forms (never NUL-ended field form: nul_replies new with
    strict_http old), no call fails, and the last configuration holds."""
    field, strict = reply(404), reply(404, strict=True)
    stop, flowing = threading.Event(), threading.Event()
    replies: list[bytes] = []
    errors: list[BaseException] = []

    def traffic() -> None:
        request = private_data_request("app-traffic", "nobody", b"x")
        try:
            while not stop.is_set():
                stream = b""
                with socket.create_connection(fake.address, timeout=10) as connection:
                    try:
                        while not stop.is_set():
                            connection.sendall(request)
                            wanted = stream.count(b"\r\n\r\n") + 1
                            while stream.count(b"\r\n\r\n") < wanted:
                                data = connection.recv(4096)
                                if not data:
                                    raise ConnectionError("closed by clear()")
                                stream += data
                            flowing.set()
                    except (ConnectionError, OSError):
                        pass            # clear() closed it: connect again
                # the last reply may be cut by the close, and a NUL may trail it
                replies.extend(b"HTTP/1.1 " + part for part in stream.split(b"HTTP/1.1 ")[1:])
        except BaseException as error:      # reported below, never lost
            errors.append(error)

    client = threading.Thread(target=traffic, daemon=True)
    client.start()
    try:
        assert flowing.wait(10), "no traffic"
        for round_ in range(150):
            fake.configure(nul_replies=True, strict_http=True)
            fake.configure(nul_replies=False, strict_http=False)
            if round_ % 25 == 0:
                fake.clear()
    finally:
        stop.set()
        client.join(20)
    assert not client.is_alive() and errors == []
    whole = [data for data in replies if data.endswith((b"\r\n\r\n", b"\r\n\r\n\x00"))]
    assert len(whole) > 1
    mixed = [data for data in whole if data not in (field, strict)]
    assert mixed == [], f"replies in a form nobody configured: {mixed[:3]}"
    assert (fake.nul_replies, fake.strict_http) == (False, False)
    fake.clear()
    assert fake.stats.open_connections == 0 and fake.registered() == set()


def test_configure_and_clear_run_at_once_when_the_fake_is_not_serving() -> None:
    fake = FakeTPS()
    try:
        fake.configure(faults=["silent"], reply_delay=1)
        fake.clear()
        assert fake.faults == {"silent"} and fake.reply_delay == 1
    finally:
        fake.close()


def test_a_call_made_as_serve_ends_is_run_not_left_waiting(fake: FakeTPS) -> None:
    fake.request_stop()
    fake.configure(keepalive_interval=9)     # queued or run at once: it returns either way
    assert fake.keepalive_interval == 9


# -- the fault catalogue -------------------------------------------------------------------------

HOOKS = ("accept", "message", "reply", "register_reply", "register", "second_serial",
         "private_data", "relay", "takeover")


@pytest.mark.parametrize("name", list(FAULTS))
def test_every_fault_is_one_entry_that_says_what_it_does_and_changes_a_hook(name: str) -> None:
    fault = FAULTS[name]
    assert isinstance(fault, Fault) and fault.description.strip()
    changed = [hook for hook in HOOKS if getattr(fault, hook) is not None]
    assert changed, f"{name} changes nothing"
    hooks = Hooks.of(frozenset([name]))
    for hook in changed:
        active = getattr(hooks, hook)
        assert active == getattr(fault, hook) or active == (getattr(fault, hook),)


def test_no_fault_no_hook() -> None:
    assert Hooks.of(frozenset()) == Hooks()


def test_relay_faults_combine_in_catalogue_order(fake: FakeTPS, wire: WireFactory) -> None:
    """corrupt-relays and duplicate-relays together: two corrupted copies, one relay."""
    device, client = wire(), wire()
    device.send(register_request("cam-1"))
    assert isinstance(device.message(), RegisterReply)
    fake.configure(faults=["duplicate-relays", "corrupt-relays"])
    request = private_data_request("app", "cam-1", b"hello")
    client.send(request)
    assert client.message().status == 200
    corrupted = request[:-1] + b"n"              # "o" ^ 0x01
    received = b""
    while len(received) < 2 * len(request):
        received += device.raw()
    assert received == corrupted * 2
    assert fake.stats.relays == 1


# -- bounds --------------------------------------------------------------------------------------

def test_a_peer_whose_requests_waiting_out_reply_delay_pass_max_output_is_dropped_and_counted(
        fake: FakeTPS, wire: WireFactory) -> None:
    """Before, every request waiting out reply_delay stayed queued, however many a
    peer sent: the queue grew without bound."""
    fake.configure(reply_delay=60, max_output=64 * 1024)
    polite = wire()
    polite.send(private_data_request("app-polite", "nobody", b"x"))
    assert wait_until(lambda: len(fake._delayed) == 1), "the polite request was never read"
    flood = wire()
    flood.send(private_data_request("app-flood", "nobody", b"x" * 1000) * 100)
    assert flood.closed_by_server()
    assert fake.stats.dropped == 1
    assert any("reply_delay" in text for text in fake.events_since(0))
    assert len(fake._delayed) == 1          # the polite request still waits; the flood's went
    assert not polite.closed_by_server(0.1)


def test_configure_takes_exactly_the_options_by_name() -> None:
    """Typed keywords (mypy sees a misspelt option), the same names as the constructor's."""
    import inspect

    from fake_tps import OPTIONS
    configurable = [name for name in inspect.signature(FakeTPS.configure).parameters if name != "self"]
    constructed = [name for name in inspect.signature(FakeTPS).parameters
                   if name not in ("host", "port", "on_event")]
    assert configurable == constructed == list(OPTIONS)


def test_configure_leaves_the_options_not_given_and_can_clear_check_auth(fake: FakeTPS) -> None:
    fake.configure(check_auth="1234", reply_delay=0.5)
    fake.configure(check_auth=None)
    assert fake.check_auth is None and fake.reply_delay == 0.5


# -- defaults ------------------------------------------------------------------------------------

def test_the_command_line_and_the_api_share_the_defaults() -> None:
    parser = make_parser()
    assert (parser.get_default("host"), parser.get_default("port"),
            parser.get_default("keepalive_interval")) == (HOST, PORT, KEEPALIVE_INTERVAL)
    shown = " ".join(parser.format_help().split())
    assert f"default {HOST}" in shown and f"default {KEEPALIVE_INTERVAL}" in shown
    fake = FakeTPS()
    try:
        assert fake.address[0] == HOST and fake.keepalive_interval == KEEPALIVE_INTERVAL
    finally:
        fake.close()
