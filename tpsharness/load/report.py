"""``tpsharness report RESULT.json [...] -o report.html``: one self-contained page.

Each result file is one run (its workers already merged, exactly), and the page
shows each run as it was: its configuration, its verdict, its summary with every
rate computed from its own duration, its throughput and relay latency over time.
With several runs, a table compares them and the latency distribution of each run
is drawn on one chart. Charts are drawn by matplotlib (the ``report`` extra) and
embedded as base64 PNG, so the page needs no other file.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from .histograms import LATENCIES
from .output import configuration, summary_text
from .result import LoadResult

_DISTRIBUTION = (0.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 99.999, 100.0)
MAX_FILES = 50              # runs on one page


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


def distribution_chart(runs: Sequence[tuple[str, LoadResult]]) -> str:
    """Latency by percentile, HdrHistogram's way: the tail spread out on a log axis;
    one line per phase of each run."""
    pyplot = _pyplot()
    figure, axes = pyplot.subplots(figsize=(9, 3.6))
    percentiles = [p for p in _DISTRIBUTION if p < 100.0]
    xs = [1 / (1 - p / 100) for p in percentiles]
    for name, result in runs:
        for phase in LATENCIES:
            histogram = result.histograms[phase]
            if not histogram.get_total_count() or result.unmeasurable(phase):
                continue
            ys = [histogram.get_value_at_percentile(p) / 1000 for p in percentiles]
            axes.plot(xs, ys, marker="o", label=f"{name}: {phase}" if len(runs) > 1 else phase)
    axes.set_xscale("log")
    ticks = [1 / (1 - p / 100) for p in (0.0, 90.0, 99.0, 99.9, 99.99, 99.999)]
    axes.set_xticks(ticks)
    axes.set_xticklabels(["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"])
    return _finished(figure, axes, "percentile", "latency (ms)", "Latency distribution")


def _image(title: str, data: str) -> str:
    return (f'<h3>{html.escape(title)}</h3>\n<img alt="{html.escape(title)}" '
            f'src="data:image/png;base64,{data}">')


def _verdict(result: LoadResult) -> str:
    colour = "#1a7f37" if result.passed else "#cf222e"
    return f'<p class="verdict" style="color: {colour}"><b>{html.escape(result.verdict)}</b></p>'


def _comparison(runs: Sequence[tuple[str, LoadResult]]) -> str:
    """One row per run, each rate from that run's own duration."""
    head = ("run", "target", "configuration", "duration", "delivered/s", "misrouted", "lost", "corrupted",
            "relay p99 ms", "verdict")
    rows = []
    for name, result in runs:
        p99 = result.latency("relay")["p99"]
        cells = (name, result.target or "?", configuration(result), f"{result.duration:.1f} s",
                 f"{result.rate('delivered'):,.1f}", f"{result.counters.get('misrouted', 0):,}",
                 f"{result.counters.get('lost', 0):,}", f"{result.counters.get('corrupted', 0):,}",
                 "-" if p99 is None else f"{p99:.3f}", result.verdict)
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in cells) + "</tr>")
    header = "<tr>" + "".join(f"<th>{html.escape(cell)}</th>" for cell in head) + "</tr>"
    return f"<table>{header}{''.join(rows)}</table>"


def render(runs: Sequence[tuple[str, LoadResult]]) -> str:
    """The page for ``runs``: (name, result) of each run, in order."""
    sections = []
    for name, result in runs:
        charts = [("Throughput over time", throughput_chart(result)),
                  ("Relay latency over time", latency_over_time_chart(result))]
        if len(runs) == 1:
            charts.append(("Latency distribution", distribution_chart(runs)))
        sections.append(f"<h2>{html.escape(name)}</h2>\n{_verdict(result)}\n"
                        f"<pre>{html.escape(summary_text(result))}</pre>\n"
                        + "\n".join(_image(title, data) for title, data in charts))
    several = len(runs) > 1
    overview = (f"<h2>The runs side by side</h2>\n{_comparison(runs)}\n"
                f"{_image('Latency distribution', distribution_chart(runs))}\n") if several else ""
    files = "".join(f"<li>{html.escape(name)}</li>" for name, _ in runs)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>tpsharness load report</title>
<style>body {{ font-family: sans-serif; margin: 2em; max-width: 80em; }}
pre {{ background: #f4f4f4; padding: 1em; overflow-x: auto; }} img {{ max-width: 100%; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 0.3em 0.6em; }}</style>
</head><body>
<h1>tpsharness load report</h1>
<p>{len(runs)} run{'s' if several else ''}, each shown with its own configuration, and its rates from its
own duration:</p><ul>{files}</ul>
{overview}{''.join(sections)}
</body></html>
"""


def write_report(paths: Sequence[str], output: str) -> str:
    """The HTML page ``output`` for the result files at ``paths`` (one run each);
    a one-line summary. InvalidArgument (one sentence) for a file it cannot use."""
    from ..errors import InvalidArgument

    if len(paths) > MAX_FILES:
        raise InvalidArgument(f"{len(paths)} result files: a report shows at most {MAX_FILES}")
    runs = [(str(path), LoadResult.read_json(path)) for path in paths]
    page = render(runs)
    with open(output, "w", encoding="utf-8") as out:
        out.write(page)
    passed = sum(result.passed for _, result in runs)
    delivered = sum(result.counters.get("delivered", 0) for _, result in runs)
    charts = page.count('src="data:image/png;base64,')
    return (f"{len(runs)} run{'s' if len(runs) != 1 else ''} ({passed} passed, {len(runs) - passed} failed), "
            f"{delivered:,} delivered in all, {charts} charts")
