"""``tpsharness report RESULT.json [...] -o report.html``: one self-contained page.

Each result file is one run (its workers already merged, exactly), and the page
shows each run as it was: first its verdict and what went wrong (the integrity
counts, which are the run's totals: the per-second series hold throughput, errors
and relay latency only), then its configuration, its summary with every rate
computed from its own duration, its throughput and relay latency over time. With
several runs, a table compares them and the latency distribution of each run is
drawn on one chart. Charts are drawn by matplotlib (the ``report`` extra) and
embedded as base64 PNG, so the page needs no other file.
"""

from __future__ import annotations

import base64
import functools
import html
import io
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from ..errors import InvalidArgument
from ..files import write_atomically
from .accounting import JUDGED
from .histograms import LATENCIES
from .output import configuration, summary_text
from .result import LoadResult
from .verdict import OF_WHAT, what_happened

_DISTRIBUTION = (0.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 99.999, 100.0)
MAX_FILES = 50              # runs on one page
_PASSED, _FAILED = "#1a7f37", "#cf222e"
_Chart = TypeVar("_Chart", bound=Callable[..., str])


def _pyplot() -> ModuleType:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot
    return pyplot


def _plain_text(draw: _Chart) -> _Chart:
    """Draw with every text taken literally: a file name such as ``r$\\frac{$.json`` is
    a legend label, and matplotlib would parse what is between dollars as mathtext."""
    @functools.wraps(draw)
    def drawn(*args: Any, **kwargs: Any) -> str:
        with _pyplot().rc_context({"text.parse_math": False, "text.usetex": False}):
            return draw(*args, **kwargs)
    return drawn  # type: ignore[return-value]


def _legend_label(text: str) -> str:
    """``text`` as a legend shows it: matplotlib leaves out a label that starts with '_'."""
    return " " + text if text.startswith("_") else text


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


def _bucket_edges(rows: Sequence[dict[str, Any]]) -> list[float]:
    """Where each second of the series starts and ends, in seconds of the run: the
    last one is only as long as its ``span``."""
    edges = [0.0]
    for row in rows:
        edges.append(edges[-1] + row["span"])
    return edges


def _over_the_run(axes: Any, result: LoadResult, edges: Sequence[float]) -> None:
    """The whole run on the x axis, from 0 up; the time after the configured
    duration shaded: nothing is sent then, the run waits for the last deliveries."""
    end = edges[-1]
    duration = result.config.get("duration")
    if isinstance(duration, (int, float)) and 0 < duration < end:
        axes.axvspan(duration, end, color="grey", alpha=0.15, label="draining: sending stopped")
    axes.set_xlim(0, end)
    axes.set_ylim(bottom=0)


def _has_series(result: LoadResult) -> bool:
    """Whether the run has a second of traffic to draw."""
    return any(row["sent"] or row["delivered"] for row in result.series_rows())


def _has_relay_latency(result: LoadResult) -> bool:
    return any(row["relay_p50_ms"] is not None for row in result.series_rows())


def _has_distribution(runs: Sequence[tuple[str, LoadResult]]) -> bool:
    return any(result.histograms[phase].get_total_count() and not result.unmeasurable(phase)
               for _, result in runs for phase in LATENCIES)


@_plain_text
def throughput_chart(result: LoadResult) -> str:
    """Sent and delivered per second, each second's count over its own span, drawn
    over the span it covers; connection and status errors when there were any."""
    pyplot = _pyplot()
    rows = list(result.series_rows())
    figure, axes = pyplot.subplots(figsize=(9, 3.2))
    edges = _bucket_edges(rows)
    axes.stairs([row["sent_per_s"] for row in rows], edges, label="sent/s")
    axes.stairs([row["delivered_per_s"] for row in rows], edges, label="delivered/s")
    if any(row["errors"] for row in rows):
        axes.stairs([row["errors"] / row["span"] for row in rows], edges, label="connection and status errors/s")
    _over_the_run(axes, result, edges)
    return _finished(figure, axes, "seconds of the run", "messages per second", "Throughput")


@_plain_text
def latency_over_time_chart(result: LoadResult) -> str:
    """Relay latency percentiles of each second (a gap where nothing was delivered)."""
    pyplot = _pyplot()
    rows = list(result.series_rows())
    edges = _bucket_edges(rows)
    figure, axes = pyplot.subplots(figsize=(9, 3.2))
    for key, label in (("relay_p50_ms", "p50"), ("relay_p90_ms", "p90"), ("relay_p99_ms", "p99"),
                       ("relay_max_ms", "max")):
        axes.stairs([math.nan if row[key] is None else row[key] for row in rows], edges, label=label)
    _over_the_run(axes, result, edges)
    return _finished(figure, axes, "seconds of the run", "relay latency (ms)",
                     "Relay latency percentiles, per second")


