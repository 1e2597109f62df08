"""A CheckResult rendered for monitoring: the plugin status line, JSON, Prometheus.

The probe metrics are defined once (``probe_metrics``): ``check --prometheus``
prints them here, the exporter serves the same through prometheus_client.
"""

from __future__ import annotations

import json
from typing import NamedTuple

from .checker import STAGES, CheckResult
from .thresholds import Range

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
STATE_NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}


def state_of(result: CheckResult, warning: Range | None = None,
             critical: Range | None = None) -> tuple[int, str | None]:
    """The plugin state: CRITICAL for a failure or total outside --critical, WARNING
    outside --warning, else OK; and the reason when a threshold decided it."""
    if not result.ok:
        return CRITICAL, None
    total = result.timings["total"]
    if critical is not None and critical.alerts(total):
        return CRITICAL, f"total {total:.1f} ms {critical.side} the critical range {critical.text}"
    if warning is not None and warning.alerts(total):
        return WARNING, f"total {total:.1f} ms {warning.side} the warning range {warning.text}"
    return OK, None


def plugin_text(text: str) -> str:
    """``text`` fit for a plugin's output line: a '|' (which starts perfdata) and every
    character that is not printable (a CR or LF would start another line) escaped."""
    if text.isprintable() and "|" not in text:
        return text
    return "".join("\\x7c" if char == "|" else char if char.isprintable() else repr(char)[1:-1]
                   for char in text)


def _perfdata(result: CheckResult, warning: Range | None, critical: Range | None) -> str:
    timings = result.timings
    fields = [f"{stage}={timings[stage]:.2f}ms" for stage in STAGES if stage in timings]
    fields.append(f"total={timings.get('total', 0):.2f}ms;{warning.text if warning else ''};"
                  f"{critical.text if critical else ''};0;")
    return " ".join(fields)


def status_line(result: CheckResult, state: int, reason: str | None = None,
                warning: Range | None = None, critical: Range | None = None) -> str:
    """``TPS OK - ... | connect=0.31ms ...``: one line, as monitoring systems read it."""
    text = plugin_text(result.message)
    if reason:
        text = f"{text} ({reason})"
    if result.embedded:
        text = f"{text} [embedded fake TPS: give HOST PORT to check a real one]"
    return f"TPS {STATE_NAMES[state]} - {text} | {_perfdata(result, warning, critical)}"


def json_text(result: CheckResult, state: int, reason: str | None = None,
              transcript: bool = False) -> str:
    """``CheckResult.to_dict()`` plus the plugin ``state``, its ``exit_code`` and the
    ``reason`` a threshold gave (None when none decided)."""
    data = result.to_dict(transcript=transcript)
    data.update(state=STATE_NAMES[state], exit_code=state, reason=reason)
    return json.dumps(data, sort_keys=True)


class ProbeMetric(NamedTuple):
    """One probe metric, a gauge: its name, its meaning (the HELP text), the name of its
    one label (None for none) and its samples, (label value or None, value)."""

    name: str
    help: str
    label: str | None
    samples: list[tuple[str | None, int | float]]


def probe_metrics(result: CheckResult, state: int) -> list[ProbeMetric]:
    """The metrics of one check, as ``check --prometheus`` and the exporter's /probe give
    them; ``state`` is the plugin state (state_of)."""
    timings = result.timings
    return [
        ProbeMetric("tps_probe_success", "Whether the check passed: the payload reached the "
                    "device within the timeout (1), or a stage failed (0).", None,
                    [(None, 1 if result.ok else 0)]),
        ProbeMetric("tps_probe_state", "The check's Monitoring Plugins state: 0 OK, 1 WARNING "
                    "(total time outside --warning), 2 CRITICAL (a stage failed, or outside "
                    "--critical).", None, [(None, state)]),
        ProbeMetric("tps_probe_duration_seconds", "How long each stage of the check took, for "
                    "each stage that ran.", "stage",
                    [(stage, round(timings[stage] / 1000, 6)) for stage in STAGES if stage in timings]),
        ProbeMetric("tps_probe_total_duration_seconds", "How long the whole check took.", None,
                    [(None, round(timings.get("total", 0) / 1000, 6))]),
        ProbeMetric("tps_probe_failed_stage", "The stage at which the check failed (1); 0 for "
                    "the others.", "stage",
                    [(stage, 1 if result.stage == stage else 0) for stage in STAGES]),
    ]


def prometheus_text(result: CheckResult, state: int) -> str:
    """The text exposition format, as a blackbox-style prober gives it (the core has no
    prometheus_client: these few gauges, whose label values are our stage names, are
    written here; the exporter uses the library)."""
    lines = []
    for metric in probe_metrics(result, state):
        lines += [f"# HELP {metric.name} {metric.help}", f"# TYPE {metric.name} gauge"]
        for label, value in metric.samples:
            shown = f"{value:.6f}" if isinstance(value, float) else str(value)
            labels = f'{{{metric.label}="{label}"}}' if metric.label else ""
            lines.append(f"{metric.name}{labels} {shown}")
    return "\n".join(lines)
