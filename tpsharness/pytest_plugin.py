"""The pytest plugin: options, fixtures, and scenario files collected as tests.

Installed with tpsharness (entry point ``pytest11``). Without ``--tps``, one bundled
fake TPS is started per session (per xdist worker) on a free loopback port and
cleared before each test that uses it.

Scenario files are collected only when named ``test_*.tps.json``: the plugin is
installed wherever tpsharness is, and must not claim other projects' JSON files.

Tests marked ``destructive`` may kill the server; against a real TPS they run only
with ``--tps-destructive``, and last. Every test that used the session's TPS ends
by checking that it still accepts connections: the test during which it stopped
fails saying so, and every later test that needs it is skipped.
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Generator, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from . import kernel, net
from .defaults import TIMEOUT
from .errors import ScenarioError
from .harness import Harness
from .scenario import Scenario, ScenarioFailure, load, play

if TYPE_CHECKING:
    from pluggy import Result
    # pytest exports neither name; its own Node.repr_failure is annotated with them
    from _pytest._code.code import TerminalRepr, TracebackStyle

    from fake_tps import FakeTPS

DEFAULT_TIMEOUT = TIMEOUT
MAX_TIMEOUT = 600.0         # seconds; a larger --tps-timeout is a typo, not a wish
PROBE_TIMEOUT = 3.0         # seconds a survival probe waits for the TPS to accept
DYING_WAIT = 1.0            # after a failed test: seconds its connection must stay open
SCENARIO_SUFFIX = ".tps.json"
DESTRUCTIVE_HELP = "may kill the TPS under test; against a real TPS it runs only with " \
                   "--tps-destructive (or TPS_DESTRUCTIVE=1), after every other test"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("tpsharness", "TPS (TransProxy Server) under test")
    group.addoption("--tps", metavar="HOST:PORT", default=None,
                    help="the TPS to test (env TPS_ADDRESS); default: the bundled fake TPS")
    group.addoption("--tps-timeout", metavar="SECONDS", default=None,
                    help=f"deadline for each TPS operation, at most {MAX_TIMEOUT:g} "
                         f"(env TPS_TIMEOUT; default {DEFAULT_TIMEOUT:g})")
    group.addoption("--speed", metavar="FACTOR", default=None,
                    help="replay scenario files FACTOR times faster (waits and pauses divided by "
                         "it; env TPS_SPEED; default: each file's own \"speed\", else 1)")
    group.addoption("--tps-destructive", action="store_true", default=None,
                    help="also run the tests marked destructive, which may kill the TPS, after "
                         "every other test (env TPS_DESTRUCTIVE=1; always on with the bundled fake)")


def parse_address(text: str) -> tuple[str, int]:
    """'host:port' or '[v6]:port' as (host, port); pytest.UsageError otherwise."""
    host, colon, port = text.strip().rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not colon or not host or "[" in host or "]" in host or not (port.isdigit() and port.isascii()) \
            or not 0 < int(port) < 65536:
        raise pytest.UsageError(f"--tps / TPS_ADDRESS expects HOST:PORT, got {text!r}")
    return host, int(port)


def parse_timeout(text: str, source: str) -> float:
    """Seconds for --tps-timeout / TPS_TIMEOUT: finite, > 0, at most MAX_TIMEOUT."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds <= MAX_TIMEOUT:          # False for NaN too
        raise pytest.UsageError(f"{source} must be seconds, more than 0 and at most "
                                f"{MAX_TIMEOUT:g}; got {text!r}")
    return seconds


def parse_speed(text: str, source: str) -> float:
    """A replay speed factor for --speed / TPS_SPEED, within the scenario's bounds."""
    from .scenario import SPEED_BOUNDS
    try:
        speed = float(text)
    except ValueError:
        speed = math.nan
    if not SPEED_BOUNDS[0] <= speed <= SPEED_BOUNDS[1]:        # False for NaN too
        raise pytest.UsageError(f"{source} must be a number from {SPEED_BOUNDS[0]:g} to "
                                f"{SPEED_BOUNDS[1]:g}; got {text!r}")
    return speed


def parse_flag(text: str, source: str) -> bool:
    """'1' or '0' (or empty) for an environment switch; pytest.UsageError otherwise."""
    if text.strip() not in ("", "0", "1"):
        raise pytest.UsageError(f"{source} must be 1 or 0, got {text!r}")
    return text.strip() == "1"


