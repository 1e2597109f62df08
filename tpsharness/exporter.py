"""``tpsharness exporter``: check a TPS on every scrape, as blackbox_exporter probes.

``GET /probe?target=HOST:PORT[&timeout=S]`` runs one check and answers its metrics;
``GET /metrics`` answers the exporter's own. Built on prometheus_client (the
``exporter`` extra): its registry, its text encoder, its threading WSGI server.

A scraper must not be able to pile work up on the exporter, so every probe's
timeout is capped (and shortened to fit Prometheus's own scrape timeout, which it
sends in a header), and at most ``max_concurrent`` probes run at once: a probe
over that gets 503 at once instead of waiting.
"""

from __future__ import annotations

import math
import socket
import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, ThreadingWSGIServer
from prometheus_client.registry import Collector

from .checker import STAGES, CheckResult, check
from .defaults import HOST, PORT, TIMEOUT
from .errors import BadProbe, InvalidArgument
from .net import format_address, parse_address

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

DEFAULT_LISTEN = (HOST, 9115)     # blackbox_exporter's port, on loopback
DEFAULT_PROBE_TIMEOUT = TIMEOUT
MAX_PROBE_TIMEOUT = 60.0              # no scrape may hold a probe longer than this
SCRAPE_TIMEOUT_OFFSET = 0.5           # leave Prometheus this much of its own timeout
DEFAULT_MAX_CONCURRENT = 8


class Checker(Protocol):
    """What runs a probe's check: ``check`` itself, or a stand-in in tests."""

    def __call__(self, host: str, port: int, *, timeout: float) -> CheckResult: ...


def parse_target(text: str) -> tuple[str, int]:
    """'host', 'host:port' or '[v6]:port' as (host, port); BadProbe otherwise."""
    try:
        return parse_address(text, PORT)
    except ValueError as error:
        raise BadProbe(f"target {error}") from None


class ProbeResultCollector(Collector):
    """One CheckResult as the tps_probe_* metrics (the names ``check --prometheus`` prints)."""

    def __init__(self, result: CheckResult) -> None:
        self.result = result

    def collect(self) -> Iterator[GaugeMetricFamily]:
        result = self.result
        yield GaugeMetricFamily("tps_probe_success", "Whether the TPS check succeeded (1) or failed (0).",
                                value=1 if result.ok else 0)
        durations = GaugeMetricFamily("tps_probe_duration_seconds", "How long each stage of the check took.",
                                      labels=["stage"])
        for stage in STAGES:
            if stage in result.timings:
                durations.add_metric([stage], round(result.timings[stage] / 1000, 6))
        yield durations
        yield GaugeMetricFamily("tps_probe_total_duration_seconds", "How long the whole check took.",
                                value=round(result.timings.get("total", 0) / 1000, 6))
        stages = GaugeMetricFamily("tps_probe_failed_stage",
                                   "The stage at which the check failed (1); 0 for the others.",
                                   labels=["stage"])
        for stage in STAGES:
            stages.add_metric([stage], 1 if result.stage == stage else 0)
        yield stages


