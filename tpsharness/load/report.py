"""``python -m tpsharness report RESULT.json [...] -o report.html``: one self-contained page.

The result files are merged (counters added, histograms merged exactly), and the
page shows the summary, throughput and relay-latency percentiles over time, and the
latency distribution of each phase. Charts are drawn by matplotlib (the ``report``
extra) and embedded as base64 PNG, so the page needs no other file.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from .histograms import LATENCIES
from .output import summary_text
from .result import LoadResult

_DISTRIBUTION = (0.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 99.999, 100.0)


def _pyplot() -> ModuleType:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot
    return pyplot


def _png(figure: Any) -> str:          # matplotlib.figure.Figure
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=96, bbox_inches="tight")
    _pyplot().close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _finished(figure: Any, axes: Any, xlabel: str, ylabel: str, title: str) -> str:
    """Label, grid and legend a chart the same way as the others; its PNG in base64."""
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    return _png(figure)


def throughput_chart(result: LoadResult) -> str:
    pyplot = _pyplot()
    rows = list(result.series_rows())
    figure, axes = pyplot.subplots(figsize=(9, 3.2))
    seconds = [row["second"] for row in rows]
    axes.plot(seconds, [row["sent_per_s"] for row in rows], label="sent/s")
    axes.plot(seconds, [row["delivered_per_s"] for row in rows], label="delivered/s")
    axes.plot(seconds, [row["errors"] / row["span"] for row in rows], label="errors/s")
    return _finished(figure, axes, "second of the run", "messages per second", "Throughput")


def latency_over_time_chart(result: LoadResult) -> str:
    pyplot = _pyplot()
    rows = [row for row in result.series_rows() if row["relay_p50_ms"] is not None]
    figure, axes = pyplot.subplots(figsize=(9, 3.2))
    seconds = [row["second"] for row in rows]
    for key, label in (("relay_p50_ms", "p50"), ("relay_p90_ms", "p90"), ("relay_p99_ms", "p99"),
                       ("relay_max_ms", "max")):
        axes.plot(seconds, [row[key] for row in rows], label=label)
    return _finished(figure, axes, "second of the run", "relay latency (ms)",
                     "Relay latency percentiles, per second")


def distribution_chart(result: LoadResult) -> str:
    """Latency by percentile, HdrHistogram's way: the tail spread out on a log axis."""
    pyplot = _pyplot()
    figure, axes = pyplot.subplots(figsize=(9, 3.6))
    for phase in LATENCIES:
        histogram = result.histograms[phase]
        if not histogram.get_total_count():
            continue
        percentiles = [p for p in _DISTRIBUTION if p < 100.0]
        xs = [1 / (1 - p / 100) for p in percentiles]
        ys = [histogram.get_value_at_percentile(p) / 1000 for p in percentiles]
        axes.plot(xs, ys, marker="o", label=phase)
    axes.set_xscale("log")
    ticks = [1 / (1 - p / 100) for p in (0.0, 90.0, 99.0, 99.9, 99.99, 99.999)]
    axes.set_xticks(ticks)
    axes.set_xticklabels(["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"])
    return _finished(figure, axes, "percentile", "latency (ms)", "Latency distribution")


def render(result: LoadResult, sources: Sequence[str]) -> str:
    charts = [("Throughput over time", throughput_chart(result)),
              ("Relay latency over time", latency_over_time_chart(result)),
              ("Latency distribution", distribution_chart(result))]
    images = "\n".join(f'<h2>{html.escape(title)}</h2>\n<img alt="{html.escape(title)}" '
                       f'src="data:image/png;base64,{data}">' for title, data in charts)
    files = "".join(f"<li>{html.escape(str(source))}</li>" for source in sources)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>tpsharness load report</title>
<style>body {{ font-family: sans-serif; margin: 2em; max-width: 70em; }}
pre {{ background: #f4f4f4; padding: 1em; overflow-x: auto; }} img {{ max-width: 100%; }}</style>
</head><body>
<h1>tpsharness load report</h1>
<p>Merged from {len(sources)} result file{'s' if len(sources) != 1 else ''}:</p><ul>{files}</ul>
<h2>Summary</h2>
<pre>{html.escape(summary_text(result))}</pre>
{images}
</body></html>
"""


def write_report(paths: Sequence[str], output: str) -> str:
    """Merge the result files at ``paths`` into the HTML page ``output``; a one-line summary."""
    results = [LoadResult.read_json(path) for path in paths]
    merged = LoadResult.merged(results)
    page = render(merged, paths)
    with open(output, "w", encoding="utf-8") as out:
        out.write(page)
    return (f"{len(results)} result file{'s' if len(results) != 1 else ''}, "
            f"{merged.counters.get('delivered', 0):,} delivered, 3 charts")