@_plain_text
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
            axes.plot(xs, ys, marker="o", label=_legend_label(f"{name}: {phase}" if len(runs) > 1 else phase))
    axes.set_xscale("log")
    ticks = [1 / (1 - p / 100) for p in (0.0, 90.0, 99.0, 99.9, 99.99, 99.999)]
    axes.set_xticks(ticks)
    axes.set_xticklabels(["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"])
    return _finished(figure, axes, "percentile", "latency (ms)", "Latency distribution")


def _image(title: str, data: str) -> str:
    return (f'<h3>{html.escape(title)}</h3>\n<img alt="{html.escape(title)}" '
            f'src="data:image/png;base64,{data}">')


def _no_data(title: str, why: str) -> str:
    return f'<h3>{html.escape(title)}</h3>\n<p class="nodata">No data: {html.escape(why)}.</p>'


def _banner(result: LoadResult, name: str | None = None) -> str:
    """The verdict, the first thing a reader sees: green PASSED, or red FAILED and why."""
    colour = _PASSED if result.passed else _FAILED
    run = f"{html.escape(name)}: " if name else ""
    return (f'<p class="verdict" style="background: {colour}">{run}'
            f'<b>{html.escape(result.verdict)}</b></p>')


def _share(count: int, total: int) -> str:
    """'74.1%'; '-' when there was nothing to take a share of."""
    if not total:
        return "-"
    share = 100 * count / total
    return f"{share:.1f}%" if share >= 0.1 or share == 0 else f"{share:.2g}%"


def _out_of(kind: str, result: LoadResult) -> tuple[int, str]:
    """What ``kind`` is a share of: the messages sent, or (OF_WHAT) the devices'
    answers, the devices."""
    counters = result.counters
    if kind not in OF_WHAT:
        return counters.get("sent", 0), "messages sent"
    total, things = OF_WHAT[kind]
    return (counters.get(total, 0) if total else counters.get("devices", 0) + counters.get("unregistered", 0),
            things)


def _integrity_table(result: LoadResult) -> str:
    """The run's counts of what went wrong, beside what was sent and delivered: each
    kind counted for the whole run (the series do not hold them per second)."""
    counters = result.counters
    rows = [("sent", counters.get("sent", 0), "", False),
            ("delivered", counters.get("delivered", 0), "reached the right device", False)]
    rows += [(kind, counters.get(kind, 0), "never arrived" if kind == "lost" else what_happened(kind, result),
              bool(counters.get(kind, 0))) for kind in JUDGED]
    rows.append(("errors", result.error_count, "connection and status errors, by reason in the summary",
                 bool(result.error_count)))
    if counters.get("unsent"):
        rows.append(("unsent", counters["unsent"], "due at the rate asked for, never sent", True))
    cells = []
    for name, count, meaning, wrong in rows:
        total, things = _out_of(name, result)
        style = f' style="color: {_FAILED}; font-weight: bold"' if wrong else ""
        cells.append(f"<tr{style}><td>{name}</td><td class=\"n\">{count:,}</td>"
                     f"<td class=\"n\">{_share(count, total)}</td><td>{html.escape(things)}</td>"
                     f"<td>{html.escape(meaning)}</td></tr>")
    return ('<table class="integrity"><tr><th>what</th><th>count</th><th colspan="2">share of</th>'
            '<th>what happened</th></tr>' + "".join(cells) + "</table>")


def _comparison(runs: Sequence[tuple[str, LoadResult]]) -> str:
    """One row per run, each rate from that run's own duration."""
    head = ("run", "target", "configuration", "duration", "delivered/s", *JUDGED, "errors",
            "relay p99 ms", "verdict")
    rows = []
    for name, result in runs:
        p99 = result.latency("relay")["p99"]
        cells = (name, result.target or "?", configuration(result), f"{result.duration:.1f} s",
                 f"{result.rate('delivered'):,.1f}", *(f"{result.counters.get(kind, 0):,}" for kind in JUDGED),
                 f"{result.error_count:,}", "-" if p99 is None else f"{p99:.3f}", result.verdict)
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in cells) + "</tr>")
    header = "<tr>" + "".join(f"<th>{html.escape(cell)}</th>" for cell in head) + "</tr>"
    return f"<table>{header}{''.join(rows)}</table>"


def _why_no_series(result: LoadResult) -> str:
    if result.aborted:
        return f"the run could not be carried out ({result.aborted})"
    return "nothing was sent or delivered"