class TPSSession:
    """The server under test for this session: a real one, or the bundled fake.

    ``state`` follows the server: "unknown" until the first test that uses it,
    "alive" once it accepted a connection, "unreachable" if it never did (its tests
    then fail on their own), "dead" once it stopped accepting (``died_during`` names
    the test).
    """

    def __init__(self, config: pytest.Config) -> None:
        option = config.getoption("tps") or os.environ.get("TPS_ADDRESS")
        self.real_address: tuple[str, int] | None = parse_address(option) if option else None
        timeout = config.getoption("tps_timeout")
        if timeout is not None:
            self.timeout: float = parse_timeout(timeout, "--tps-timeout")
        elif os.environ.get("TPS_TIMEOUT"):
            self.timeout = parse_timeout(os.environ["TPS_TIMEOUT"], "TPS_TIMEOUT")
        else:
            self.timeout = DEFAULT_TIMEOUT
        speed = config.getoption("speed") or os.environ.get("TPS_SPEED")
        self.speed: float | None = parse_speed(speed, "--speed" if config.getoption("speed")
                                               else "TPS_SPEED") if speed else None
        destructive = config.getoption("tps_destructive")
        if destructive is None:
            destructive = parse_flag(os.environ.get("TPS_DESTRUCTIVE", ""), "TPS_DESTRUCTIVE")
        self.destructive: bool = destructive or self.is_fake
        self.fake: FakeTPS | None = None
        self._running: AbstractContextManager[FakeTPS] | None = None
        self.state = "unknown"
        self.died_during: str | None = None

    @property
    def is_fake(self) -> bool:
        return self.real_address is None

    def address(self) -> tuple[str, int]:
        """The server's (host, port); starts the bundled fake on first use."""
        if self.real_address is not None:
            return self.real_address
        if self.fake is None:
            from fake_tps import FakeTPS
            self.fake = FakeTPS()
            self._running = self.fake.start_in_thread()
            self._running.__enter__()
        return self.fake.address

    def accepts(self, *, held: float = 0.0) -> str | None:
        """None if the TPS accepts a connection now (and keeps it ``held`` seconds), else
        why not ("Connection refused")."""
        refusal = self._refusal(held)
        return None if refusal is None else refusal.reason

    def _refusal(self, held: float = 0.0) -> Refusal | None:
        """Two tries, so a momentarily full accept queue is not taken for a dead server."""
        refusal = unreachable(self.address(), min(self.timeout, PROBE_TIMEOUT), held=held)
        if refusal is not None:
            time.sleep(0.1)
            refusal = unreachable(self.address(), min(self.timeout, PROBE_TIMEOUT), held=held)
        return refusal

    def refusal_at_start(self) -> str | None:
        """For a real TPS: the one line that stops the session before its first test
        when the TPS refuses, does not resolve or does not accept; None when it is there."""
        if self.real_address is None:
            return None
        refusal = self._refusal()
        if refusal is None:
            return None
        host, port = self.real_address
        return f"tpsharness: the TPS at {net.format_address((host, port))} {refusal}; nothing was run"

    def close(self) -> None:
        if self._running is not None:
            self._running.__exit__(None, None, None)
            self._running = None


class Refusal:
    """Why a TPS cannot be reached, said two ways: ``reason`` as the survival probe
    reports it ("Connection refused"), ``str()`` as a sentence after "the TPS at X"."""

    def __init__(self, sentence: str, reason: str) -> None:
        self.sentence = sentence
        self.reason = reason

    def __str__(self) -> str:
        return self.sentence


def unreachable(address: tuple[str, int], timeout: float, *, held: float = 0.0) -> Refusal | None:
    """None if the TPS at ``address`` accepts a connection within ``timeout`` (and, with
    ``held``, keeps it open that long: a dying server's listener still takes connections
    into its backlog, and only its exit resets them), else why not. The same resolution
    and connect as the harness's (net.connect)."""
    async def connect() -> Refusal | None:
        sock = await net.connect(address, timeout=timeout)
        try:
            if held > 0 and not await sock.recv(1, timeout=held):
                return Refusal("closed a new connection at once", "closed at once")
        except TimeoutError:
            pass            # silent and open: what a live TPS does with an idle connection
        except OSError as error:
            reason = os.strerror(error.errno) if error.errno else str(error)
            return Refusal(f"reset a new connection ({reason})", reason)
        finally:
            sock.close()
        return None

    try:
        return kernel.run(connect(), timeout=timeout + held + 1)
    except socket.gaierror as error:
        sentence = str(error.strerror or error).removeprefix(f"connect to {net.format_address(address)}: ")
        if sentence.startswith("cannot resolve ") and sentence.endswith(")"):
            why = sentence.rpartition(" (")[2][:-1]       # "cannot resolve 'h' (why)"
            return Refusal(f"does not resolve ({why})", why)
        return Refusal(f"does not resolve: {sentence}", sentence)
    except ConnectionRefusedError:
        return Refusal("refused the connection", "Connection refused")
    except TimeoutError:
        return Refusal(f"did not accept a connection within {timeout:g} s", "timed out")
    except OSError as error:
        reason = os.strerror(error.errno) if error.errno else str(error)
        return Refusal(f"cannot be reached ({reason})", reason)


