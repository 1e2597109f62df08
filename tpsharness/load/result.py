"""LoadResult: one run's figures, merged from any number of workers.

A result is plain data (counters, errors, the anomalies' first witnesses, per-second
series, workers' CPU) plus the latency histograms in HdrHistogram's compressed
encoding, so that merging the workers of a run adds histograms exactly instead of
averaging percentiles. Its verdict and exit status follow from its thresholds, the
integrity ones by default (see verdict.py).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Iterator
from typing import Any

from hdrh.histogram import HdrHistogram

from ..errors import InvalidArgument
from ..files import write_atomically
from .accounting import INTEGRITY, JUDGED, MAX_EXAMPLES, Errors
from .histograms import LATENCIES, decode, encode, merge, new_histogram, summary_ms
from .resultfile import load_json, read_document
from .verdict import diagnosis, verdict

FORMAT = "tpsharness-load/2"
CPU_WARNING = 0.90          # a worker busier than this measured itself, not the TPS
SAME_RUN = ("devices", "clients", "duration", "rate", "window", "payload_size", "ramp", "heartbeat",
            "reply_every", "timeout", "drain", "address")
"""What two results must share to be merged as one run's parts."""


class LoadResult:
    """Counters, latencies, errors, anomalies and the time series of a load run.

    Each counter is an attribute too: ``sent``, ``acked``, ``delivered``,
    ``misrouted``, ``lost``, ``duplicated``, ``reordered``, ``corrupted``,
    ``rejected``, ``replies``, ``heartbeats``, ``devices``, ``clients``, ``unsent``
    (all in ``counters``). ``verdict`` is the run in one line, ``exit_code`` its exit
    status.
    """

    def __init__(self, parts: Iterable[dict[str, Any]], config: dict[str, Any] | None = None,
                 target: str | None = None) -> None:
        parts = list(parts)
        self.config = config or {}
        self.target = target                # "127.0.0.1:6604 (bundled fake TPS)"
        self.counters: dict[str, int] = {}
        for part in parts:
            for name, value in part["counters"].items():
                self.counters[name] = self.counters.get(name, 0) + value
        self.histograms: dict[str, HdrHistogram] = {phase: merge(part["histograms"].get(phase) for part in parts)
                                                    for phase in LATENCIES}
        errors = Errors()
        for part in parts:
            for reason, entry in part["errors"].items():
                errors.add(reason, entry["example"], entry["count"])
        self.errors: dict[str, dict[str, Any]] = errors.to_dict()
        self.integrity: dict[str, list[dict[str, Any]]] = {kind: [] for kind in INTEGRITY}
        for part in parts:
            for kind, examples in (part.get("integrity") or {}).items():
                if kind in self.integrity:
                    self.integrity[kind].extend(examples[:MAX_EXAMPLES - len(self.integrity[kind])])
        self.evidence = _merge_evidence(part.get("evidence") or {} for part in parts)
        self.acks: dict[str, int] | None = _merge_acks(part.get("acks") for part in parts)
        self.series = _merge_series(part["series"] for part in parts)
        self.duration = max((part["duration"] for part in parts), default=0.0)
        self.aborted: str | None = next((part["aborted"] for part in parts if part.get("aborted")), None)
        self.interrupted = any(part.get("interrupted") for part in parts)
        self.workers = [worker for part in parts for worker in part["workers"]]
        self.thresholds: list[tuple[str, bool, str]] = []      # (expression, held, observed) once checked
        self.default_thresholds: list[str] = []                # which of them are the integrity defaults

    # -- reading the figures -------------------------------------------------------------

    def __getattr__(self, name: str) -> int:
        counters = self.__dict__.get("counters", {})
        if name in counters:
            return counters[name]
        if name in JUDGED or name == "unsent":
            return 0
        raise AttributeError(name)

    @property
    def error_count(self) -> int:
        """All errors, every reason."""
        return sum(entry["count"] for entry in self.errors.values())

    @property
    def anomaly_count(self) -> int:
        """Messages that went wrong: misrouted, misattributed, lost, corrupted, duplicated,
        reordered, rejected (not the answers and devices JUDGED also counts)."""
        return sum(self.counters.get(kind, 0) for kind in (*INTEGRITY, "rejected"))

    def latency(self, phase: str) -> dict[str, float | None]:
        """{count, p50, p90, p99, p99.9, max} of ``phase`` in milliseconds."""
        return summary_ms(self.histograms[phase])

    def unmeasurable(self, phase: str) -> str | None:
        """Why ``phase``'s latency means nothing in this run (None: it does). The ack
        latency matches acks to messages in order: true only when the TPS sent one
        ack per message."""
        if phase != "ack" or self.acks is None:
            return None
        return ack_problem(self.acks)

    @property
    def ack_note(self) -> str | None:
        """'the TPS acknowledged 353,112 messages with 189,413 acks (coalesced)', or None."""
        return None if self.acks is None else ack_problem(self.acks)

    def rate(self, counter: str) -> float:
        """``counter`` per second of traffic."""
        return self.counters.get(counter, 0) / self.duration if self.duration else 0.0

    @property
    def ok(self) -> bool:
        """The run was carried out and every threshold held."""
        return self.exit_code == 0

    passed = ok

    @property
    def exit_code(self) -> int:
        """0 every threshold held, 1 one failed (integrity by default), 2 the run could
        not be carried out (the TPS refused or died, a worker died, or Ctrl-C cut it short)."""
        if self.aborted or self.interrupted:
            return 2
        return 0 if all(held for _, held, _ in self.thresholds) else 1

    @property
    def verdict(self) -> str:
        """'PASSED', or 'FAILED: ...' naming what went wrong (see verdict.py)."""
        return verdict(self)

    @property
    def diagnosis(self) -> list[str]:
        """One line per pattern the anomalies show, with the docs that explain it."""
        return diagnosis(self)

    def busy_workers(self) -> list[dict[str, Any]]:
        """Workers whose CPU was above 90% of one core: their figures measure the generator."""
        return [w for w in self.workers
                if w["wall_seconds"] and w["cpu_seconds"] / w["wall_seconds"] > CPU_WARNING]

    def cpu_per_relay_us(self) -> float | None:
        """Generator CPU (all workers) per delivered relay, in us; None when nothing was delivered."""
        delivered = self.counters.get("delivered", 0)
        cpu = sum(w["cpu_seconds"] for w in self.workers)
        return cpu / delivered * 1e6 if delivered else None

    # -- files ---------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The result as ``--json`` writes it (histograms encoded, so that results merge exactly)."""
        return {"format": FORMAT, "target": self.target, "config": self.config,
                "verdict": self.verdict, "exit_code": self.exit_code,
                "counters": self.counters,
                "histograms": {phase: encode(h) for phase, h in self.histograms.items()},
                "latency_ms": {phase: None if self.unmeasurable(phase) else self.latency(phase)
                               for phase in LATENCIES},
                "errors": self.errors, "integrity": self.integrity, "diagnosis": self.diagnosis,
                "evidence": self.evidence, "acks": self.acks, "ack_note": self.ack_note,
                "series": self.series, "duration": self.duration,
                "aborted": self.aborted, "interrupted": self.interrupted, "workers": self.workers,
                "thresholds": [{"expression": e, "held": h, "observed": o,
                                "default": e in self.default_thresholds} for e, h, o in self.thresholds]}

    def write_json(self, path: str, *, force: bool = False) -> None:
        """Write ``to_dict()`` to ``path`` as JSON, whole or not at all; FileExistsError
        if something is there and not ``force``."""
        write_atomically(path, json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n", force=force)

    @classmethod
    def from_dict(cls, data: object, where: str = "the result") -> LoadResult:
        """The result a ``to_dict()`` describes; InvalidArgument for anything else
        (every field is checked: see resultfile.py)."""
        part, config, target, thresholds = read_document(data, where)
        result = cls([part], config, target)
        result.thresholds = [(expression, held, observed) for expression, held, observed, _ in thresholds]
        result.default_thresholds = [expression for expression, _, _, default in thresholds if default]
        return result

    @classmethod
    def read_json(cls, path: str) -> LoadResult:
        """The result ``write_json`` wrote to ``path``; InvalidArgument (one sentence)
        for a file that is not one."""
        return cls.from_dict(load_json(str(path)), str(path))

    @classmethod
    def merged(cls, results: Iterable[LoadResult]) -> LoadResult:
        """Results of one run's parts (workers, or hosts running the same test at the
        same time) as one: counters added, histograms merged, rates over the longest
        duration. InvalidArgument for results of different configurations: those are
        different runs, each with its own rates (``tpsharness report`` shows each)."""
        results = list(results)
        for other in results[1:]:
            difference = config_difference(results[0].config, other.config)
            if difference:
                raise InvalidArgument(f"results of different runs cannot be merged as one: {difference}")
        parts = [r.part() for r in results]
        targets = sorted({r.target for r in results if r.target})
        return cls(parts, results[0].config if results else {}, ", ".join(targets) or None)

    def part(self) -> dict[str, Any]:
        """This result as one part of a larger one (the shape a worker sends)."""
        return {"counters": self.counters, "histograms": {p: encode(h) for p, h in self.histograms.items()},
                "errors": self.errors, "integrity": self.integrity, "evidence": self.evidence,
                "acks": self.acks, "series": self.series, "duration": self.duration,
                "aborted": self.aborted, "interrupted": self.interrupted, "workers": self.workers}

    def series_rows(self) -> Iterator[dict[str, Any]]:
        """The time series with percentiles: one dict per second."""
        for entry in self.series:
            histogram = decode(entry["relay"]) if entry.get("relay") else new_histogram()
            span = entry.get("span") or 1.0
            figures = summary_ms(histogram)
            yield {"second": entry["t"], "span": span, "sent": entry["sent"],
                   "delivered": entry["delivered"], "errors": entry["errors"],
                   "sent_per_s": entry["sent"] / span, "delivered_per_s": entry["delivered"] / span,
                   "relay_p50_ms": figures["p50"], "relay_p90_ms": figures["p90"],
                   "relay_p99_ms": figures["p99"], "relay_max_ms": figures["max"],
                   "cpu": entry.get("cpu")}

    def write_csv(self, prefix: str, *, force: bool = False) -> list[str]:
        """PREFIX_series.csv (per second), PREFIX_latency.csv (per phase) and
        PREFIX_summary.csv (every counter, the verdict, the exit status), each whole or
        not at all (FileExistsError if one is there and not ``force``); the paths."""
        paths = csv_paths(prefix)
        series = io.StringIO(newline="")
        series_writer = csv.DictWriter(series, fieldnames=["second", "span", "sent", "delivered", "errors",
                                                           "sent_per_s", "delivered_per_s", "relay_p50_ms",
                                                           "relay_p90_ms", "relay_p99_ms", "relay_max_ms", "cpu"])
        series_writer.writeheader()
        series_writer.writerows(self.series_rows())
        latency = io.StringIO(newline="")
        writer = csv.writer(latency)
        writer.writerow(["phase", "count", "p50_ms", "p90_ms", "p99_ms", "p99.9_ms", "max_ms", "note"])
        for phase in LATENCIES:
            why = self.unmeasurable(phase)
            f = self.latency(phase)
            figures = ["", "", "", "", ""] if why else [f["p50"], f["p90"], f["p99"], f["p99.9"], f["max"]]
            writer.writerow([phase, f["count"], *figures, f"not measurable: {why}" if why else ""])
        summary = io.StringIO(newline="")
        writer = csv.writer(summary)
        writer.writerow(["name", "value"])
        for name, value in self.counters.items():
            writer.writerow([name, value])
        writer.writerow(["duration_s", self.duration])
        writer.writerow(["verdict", self.verdict])
        writer.writerow(["exit_code", self.exit_code])
        for path, text in zip(paths, (series, latency, summary)):
            write_atomically(path, text.getvalue(), force=force)
        return paths


def csv_paths(prefix: str) -> list[str]:
    """The files ``write_csv(prefix)`` writes."""
    return [f"{prefix}_series.csv", f"{prefix}_latency.csv", f"{prefix}_summary.csv"]


def _temporary_beside(path: str) -> str:
    return os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.urandom(4).hex()}.tmp")


