"""What the exporter tests share: an exporter server on a thread, GETs, metric values."""

import re
import threading
import urllib.error
import urllib.request

import pytest

from tpsharness.checker import CheckResult
from tpsharness.exporter import Exporter, make_exporter_server


@pytest.fixture
def exporter_at():
    """Start an exporter server on a free loopback port: ``start(server_options=...,
    **exporter_options)`` gives its base URL, the Exporter and the server."""
    servers = []

    def start(server_options=None, **options):
        exporter = Exporter(**options)
        server = make_exporter_server(exporter, "127.0.0.1", 0, **(server_options or {}))
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append((server, thread))
        return f"{getattr(server, 'scheme', 'http')}://127.0.0.1:{server.server_address[1]}", exporter, server

    yield start
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(5)


def get(url, headers=None, timeout=15, context=None):
    """(status, body text) of a GET, error statuses included."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def metric(text, name, labels=""):
    match = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
    assert match, f"{name}{labels} not in:\n{text}"
    return float(match.group(1))


def held_checker():
    """A checker that blocks until released: (checker, started event, release event)."""
    held, release = threading.Event(), threading.Event()

    def slow_check(host, port, **options):
        held.set()
        release.wait(10)
        return CheckResult(False, "connect", "held", host, port, "", 0, {"total": 1.0})

    return slow_check, held, release