def _session(config: pytest.Config) -> TPSSession:
    return config.stash[_SESSION_KEY]


_SESSION_KEY: pytest.StashKey[TPSSession] = pytest.StashKey()


def pytest_configure(config: pytest.Config) -> None:
    session = config.stash[_SESSION_KEY] = TPSSession(config)
    config.addinivalue_line("markers", "tps_fake_only: needs the bundled fake TPS; skipped with --tps")
    config.addinivalue_line("markers", f"destructive: {DESTRUCTIVE_HELP}")
    if _runs_tests(config):
        refusal = session.refusal_at_start()    # one line, instead of a failure per test
        if refusal is not None:
            raise pytest.UsageError(refusal)
        if session.real_address is not None:
            session.state = "alive"


def _runs_tests(config: pytest.Config) -> bool:
    """Will this process run tests (not only list them, show help, or be an xdist
    worker, whose controller has checked the TPS already)?"""
    option = config.option
    listing = any(getattr(option, name, False) for name in
                  ("help", "version", "collectonly", "showfixtures", "show_fixtures_per_test", "markers"))
    return not listing and not hasattr(config, "workerinput")


def pytest_unconfigure(config: pytest.Config) -> None:
    if _SESSION_KEY in config.stash:
        config.stash[_SESSION_KEY].close()


def pytest_report_header(config: pytest.Config) -> str:
    session = _session(config)
    if session.real_address is None:        # the bundled fake
        return "tps: the bundled fake TPS (give --tps HOST:PORT to test a real one)"
    host, port = session.real_address
    destructive = "destructive tests run last" if session.destructive else \
        "destructive tests skipped; --tps-destructive runs them"
    return f"tps: {host}:{port} (timeout {session.timeout:g} s; {destructive})"


def _is_destructive(item: pytest.Item) -> bool:
    if isinstance(item, ScenarioItem):
        return item.scenario_destructive()
    return item.get_closest_marker("destructive") is not None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Destructive tests last (when they run at all), so that a server they kill has
    already answered everything else."""
    session = _session(config)
    destructive = [item for item in items if _is_destructive(item)]
    if not destructive:
        return
    if not session.destructive:
        for item in destructive:
            item.add_marker(pytest.mark.skip(reason=f"destructive: {DESTRUCTIVE_HELP}"))
        return
    chosen = set(map(id, destructive))
    items[:] = [item for item in items if id(item) not in chosen] + destructive


def _uses_session_tps(item: pytest.Item) -> bool:
    """Does ``item`` talk to the session's TPS (the one that can die for everyone)?"""
    if isinstance(item, ScenarioItem):
        return item.uses_session_tps()
    return "tps_address" in getattr(item, "fixturenames", ())


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    session = _session(item.config)
    if item.get_closest_marker("tps_fake_only") and not session.is_fake:
        pytest.skip("needs the bundled fake TPS (the test sets its options or reads its state)")
    if not _uses_session_tps(item):
        return
    if session.state == "dead":     # reported at the test's location, as a skip mark is
        raise pytest.skip.Exception(f"the TPS died during {session.died_during}",
                                    _use_item_location=True)
    if session.state == "unknown":
        session.state = "alive" if session.accepts() is None else "unreachable"


# -- fixtures ---------------------------------------------------------------------------------

@pytest.fixture
def tps_address(request: pytest.FixtureRequest) -> tuple[str, int]:
    """(host, port) of the TPS under test; the bundled fake is cleared first."""
    session = _session(request.config)
    address = session.address()
    if session.fake is not None:
        session.fake.clear()
        request.node.stash[_EVENTS_KEY] = (session.fake, session.fake.event_seq)
    return address


@pytest.fixture
def fake_tps(request: pytest.FixtureRequest) -> Iterator[FakeTPS]:
    """A fresh fake TPS for this test alone, serving on a thread: configure faults with
    ``fake_tps.configure(faults=[...])``, read ``registered()`` and ``stats``."""
    from fake_tps import FakeTPS
    server = FakeTPS()
    request.node.stash[_EVENTS_KEY] = (server, server.event_seq)
    with server.start_in_thread():
        yield server