def unwritable(path: str, *, force: bool) -> str | None:
    """Why ``write_atomically(path, ..., force=force)`` would fail, or None: asked
    before a run, so that its result is not lost after it."""
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        return f"no directory {folder!r} to write it in"
    if os.path.islink(path):
        return "a symlink, never written through: name the file itself"
    if os.path.isdir(path):
        return "a directory"
    if os.path.lexists(path) and not force:
        return "exists: --force replaces it"
    temporary = _temporary_beside(path)
    try:
        os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
    except OSError as error:
        return f"cannot create a file in {folder!r}: {error.strerror or error}"
    os.unlink(temporary)
    return None


def ack_problem(acks: dict[str, int]) -> str | None:
    """Why acks cannot be matched to messages one by one, or None when they can."""
    acked, expected, arrived = acks.get("acked", 0), acks.get("expected", 0), acks.get("arrived", 0)
    if acked < arrived:
        return f"the TPS acknowledged {arrived:,} messages with {acked:,} acks (coalesced)"
    if acked < expected:
        return f"{expected - acked:,} of {expected:,} messages got no ack"
    if acked > expected:
        return f"the TPS sent {acked - expected:,} more acks than messages"
    unmatched = acks.get("unmatched_clients", 0)
    if unmatched:
        return (f"on {unmatched:,} client connection{'s' if unmatched != 1 else ''} more messages awaited "
                "an ack than can be in flight (acks coalesced, or late)")
    return None


