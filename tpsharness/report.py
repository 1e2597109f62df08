"""A CheckResult rendered for monitoring: the plugin status line, JSON, Prometheus."""

from __future__ import annotations

import json

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
        return CRITICAL, f"total {total:.1f} ms outside the critical range {critical.text}"
    if warning is not None and warning.alerts(total):
        return WARNING, f"total {total:.1f} ms outside the warning range {warning.text}"
    return OK, None


def _perfdata(result: CheckResult, warning: Range | None, critical: Range | None) -> str:
    timings = result.timings
    fields = [f"{stage}={timings[stage]:.2f}ms" for stage in STAGES if stage in timings]
    fields.append(f"total={timings.get('total', 0):.2f}ms;{warning.text if warning else ''};"
                  f"{critical.text if critical else ''};0;")
    return " ".join(fields)


def status_line(result: CheckResult, state: int, reason: str | None = None,
                warning: Range | None = None, critical: Range | None = None) -> str:
    """``TPS OK - ... | connect=0.31ms ...``: one line, as monitoring systems read it."""
    text = result.message
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


def prometheus_text(result: CheckResult) -> str:
    """The text exposition format, as a blackbox-style prober gives it."""
    lines = [
        "# HELP tps_probe_success Whether the TPS check succeeded (1) or failed (0).",
        "# TYPE tps_probe_success gauge",
        f"tps_probe_success {1 if result.ok else 0}",
        "# HELP tps_probe_duration_seconds How long each stage of the check took.",
        "# TYPE tps_probe_duration_seconds gauge",
    ]
    for stage in STAGES:
        if stage in result.timings:
            lines.append(f'tps_probe_duration_seconds{{stage="{stage}"}} {result.timings[stage] / 1000:.6f}')
    lines += [
        "# HELP tps_probe_total_duration_seconds How long the whole check took.",
        "# TYPE tps_probe_total_duration_seconds gauge",
        f"tps_probe_total_duration_seconds {result.timings.get('total', 0) / 1000:.6f}",
        "# HELP tps_probe_failed_stage The stage at which the check failed (1); 0 for the others.",
        "# TYPE tps_probe_failed_stage gauge",
    ]
    for stage in STAGES:
        lines.append(f'tps_probe_failed_stage{{stage="{stage}"}} {1 if result.stage == stage else 0}')
    return "\n".join(lines)
