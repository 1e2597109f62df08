"""What the exporter answers: /probe, /metrics and an index page, without the I/O.

``Exporter.handle`` turns a parsed request into a Response at once (the index, 404,
/metrics, a 400 for a bad probe, a 503 past the cap) or into a ProbeJob: an admitted
probe, holding one of ``max_concurrent`` slots, that the server runs on a thread of
its own (name resolution and the check block). A scraper cannot pile up work: a
probe's timeout is capped and cut to Prometheus's own scrape timeout, and one more
probe than the cap gets 503 at once instead of waiting.

A probe resolves its target once, keeps the addresses the allowlist allows, and
checks the TPS at exactly those addresses. With an allowlist, a name no name rule
allows gets 403 whether or not it resolves, and the answer never names what it
resolved to (that goes to the log).
"""

from __future__ import annotations

import logging
import math
import os
import re
import socket
import threading
from collections.abc import Iterator, Sequence
from itertools import islice
from dataclasses import dataclass, field
from time import monotonic
from typing import Protocol
from urllib.parse import parse_qs

from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, choose_encoder
from prometheus_client.registry import Collector

from .. import net
from ..checker import STAGES, CheckResult, check
from ..defaults import AUTH_CODE, HOST, PORT
from ..endpoint import format_ms
from ..errors import BadProbe, ConnectError, ForbiddenTarget, InvalidArgument
from ..report import CRITICAL, OK, probe_metrics
from ..text import printable, quote_text
from .allowlist import AllowList
from .config import DEFAULT_MODULE, MODULE_KEYS, Module, load_modules

MAX_PROBE_TIMEOUT = 60.0              # no scrape may hold a probe longer than this
MIN_PROBE_TIMEOUT = 0.001             # a probe given less than this could not even connect
SCRAPE_TIMEOUT_OFFSET = 0.5           # leave Prometheus this much of its own timeout
DEFAULT_MAX_CONCURRENT = 8
PROBE_PARAMETERS = ("target", "module", "timeout", "debug")
MAX_TARGET = 300                      # characters of a target: a host name has at most 253
SHOWN_ADDRESSES = 4                   # resolved addresses a refusal logs
DEBUG_TRANSCRIPT_LINES = 400          # transcript lines a debug page shows at most
TEXT = "text/plain; charset=utf-8"
log = logging.getLogger(__name__)


class Checker(Protocol):
    """What runs a probe's check: ``check`` itself, or a stand-in in tests."""

    def __call__(self, host: str, port: int, *, timeout: float, auth_code: str, payload: bytes,
                 strict: bool, addresses: Sequence[str]) -> CheckResult: ...


@dataclass(frozen=True)
class Request:
    """A request as the server parsed it: header names in lower case."""

    method: str
    path: str
    query: str = ""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Response:
    """What to answer: status, body, content type and extra headers."""

    status: int
    body: bytes
    content_type: str = TEXT
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def text(cls, status: int, line: str, *headers: tuple[str, str]) -> Response:
        return cls(status, f"{line}\n".encode(), TEXT, headers)


@dataclass(frozen=True)
class ProbePlan:
    """A probe, checked and ready to run: what a /probe query asked for."""

    host: str
    port: int
    module: Module
    timeout: float
    debug: bool = False
    timeout_note: str = ""        # how the timeout was arrived at, for the debug page


def parse_target(text: str) -> tuple[str, int]:
    """'host', 'host:port' or '[v6]:port' as (host, port); BadProbe for anything that
    is no target (a bad port, a NUL, a name IDNA cannot encode, 10 kB)."""
    if len(text) > MAX_TARGET:
        raise BadProbe(f"the target is {len(text)} characters long; a host name has at most "
                       f"{net.MAX_NAME}")
    try:
        host, port = net.parse_address(text, PORT)
    except ValueError as error:
        raise BadProbe(f"target {error}") from None
    problem = net.host_problem(host)
    if problem is not None:
        raise BadProbe(f"target {quote_text(text, 100)}: {problem}")
    return host, port