def config_difference(first: dict[str, Any], other: dict[str, Any]) -> str | None:
    """What makes two configurations different runs ('devices 200 against 120'), or None."""
    different = [f"{key} {_shown(first.get(key))} against {_shown(other.get(key))}"
                 for key in SAME_RUN if first.get(key) != other.get(key)]
    return ", ".join(different) or None


def _shown(value: object) -> str:
    if isinstance(value, list) and len(value) == 2:
        return f"{value[0]}:{value[1]}"
    return "none" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _merge_evidence(evidences: Iterable[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for evidence in evidences:
        for name, value in evidence.items():
            if name == "misrouted_top_receiver":
                known = merged.get(name)
                if value is not None and (known is None or value[1] > known[1]):
                    merged[name] = list(value)
                else:
                    merged.setdefault(name, known)
            else:
                merged[name] = merged.get(name, 0) + value
    return merged


def _merge_acks(parts: Iterable[dict[str, int] | None]) -> dict[str, int] | None:
    merged: dict[str, int] | None = None
    for acks in parts:
        if acks is None:
            return None         # a part (an old file) that did not say: nothing is known
        merged = merged or {}
        for name, value in acks.items():
            merged[name] = merged.get(name, 0) + value
    return merged


def _merge_series(series_list: Iterable[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Add the workers' seconds together (same second index); histograms merged."""
    seconds: dict[int, dict[str, Any]] = {}
    for series in series_list:
        for entry in series:
            known = seconds.get(entry["t"])
            if known is None:
                seconds[entry["t"]] = dict(entry, relay=[entry.get("relay")], cpu=[entry.get("cpu", 0.0)])
                continue
            for name in ("sent", "delivered", "errors"):
                known[name] += entry[name]
            known["span"] = max(known["span"], entry.get("span", 1.0))
            known["relay"].append(entry.get("relay"))
            known["cpu"].append(entry.get("cpu", 0.0))
    merged = []
    for second in sorted(seconds):
        entry = seconds[second]
        entry["relay"] = encode(merge(entry["relay"]))
        entry["cpu"] = max(entry["cpu"])
        merged.append(entry)
    return merged