class Exporter:
    """The WSGI application: /probe, /metrics and an index page."""

    def __init__(self, *, max_timeout: float = MAX_PROBE_TIMEOUT,
                 max_concurrent: int = DEFAULT_MAX_CONCURRENT,
                 default_timeout: float = DEFAULT_PROBE_TIMEOUT, checker: Checker = check) -> None:
        if not (math.isfinite(max_timeout) and max_timeout > 0):
            raise InvalidArgument(f"max_timeout must be a positive number of seconds, not {max_timeout!r}")
        if max_concurrent < 1:
            raise InvalidArgument(f"max_concurrent must be at least 1, not {max_concurrent!r}")
        self.max_timeout = max_timeout
        self.default_timeout = min(default_timeout, max_timeout)
        self.max_concurrent = max_concurrent
        self._check = checker
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self.registry = CollectorRegistry()
        self.probes = Counter("tps_exporter_probes", "Probes run, by result (success, failure).",
                              ["result"], registry=self.registry)
        self.rejected = Counter("tps_exporter_rejected_probes",
                                "Probes refused: a bad request (400) or too many at once (503).",
                                ["reason"], registry=self.registry)
        self.in_flight = Gauge("tps_exporter_probes_in_flight", "Probes running now.",
                               registry=self.registry)
        self._metrics_app = make_wsgi_app(self.registry)

    def probe_timeout(self, query: dict[str, list[str]], scrape_timeout: str | None) -> float:
        """The probe's deadline: asked for, capped, and within Prometheus's own timeout."""
        timeout = self.default_timeout
        if "timeout" in query:
            text = query["timeout"][-1]
            try:
                timeout = float(text)
            except ValueError:
                raise BadProbe(f"timeout {text!r} is not a number of seconds") from None
            if not (math.isfinite(timeout) and timeout > 0):
                raise BadProbe(f"timeout must be a positive number of seconds, not {text!r}")
        if scrape_timeout:
            try:
                scrape = float(scrape_timeout)
            except ValueError:
                scrape = math.nan
            if math.isfinite(scrape) and scrape > 0:
                # The offset leaves time to answer; a scrape timeout shorter than it
                # still bounds the probe, to half of it, rather than being ignored.
                budget = scrape - SCRAPE_TIMEOUT_OFFSET
                timeout = min(timeout, budget if budget > 0 else scrape / 2)
        return min(timeout, self.max_timeout)

    def probe(self, query: dict[str, list[str]], scrape_timeout: str | None = None) -> bytes:
        """Run one check as the query asks; the metrics text. BadProbe for a bad query."""
        targets = query.get("target")
        if not targets or not targets[-1].strip():
            raise BadProbe("the target parameter is required: /probe?target=HOST:PORT")
        host, port = parse_target(targets[-1])
        timeout = self.probe_timeout(query, scrape_timeout)
        result = self._check(host, port, timeout=timeout)
        self.probes.labels("success" if result.ok else "failure").inc()
        registry = CollectorRegistry()
        registry.register(ProbeResultCollector(result))
        return generate_latest(registry)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/metrics":
            return self._metrics_app(environ, start_response)
        if path == "/probe":
            return self._serve_probe(environ, start_response)
        if path == "/":
            body = (f"<html><head><title>tpsharness exporter</title></head><body>"
                    f"<h1>tpsharness exporter</h1><p><a href=\"/probe?target={HOST}:{PORT}\">"
                    f"/probe?target=HOST:PORT</a> checks a TPS; <a href=\"/metrics\">/metrics</a> "
                    f"are the exporter's own.</p></body></html>").encode()
            start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
            return [body]
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found: try /probe?target=HOST:PORT or /metrics\n"]

    def _serve_probe(self, environ: WSGIEnvironment,
                     start_response: StartResponse) -> Iterable[bytes]:
        query = parse_qs(environ.get("QUERY_STRING", ""))
        if not self._slots.acquire(blocking=False):
            self.rejected.labels("busy").inc()
            start_response("503 Service Unavailable", [("Content-Type", "text/plain; charset=utf-8")])
            return [f"too many probes at once (the limit is {self.max_concurrent}); try again later\n".encode()]
        self.in_flight.inc()
        try:
            body = self.probe(query, environ.get("HTTP_X_PROMETHEUS_SCRAPE_TIMEOUT_SECONDS"))
        except BadProbe as error:
            self.rejected.labels("bad request").inc()
            start_response("400 Bad Request", [("Content-Type", "text/plain; charset=utf-8")])
            return [f"{error}\n".encode()]
        finally:
            self.in_flight.dec()
            self._slots.release()
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_PLAIN_0_0_4)])
        return [body]


class _QuietHandler(WSGIRequestHandler):
    """wsgiref logs every request to stderr; a scraped exporter would fill logs."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


def make_exporter_server(exporter: Exporter, host: str = HOST,
                         port: int = DEFAULT_LISTEN[1]) -> ThreadingWSGIServer:
    """Bind (IPv4 or IPv6, as ``host`` is) and return the server; serve_forever() serves."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET

    class Server(ThreadingWSGIServer):
        address_family = family

    return make_server(host, port, exporter, Server, handler_class=_QuietHandler)


def serve(listen: tuple[str, int] = DEFAULT_LISTEN, *, max_timeout: float = MAX_PROBE_TIMEOUT,
          max_concurrent: int = DEFAULT_MAX_CONCURRENT) -> int:
    """Serve until SIGINT or SIGTERM (the ``tpsharness exporter`` command); exit status."""
    import signal
    import sys

    host, port = listen
    exporter = Exporter(max_timeout=max_timeout, max_concurrent=max_concurrent)
    try:
        server = make_exporter_server(exporter, host, port)
    except OSError as error:
        print(f"tpsharness exporter: cannot listen on {format_address(listen)}: "
              f"{error.strerror or error}",
              file=sys.stderr)
        return 2
    stop = threading.Event()

    def request_stop(*_: object) -> None:
        if not stop.is_set():
            stop.set()
            threading.Thread(target=server.shutdown, daemon=True).start()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, request_stop)
    bound_host, bound_port = server.socket.getsockname()[:2]      # server_address, as a tuple
    shown = f"[{bound_host}]" if ":" in str(bound_host) else bound_host
    print(f"tpsharness exporter listening on http://{shown}:{bound_port}/ "
          f"(/probe?target=HOST:PORT, /metrics)", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0
