"""LoadResult: one run's figures, merged from any number of workers, runs or hosts.

A result is plain data (counters, errors, per-second series, workers' CPU) plus the
latency histograms in HdrHistogram's compressed encoding, so that merging files
from several runs or hosts adds histograms exactly instead of averaging percentiles.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from typing import Any

from hdrh.histogram import HdrHistogram

from ..errors import InvalidArgument
from .histograms import LATENCIES, decode, encode, merge, new_histogram, summary_ms

FORMAT = "tpsharness-load/1"
CPU_WARNING = 0.90          # a worker busier than this measured itself, not the TPS


class LoadResult:
    """Counters, latencies, errors and the time series of a load run.

    Each counter is an attribute too: ``sent``, ``acked``, ``delivered``, ``lost``,
    ``duplicated``, ``reordered``, ``corrupted``, ``rejected``, ``replies``,
    ``heartbeats``, ``devices``, ``clients`` (all in ``counters``).
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
        self.errors: dict[str, dict[str, Any]] = {}
        for part in parts:
            for reason, entry in part["errors"].items():
                known = self.errors.setdefault(reason, {"count": 0, "example": entry["example"]})
                known["count"] += entry["count"]
        self.series = _merge_series(part["series"] for part in parts)
        self.duration = max((part["duration"] for part in parts), default=0.0)
        self.aborted: str | None = next((part["aborted"] for part in parts if part.get("aborted")), None)
        self.interrupted = any(part.get("interrupted") for part in parts)
        self.workers = [worker for part in parts for worker in part["workers"]]
        self.thresholds: list[tuple[str, bool, str]] = []                # (expression, held, observed) once checked

    # -- reading the figures -------------------------------------------------------------

    def __getattr__(self, name: str) -> int:
        counters = self.__dict__.get("counters", {})
        if name in counters:
            return counters[name]
        raise AttributeError(name)

    @property
    def error_count(self) -> int:
        """All errors, every reason."""
        return sum(entry["count"] for entry in self.errors.values())

    def latency(self, phase: str) -> dict[str, float | None]:
        """{count, p50, p90, p99, p99.9, max} of ``phase`` in milliseconds."""
        return summary_ms(self.histograms[phase])

    def rate(self, counter: str) -> float:
        """``counter`` per second of traffic."""
        return self.counters.get(counter, 0) / self.duration if self.duration else 0.0

    @property
    def ok(self) -> bool:
        """The run was carried out and every threshold held."""
        return not self.aborted and not self.interrupted and all(held for _, held, _ in self.thresholds)

    @property
    def exit_code(self) -> int:
        """0 all thresholds hold, 1 one failed, 2 the run could not be carried out (the TPS
        refused or died, or Ctrl-C cut it short)."""
        if self.aborted or self.interrupted:
            return 2
        return 0 if all(held for _, held, _ in self.thresholds) else 1

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
                "counters": self.counters,
                "histograms": {phase: encode(h) for phase, h in self.histograms.items()},
                "latency_ms": {phase: self.latency(phase) for phase in LATENCIES},
                "errors": self.errors, "series": self.series, "duration": self.duration,
                "aborted": self.aborted, "interrupted": self.interrupted, "workers": self.workers,
                "thresholds": [{"expression": e, "held": h, "observed": o} for e, h, o in self.thresholds]}

    def write_json(self, path: str) -> None:
        """Write ``to_dict()`` to ``path`` as JSON."""
        with open(path, "w", encoding="utf-8") as out:
            json.dump(self.to_dict(), out, indent=1)
            out.write("\n")

    @classmethod
    def from_dict(cls, data: object) -> LoadResult:
        """The result a ``to_dict()`` describes; InvalidArgument for anything else."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise InvalidArgument("not a tpsharness load result (no \"format\": \"%s\")" % FORMAT)
        result = cls([data], data.get("config"), data.get("target"))
        result.thresholds = [(t["expression"], t["held"], t["observed"]) for t in data.get("thresholds", [])]
        return result

    @classmethod
    def read_json(cls, path: str) -> LoadResult:
        """The result ``write_json`` wrote to ``path``; InvalidArgument for a file that is not one."""
        with open(path, encoding="utf-8") as source:
            try:
                data = json.load(source)
            except ValueError as error:
                raise InvalidArgument(f"{path}: not JSON ({error})") from None
        try:
            return cls.from_dict(data)
        except (KeyError, TypeError, ValueError) as error:
            raise InvalidArgument(f"{path}: {error}") from None

    @classmethod
    def merged(cls, results: Iterable[LoadResult]) -> LoadResult:
        """Several results (runs, hosts) as one: counters added, histograms merged."""
        results = list(results)
        parts = [r.to_dict() for r in results]
        targets = sorted({r.target for r in results if r.target})
        return cls(parts, results[0].config if results else {}, ", ".join(targets) or None)

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

    def write_csv(self, prefix: str) -> list[str]:
        """PREFIX_series.csv (per second) and PREFIX_latency.csv (per phase); the paths."""
        paths = [f"{prefix}_series.csv", f"{prefix}_latency.csv"]
        rows = list(self.series_rows())
        with open(paths[0], "w", newline="", encoding="utf-8") as out:
            series_writer = csv.DictWriter(out, fieldnames=["second", "span", "sent", "delivered", "errors",
                                                     "sent_per_s", "delivered_per_s", "relay_p50_ms",
                                                     "relay_p90_ms", "relay_p99_ms", "relay_max_ms", "cpu"])
            series_writer.writeheader()
            series_writer.writerows(rows)
        with open(paths[1], "w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(["phase", "count", "p50_ms", "p90_ms", "p99_ms", "p99.9_ms", "max_ms"])
            for phase in LATENCIES:
                f = self.latency(phase)
                writer.writerow([phase, f["count"], f["p50"], f["p90"], f["p99"], f["p99.9"], f["max"]])
        return paths


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