@pytest.fixture
def tps(request: pytest.FixtureRequest, tps_address: tuple[str, int]) -> Iterator[Harness]:
    """A Harness of simulated devices and clients against the TPS under test, with a
    blocking API: ``tps.device()``, ``tps.client()``, ``tps.raw()``, ``tps.check()``.
    Everything it opened is closed at teardown, even when the test fails."""
    harness = Harness(tps_address, timeout=_session(request.config).timeout)
    yield harness
    harness.close()


# the fake TPS a test used, and its event number when the test began
_EVENTS_KEY: pytest.StashKey[tuple[FakeTPS, int]] = pytest.StashKey()


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                               ) -> Generator[None, Result[pytest.TestReport], None]:
    """Show what the fake TPS saw (protocol errors, drops) beside a test's outcome, and
    fail the test during which the session's TPS stopped accepting connections."""
    if call.when == "call" and _EVENTS_KEY in item.stash:
        server, since = item.stash[_EVENTS_KEY]
        events = server.events_since(since)
        if events:
            item.add_report_section("call", "fake TPS", "\n".join(events))
    session = _session(item.config)
    death = None
    if call.when == "call" and session.state == "alive" and _uses_session_tps(item):
        # After a failure against a real TPS, a new connection must also stay open a
        # moment: a server that is aborting (writing a core, or a sanitizer's report)
        # still accepts into its backlog until it exits.
        failed = call.excinfo is not None and not call.excinfo.errisinstance(
            (pytest.skip.Exception, pytest.xfail.Exception))
        held = DYING_WAIT if failed and not session.is_fake else 0.0
        reason = session.accepts(held=held)
        if reason is not None:
            session.state, session.died_during = "dead", item.nodeid
            host, port = session.address()
            death = (f"the TPS at {host}:{port} stopped accepting connections during this test "
                     f"({reason}): it died")
    outcome = yield
    if death is not None:
        report = outcome.get_result()
        if report.failed:
            report.sections.append(("TPS", death))
        else:
            report.outcome, report.longrepr = "failed", death
            if hasattr(report, "wasxfail"):
                del report.wasxfail


# -- scenario files ---------------------------------------------------------------------------

def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> ScenarioFile | None:
    """``test_*.tps.json`` files, wherever pytest looks: the plugin's own naming
    convention (as tavern's test_*.tavern.yaml), so no other JSON is ever taken."""
    if file_path.name.startswith("test_") and file_path.name.endswith(SCENARIO_SUFFIX):
        return ScenarioFile.from_parent(parent, path=file_path)
    return None


class ScenarioFile(pytest.File):
    """A scenario file: one test item, named after the file."""

    def collect(self) -> Iterator[ScenarioItem]:
        yield ScenarioItem.from_parent(self, name=self.path.name.removesuffix(SCENARIO_SUFFIX))


class ScenarioItem(pytest.Item):
    """Replays one scenario against the TPS under test (or a fake set up as it asks)."""

    _scenario: Scenario | None = None

    def scenario(self) -> Scenario:
        """The loaded scenario (ScenarioError if the file is malformed)."""
        if self._scenario is None:
            self._scenario = load(self.path)
        return self._scenario

    def _peek(self) -> Scenario | None:
        try:
            return self.scenario()
        except ScenarioError:
            return None         # runtest reports it

    def scenario_destructive(self) -> bool:
        scenario = self._peek()
        return scenario is not None and scenario.destructive

    def uses_session_tps(self) -> bool:
        scenario = self._peek()
        return scenario is not None and scenario.fake_options is None

    def runtest(self) -> None:
        scenario = self.scenario()
        session = _session(self.config)
        if scenario.fake_options is not None:
            if not session.is_fake:
                pytest.skip("the scenario sets fake TPS options; it runs only against the bundled fake")
            from fake_tps import FakeTPS
            try:
                server = FakeTPS(**scenario.fake_options)
            except (TypeError, ValueError) as error:
                raise ScenarioError(f"{self.path}: top level: bad 'fake' options: {error}") from None
            with server.start_in_thread():
                self.stash[_EVENTS_KEY] = (server, server.event_seq)
                play(scenario, server.address, timeout=session.timeout, speed=session.speed)
            return
        address = session.address()
        if session.fake is not None:
            session.fake.clear()
            self.stash[_EVENTS_KEY] = (session.fake, session.fake.event_seq)
        play(scenario, address, timeout=session.timeout, speed=session.speed)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException],
                     style: TracebackStyle | None = None) -> str | TerminalRepr:
        if isinstance(excinfo.value, (ScenarioFailure, ScenarioError)):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"scenario {self.name}"     # a line, so skips can point here