class ProbeResultCollector(Collector):
    """One CheckResult as the tps_probe_* metrics (report.probe_metrics: the names and
    meanings ``check --prometheus`` prints)."""

    def __init__(self, result: CheckResult) -> None:
        self.result = result

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state = OK if self.result.ok else CRITICAL
        for metric in probe_metrics(self.result, state):
            family = GaugeMetricFamily(metric.name, metric.help,
                                       labels=[metric.label] if metric.label else None)
            for label, value in metric.samples:
                if metric.label:
                    family.add_metric([label or ""], value)
                else:
                    family.add_metric([], value)
            yield family


def metrics_text(result: CheckResult) -> bytes:
    registry = CollectorRegistry()
    registry.register(ProbeResultCollector(result))
    return generate_latest(registry)


class ProbeJob:
    """An admitted probe: it holds a slot until ``run`` (on a thread) returns, or until
    ``release`` for a probe that will not run (the exporter is stopping)."""

    def __init__(self, exporter: Exporter, plan: ProbePlan) -> None:
        self.exporter = exporter
        self.plan = plan
        self._released = False

    @property
    def deadline(self) -> float:
        """Seconds the probe may take: its timeout plus the check's grace, and time to
        resolve the name (which no timeout bounds)."""
        return self.plan.timeout + 1.5

    def run(self) -> Response:
        try:
            return self.exporter.run_probe(self.plan)
        finally:
            self.release()

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.exporter.release_slot()


def _scrape_timeout(text: str) -> float | None:
    """The seconds an X-Prometheus-Scrape-Timeout-Seconds header allows, or None for
    one that sets no limit (0, negative, infinite: blackbox_exporter then uses the
    module's timeout); BadProbe for one that is not a number (blackbox_exporter
    refuses those too), NaN included."""
    try:
        scrape = float(text)
    except ValueError:
        scrape = math.nan
    if math.isnan(scrape):
        raise BadProbe(f"X-Prometheus-Scrape-Timeout-Seconds {quote_text(text.strip(), 40)} "
                       "is not a number of seconds")
    return scrape if 0 < scrape < math.inf else None