def _charts(result: LoadResult, alone: bool) -> list[str]:
    """The run's charts, or a line saying there is nothing to draw."""
    if not _has_series(result):
        charts = [_no_data("Throughput and relay latency over time", _why_no_series(result))]
    else:
        charts = [_image("Throughput over time", throughput_chart(result))]
        charts.append(_image("Relay latency over time", latency_over_time_chart(result))
                      if _has_relay_latency(result) else
                      _no_data("Relay latency over time", "no message was delivered"))
    if alone:
        runs = [("", result)]
        charts.append(_image("Latency distribution", distribution_chart(runs)) if _has_distribution(runs)
                      else _no_data("Latency distribution", "no latency was measured"))
    return charts


def render(runs: Sequence[tuple[str, LoadResult]]) -> str:
    """The page for ``runs``: (name, result) of each run, in order."""
    several = len(runs) > 1
    sections = []
    for name, result in runs:
        verdict = f"{_banner(result)}\n{_integrity_table(result)}\n" if several else ""     # else at the top
        sections.append(f"<h2>{html.escape(name)}</h2>\n{verdict}<pre>{html.escape(summary_text(result))}</pre>\n"
                        + "\n".join(_charts(result, alone=not several)))
    if several:
        distribution = (_image("Latency distribution", distribution_chart(runs)) if _has_distribution(runs)
                        else _no_data("Latency distribution", "no run measured a latency"))
        top = "".join(_banner(result, name) for name, result in runs)
        overview = f"<h2>The runs side by side</h2>\n{_comparison(runs)}\n{distribution}\n"
    else:
        name, result = runs[0]
        top, overview = _banner(result) + _integrity_table(result), ""
    files = "".join(f"<li>{html.escape(name)}</li>" for name, _ in runs)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>tpsharness load report</title>
<style>body {{ font-family: sans-serif; margin: 2em; max-width: 80em; }}
pre {{ background: #f4f4f4; padding: 1em; overflow-x: auto; }} img {{ max-width: 100%; }}
table {{ border-collapse: collapse; margin: 1em 0; }} td, th {{ border: 1px solid #ccc; padding: 0.3em 0.6em; }}
td.n {{ text-align: right; }}
.verdict {{ color: white; padding: 0.6em 1em; font-size: 1.2em; margin: 0.4em 0; }}
.nodata {{ color: #555; font-style: italic; }}</style>
</head><body>
<h1>tpsharness load report</h1>
{top}
<p>{len(runs)} run{'s' if several else ''}, each shown with its own configuration, and its rates from its
own duration:</p><ul>{files}</ul>
<p>The counts of what went wrong are the run's totals; the charts over time show what was sent and
delivered, connection and status errors, and relay latency, per second.</p>
{overview}{''.join(sections)}
</body></html>
"""


def _check_output(paths: Sequence[str], output: str, force: bool) -> None:
    """Refuse an output that is one of the inputs (even with ``force``), a directory,
    or a name that is taken (a file or a symlink, never written through) unless ``force``."""
    target = os.path.realpath(output)
    for path in paths:
        same = os.path.realpath(path) == target or (
            os.path.exists(output) and os.path.exists(path) and os.path.samefile(path, output))
        if same:
            raise InvalidArgument(f"-o {output} is the result file {path}: name another file for the page")
    folder = os.path.dirname(output) or "."
    if not os.path.isdir(folder):
        raise InvalidArgument(f"-o {output}: no directory {folder!r} to write it in")
    if os.path.isdir(output):
        raise InvalidArgument(f"-o {output} is a directory; give a file name")
    if os.path.lexists(output) and not force:
        raise InvalidArgument(f"{output} exists; give --force to overwrite it")


def write_report(paths: Sequence[str], output: str, *, force: bool = False) -> str:
    """The HTML page ``output`` for the result files at ``paths`` (one run each);
    a one-line summary. InvalidArgument (one sentence) for a file it cannot use, an
    output that is one of them, or one that exists (unless ``force``). The page is
    written to a temporary file and renamed into place: never half-written, and a
    symlink at ``output`` is replaced, never written through."""
    if len(paths) > MAX_FILES:
        raise InvalidArgument(f"{len(paths)} result files: a report shows at most {MAX_FILES}")
    _check_output(paths, output, force)
    _pyplot()           # the extra is needed even for a page without charts (a run with no data)
    runs = [(str(path), LoadResult.read_json(path)) for path in paths]
    page = render(runs)
    try:
        write_atomically(Path(output), page, force=force)
    except FileExistsError:
        raise InvalidArgument(f"{output} exists; give --force to overwrite it") from None
    except OSError as error:        # named by the output, not by its temporary file
        raise OSError(error.errno, error.strerror, output) from None
    passed = sum(result.passed for _, result in runs)
    delivered = sum(result.counters.get("delivered", 0) for _, result in runs)
    charts = page.count('src="data:image/png;base64,')
    return (f"{len(runs)} run{'s' if len(runs) != 1 else ''} ({passed} passed, {len(runs) - passed} failed), "
            f"{delivered:,} delivered in all, {charts} charts")
