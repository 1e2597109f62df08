"""The pytest plugin: options, fixtures, and scenario files collected as tests.

Installed with tpsharness (entry point ``pytest11``). Without ``--tps``, one bundled
fake TPS is started per session (per xdist worker) on a free loopback port and
cleared before each test that uses it.
"""

import os

import pytest

from .errors import ScenarioError
from .harness import Harness
from .scenario import ScenarioFailure, load, play

DEFAULT_TIMEOUT = 5.0


def pytest_addoption(parser):
    group = parser.getgroup("tpsharness", "TPS (TransProxy Server) under test")
    group.addoption("--tps", metavar="HOST:PORT", default=None,
                    help="the TPS to test (env TPS_ADDRESS); default: the bundled fake TPS")
    group.addoption("--tps-timeout", metavar="SECONDS", type=float, default=None,
                    help=f"deadline for each TPS operation (env TPS_TIMEOUT; default {DEFAULT_TIMEOUT:g})")


def parse_address(text):
    """'host:port' or '[v6]:port' as (host, port); pytest.UsageError otherwise."""
    host, colon, port = text.strip().rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise pytest.UsageError(f"--tps / TPS_ADDRESS expects HOST:PORT, got {text!r}")
    return host, int(port)


class TPSSession:
    """The server under test for this session: a real one, or the bundled fake."""

    def __init__(self, config):
        option = config.getoption("tps") or os.environ.get("TPS_ADDRESS")
        self.real_address = parse_address(option) if option else None
        timeout = config.getoption("tps_timeout")
        if timeout is None and os.environ.get("TPS_TIMEOUT"):
            try:
                timeout = float(os.environ["TPS_TIMEOUT"])
            except ValueError:
                raise pytest.UsageError(f"TPS_TIMEOUT must be seconds, got {os.environ['TPS_TIMEOUT']!r}") from None
        self.timeout = timeout or DEFAULT_TIMEOUT
        self.fake = None
        self._running = None

    @property
    def is_fake(self):
        return self.real_address is None

    def address(self):
        """The server's (host, port); starts the bundled fake on first use."""
        if self.real_address is not None:
            return self.real_address
        if self.fake is None:
            from fake_tps.server import FakeTPS
            self.fake = FakeTPS()
            self._running = self.fake.start_in_thread()
            self._running.__enter__()
        return self.fake.address

    def close(self):
        if self._running is not None:
            self._running.__exit__(None, None, None)
            self._running = None


def _session(config):
    return config.stash[_SESSION_KEY]


_SESSION_KEY = pytest.StashKey()


def pytest_configure(config):
    config.stash[_SESSION_KEY] = TPSSession(config)
    config.addinivalue_line("markers", "tps_fake_only: needs the bundled fake TPS; skipped with --tps")


def pytest_unconfigure(config):
    if _SESSION_KEY in config.stash:
        config.stash[_SESSION_KEY].close()


def pytest_report_header(config):
    session = _session(config)
    if session.is_fake:
        return "tps: the bundled fake TPS (give --tps HOST:PORT to test a real one)"
    host, port = session.real_address
    return f"tps: {host}:{port} (timeout {session.timeout:g} s)"


def pytest_runtest_setup(item):
    if item.get_closest_marker("tps_fake_only") and not _session(item.config).is_fake:
        pytest.skip("needs the bundled fake TPS (the test sets its options or reads its state)")


# -- fixtures ---------------------------------------------------------------------------------

@pytest.fixture
def tps_address(request):
    """(host, port) of the TPS under test; the bundled fake is cleared first."""
    session = _session(request.config)
    address = session.address()
    if session.fake is not None:
        session.fake.clear()
        request.node.stash[_EVENTS_KEY] = (session.fake, session.fake.event_seq)
    return address


@pytest.fixture
def fake_tps(request):
    """A fresh fake TPS for this test alone, serving on a thread: configure faults with
    ``fake_tps.configure(faults=[...])``, read ``registered()`` and ``stats``."""
    from fake_tps.server import FakeTPS
    server = FakeTPS()
    request.node.stash[_EVENTS_KEY] = (server, server.event_seq)
    with server.start_in_thread():
        yield server


@pytest.fixture
def tps(request, tps_address):
    """A Harness of simulated devices and clients against the TPS under test, with a
    blocking API: ``tps.device()``, ``tps.client()``, ``tps.raw()``, ``tps.check()``.
    Everything it opened is closed at teardown, even when the test fails."""
    harness = Harness(tps_address, timeout=_session(request.config).timeout)
    yield harness
    harness.close()


_EVENTS_KEY = pytest.StashKey()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Show what the fake TPS saw (protocol errors, drops) beside a test's outcome."""
    if call.when == "call" and _EVENTS_KEY in item.stash:
        server, since = item.stash[_EVENTS_KEY]
        events = server.events_since(since)
        if events:
            item.add_report_section("call", "fake TPS", "\n".join(events))
    yield


# -- scenario files ---------------------------------------------------------------------------

def pytest_collect_file(file_path, parent):
    if (file_path.suffix == ".json" and file_path.parent.name == "fixtures"
            and not file_path.name.endswith(".schema.json")):
        return ScenarioFile.from_parent(parent, path=file_path)
    return None


class ScenarioFile(pytest.File):
    """A scenario file: one test item, named after the file."""

    def collect(self):
        yield ScenarioItem.from_parent(self, name=self.path.stem)


class ScenarioItem(pytest.Item):
    """Replays one scenario against the TPS under test (or a fake set up as it asks)."""

    def runtest(self):
        scenario = load(self.path)
        session = _session(self.config)
        if scenario.fake_options is not None:
            if not session.is_fake:
                pytest.skip("the scenario sets fake TPS options; it runs only against the bundled fake")
            from fake_tps.server import FakeTPS
            try:
                server = FakeTPS(**scenario.fake_options)
            except (TypeError, ValueError) as error:
                raise ScenarioError(f"{self.path}: top level: bad 'fake' options: {error}") from None
            with server.start_in_thread():
                self.stash[_EVENTS_KEY] = (server, server.event_seq)
                play(scenario, server.address, timeout=session.timeout)
            return
        address = session.address()
        if session.fake is not None:
            session.fake.clear()
            self.stash[_EVENTS_KEY] = (session.fake, session.fake.event_seq)
        play(scenario, address, timeout=session.timeout)

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, (ScenarioFailure, ScenarioError)):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, None, f"scenario {self.name}"