class Exporter:
    """The exporter's answers and its own metrics."""

    def __init__(self, *, max_timeout: float = MAX_PROBE_TIMEOUT,
                 max_concurrent: int = DEFAULT_MAX_CONCURRENT,
                 modules: dict[str, Module] | None = None, allowlist: AllowList | None = None,
                 checker: Checker = check) -> None:
        if not (math.isfinite(max_timeout) and max_timeout > 0):
            raise InvalidArgument(f"max_timeout must be a positive number of seconds, not {max_timeout!r}")
        if max_concurrent < 1:
            raise InvalidArgument(f"max_concurrent must be at least 1, not {max_concurrent!r}")
        self.max_timeout = max_timeout
        self.max_concurrent = max_concurrent
        self.modules = modules if modules is not None else load_modules(None, max_timeout)
        self.allowlist = allowlist if allowlist is not None else AllowList()
        self._check = checker
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.probes = Counter("tps_exporter_probes", "Probes run, by result (success, failure).",
                              ["result"], registry=self.registry)
        self.rejected = Counter("tps_exporter_rejected_probes",
                                "Probes refused: a bad request (400), a target no --allow-target "
                                "allows (403), too many at once or shutting down (503).",
                                ["reason"], registry=self.registry)
        self.in_flight = Gauge("tps_exporter_probes_in_flight", "Probes running now.",
                               registry=self.registry)
        self.unauthorized = Counter("tps_exporter_unauthorized_requests",
                                    "Requests refused for missing or wrong basic auth "
                                    "credentials (401).", registry=self.registry)
        self.connections = Gauge("tps_exporter_connections_open",
                                 "HTTP connections open now (idle, reading, being answered).",
                                 registry=self.registry)
        self.dropped = Counter("tps_exporter_connections_dropped",
                               "HTTP connections closed without an ordinary answer, by reason: "
                               "request timeout (408), malformed request (400), evicted (the "
                               "oldest unfinished request, for a new connection at the limit), "
                               "over the limit (503), tls handshake.",
                               ["reason"], registry=self.registry)

    # -- routing ---------------------------------------------------------------------------

    def handle(self, request: Request) -> Response | ProbeJob:
        """The answer to ``request`` now, or a ProbeJob to run on a thread."""
        if request.method != "GET":
            return Response.text(405, f"{printable(request.method, 20)} is not served: use GET",
                                 ("Allow", "GET"))
        if request.path == "/metrics":
            encoder, content_type = choose_encoder(request.headers.get("accept", ""))
            return Response(200, encoder(self.registry), content_type)
        if request.path == "/probe":
            return self._admit(request)
        if request.path == "/":
            body = (f"<html><head><title>tpsharness exporter</title></head><body>"
                    f"<h1>tpsharness exporter</h1><p><a href=\"/probe?target={HOST}:{PORT}\">"
                    f"/probe?target=HOST:PORT</a> checks a TPS (<code>&amp;module=NAME</code>, "
                    f"<code>&amp;debug=true</code>); <a href=\"/metrics\">/metrics</a> "
                    f"are the exporter's own.</p></body></html>").encode()
            return Response(200, body, "text/html; charset=utf-8")
        return Response.text(404, "not found: try /probe?target=HOST:PORT or /metrics")

    def _admit(self, request: Request) -> Response | ProbeJob:
        try:
            plan = self.plan(request.query, request.headers.get("x-prometheus-scrape-timeout-seconds"))
        except BadProbe as error:
            self.rejected.labels("bad request").inc()
            return Response.text(400, str(error))
        if not self._slots.acquire(blocking=False):
            self.rejected.labels("busy").inc()
            return Response.text(503, f"too many probes at once (the limit is {self.max_concurrent}); "
                                      f"try again later")
        self.in_flight.inc()
        return ProbeJob(self, plan)

    def release_slot(self) -> None:
        """A probe ended (or will never run): its slot is free again."""
        self.in_flight.dec()
        self._slots.release()

    def refuse_stopping(self) -> Response:
        """The answer to a probe that arrives, or is still running, as the exporter stops."""
        self.rejected.labels("shutting down").inc()
        return Response.text(503, "the exporter is shutting down; try again later")

    # -- probes ----------------------------------------------------------------------------

    def plan(self, query_string: str, scrape_timeout: str | None = None) -> ProbePlan:
        """What a /probe query asks for, checked; BadProbe with the reason otherwise.
        Nothing is resolved or connected here."""
        try:
            query = parse_qs(query_string, errors="strict", max_num_fields=len(PROBE_PARAMETERS) * 2)
        except UnicodeDecodeError:
            raise BadProbe("the query is not UTF-8 (after percent-decoding)") from None
        except ValueError:
            raise BadProbe(f"too many parameters: /probe takes {', '.join(PROBE_PARAMETERS)}") from None
        for key, values in query.items():
            if key in MODULE_KEYS and key not in PROBE_PARAMETERS:
                raise BadProbe(f"{key} is set by a module (--config FILE, then &module=NAME), "
                               f"not in the URL")
            if key not in PROBE_PARAMETERS:
                raise BadProbe(f"unknown parameter {quote_text(key, 40)}: /probe takes "
                               f"{', '.join(PROBE_PARAMETERS)}")
            if len(values) > 1:
                raise BadProbe(f"{key} is given {len(values)} times")
        target = query.get("target", [""])[0]
        if not target.strip():
            raise BadProbe("the target parameter is required: /probe?target=HOST:PORT")
        host, port = parse_target(target)
        name = query.get("module", [DEFAULT_MODULE])[0]
        module = self.modules.get(name)
        if module is None:
            raise BadProbe(f"unknown module {quote_text(name, 40)} (--config names: "
                           f"{', '.join(sorted(self.modules))})")
        debug = query.get("debug", ["false"])[0]
        if debug not in ("true", "false"):
            raise BadProbe(f"debug must be true or false, not {quote_text(debug, 20)}")
        timeout, note = self._timeout(query, scrape_timeout, module)
        return ProbePlan(host, port, module, timeout, debug == "true", note)

    def probe_timeout(self, query: dict[str, list[str]], scrape_timeout: str | None,
                      module: Module | None = None) -> float:
        """The probe's deadline: asked for (or the module's), capped, and within
        Prometheus's own scrape timeout; BadProbe when that leaves no time."""
        return self._timeout(query, scrape_timeout, module or self.modules[DEFAULT_MODULE])[0]

    def _timeout(self, query: dict[str, list[str]], scrape_timeout: str | None,
                 module: Module) -> tuple[float, str]:
        timeout, note = module.timeout, f"the module's {module.timeout:g} s"
        if "timeout" in query:
            text = query["timeout"][-1]
            try:
                timeout = float(text)
            except ValueError:
                raise BadProbe(f"timeout {quote_text(text, 40)} is not a number of seconds") from None
            if not (math.isfinite(timeout) and timeout > 0):
                raise BadProbe(f"timeout must be a positive number of seconds, not {quote_text(text, 40)}")
            note = f"the timeout parameter's {timeout:g} s"
        if scrape_timeout:
            scrape = _scrape_timeout(scrape_timeout)
            if scrape is None:
                note += (f"; the scrape timeout header's {quote_text(scrape_timeout.strip(), 40)} "
                         "sets no limit, as blackbox_exporter reads it")
            else:
                # The offset leaves time to answer; a scrape timeout no longer than it
                # still bounds the probe, to half of it, rather than being ignored.
                if scrape > SCRAPE_TIMEOUT_OFFSET:
                    budget, how = (scrape - SCRAPE_TIMEOUT_OFFSET,
                                   f"the scrape timeout ({scrape:g} s) less {SCRAPE_TIMEOUT_OFFSET:g} s")
                else:
                    budget, how = (scrape / 2, f"half the scrape timeout ({scrape:g} s, no more than "
                                               f"the {SCRAPE_TIMEOUT_OFFSET:g} s offset)")
                if budget < timeout:
                    timeout, note = budget, how
        if timeout > self.max_timeout:
            timeout, note = self.max_timeout, f"--max-timeout {self.max_timeout:g} s"
        if timeout < MIN_PROBE_TIMEOUT:
            raise BadProbe(f"{note} leaves less than {MIN_PROBE_TIMEOUT * 1000:g} ms for the probe")
        return timeout, note

    def run_probe(self, plan: ProbePlan) -> Response:
        """Resolve, check the allowlist, run the check (blocking); the answer: the metrics,
        the debug page, or 403."""
        started = monotonic()
        module = plan.module
        allowlist = self.allowlist
        by_name = not allowlist or allowlist.allows_name(plan.host, plan.port)
        if not by_name and not allowlist.has_networks:
            return self._forbidden(plan, "no rule allows its name")
        try:
            found = net.resolve((plan.host, plan.port))
        except socket.gaierror as error:
            if not by_name:
                return self._forbidden(plan, f"it does not resolve ({error.strerror})")
            elapsed = monotonic() - started
            reason = str(ConnectError(f"{error.strerror} after {format_ms(elapsed)}"))
            result = CheckResult(False, "connect", reason, plan.host, plan.port, "", 0,
                                 {"total": round(elapsed * 1000, 3)})
            addresses_note = "none: the name does not resolve"
        else:
            try:
                allowed, why = allowlist.permitted(plan.host, plan.port, found)
            except ForbiddenTarget as error:
                shown = ", ".join(found[:SHOWN_ADDRESSES]) + (" ..." if len(found) > SHOWN_ADDRESSES else "")
                return self._forbidden(plan, f"it resolves to {shown}, which no rule allows", str(error))
            addresses_note = f"{', '.join(allowed)} ({why})"
            payload = os.urandom((module.payload_size + 1) // 2).hex()[:module.payload_size].encode()
            result = self._check(plan.host, plan.port, timeout=plan.timeout, auth_code=module.auth_code,
                                 payload=payload, strict=module.strict, addresses=allowed)
        self.probes.labels("success" if result.ok else "failure").inc()
        metrics = metrics_text(result)
        if not plan.debug:
            return Response(200, metrics, CONTENT_TYPE_PLAIN_0_0_4)
        return Response(200, debug_page(plan, result, addresses_note, metrics).encode(), TEXT)

    def _forbidden(self, plan: ProbePlan, why: str, answer: str | None = None) -> Response:
        """403 for a target the allowlist refuses; what it resolved to goes to the log,
        never to the scraper (whether or not a name resolves, and to what, would
        otherwise be an oracle for the exporter's DNS)."""
        self.rejected.labels("forbidden").inc()
        target = net.format_address((plan.host, plan.port))
        log.warning("probe of %s refused by --allow-target: %s", target, why)
        return Response.text(403, answer or f"target {target} is not allowed by any --allow-target")


_AUTH_CODE_FIELD = re.compile(r'(AuthCode"?\s*:\s*"?)((?:[^"\\]|\\[^rn])*?)(?="|\\r\\n|$)', re.I)
HIDDEN = "(not shown)"


def redact(line: str, auth_code: str) -> str:
    """A transcript line with a module's secret AuthCode hidden: every AuthCode header
    and JSON value, whoever sent it, and the code itself wherever a peer echoed it."""
    line = _AUTH_CODE_FIELD.sub(lambda match: match.group(1) + HIDDEN, line)
    for form in {auth_code, quote_text(auth_code, len(auth_code) * 4 + 8)[1:-1]}:
        if form:
            line = line.replace(form, HIDDEN)
    return line


def debug_page(plan: ProbePlan, result: CheckResult, addresses: str, metrics: bytes) -> str:
    """``&debug=true``: what the probe did, as blackbox_exporter's debug output shows it:
    the outcome, the module, the addresses, the stage timings, the transcript, the
    metrics that would have been returned."""
    target = net.format_address((plan.host, plan.port))
    outcome = "succeeded" if result.ok else f"failed at {result.stage}"
    secret = plan.module.auth_code != AUTH_CODE
    message = printable(result.message, 2000)
    lines = [f"Probe of {target} with module {plan.module.name!r}: {outcome}",
             redact(message, plan.module.auth_code) if secret else message, "",
             "Module configuration:"]
    lines += [f"  {key:13} {value}" for key, value in plan.module.describe()]
    lines += [f"  this probe's timeout: {plan.timeout:g} s ({plan.timeout_note})", "",
              f"Addresses: {addresses}", "", "Stage timings:"]
    lines += [f"  {stage:9} {result.timings[stage]:10.3f} ms" for stage in (*STAGES, "total")
              if stage in result.timings]
    lines += ["", "Transcript (both sides' bytes, in order; "
              + ("the module's AuthCode not shown):" if secret else "the AuthCode as sent):")]
    if result.transcript is None or not result.transcript.entries:
        lines.append("  (nothing was sent or received)")
    else:
        entries = len(result.transcript.entries)
        shown = islice(result.transcript.lines(limit=200), DEBUG_TRANSCRIPT_LINES)
        lines += [f"  {redact(line, plan.module.auth_code) if secret else line}" for line in shown]
        if entries > DEBUG_TRANSCRIPT_LINES:
            lines.append(f"  ... {entries - DEBUG_TRANSCRIPT_LINES} more lines not shown")
    lines += ["", "Metrics that would have been returned:", metrics.decode().rstrip()]
    return "\n".join(lines) + "\n"
