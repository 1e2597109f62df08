"""k6-style thresholds on a LoadResult: 'relay.p99<50ms', 'lost==0',
'errors.rate<0.1%', 'delivered.rate>=20000/s'.

    METRIC OP VALUE[UNIT]     OP: < <= > >= == !=
    latency:  register|ack|relay|reply . p50|p90|p99|p99.9|max|count   units us, ms, s
    counts:   sent acked delivered misrouted misattributed lost duplicated reordered
              corrupted rejected replies answers unanswered heartbeats devices
              unregistered clients unsent errors                        no unit
    rates:    COUNT.rate        per second of traffic ('/s'), or for errors, misrouted,
              misattributed, lost, duplicated, reordered, corrupted, rejected: a
              fraction of sent ('%')

Integrity holds by default: ``misrouted==0``, ``misattributed==0``, ``lost==0``,
``corrupted==0``, ``duplicated==0``, ``reordered==0``, ``rejected==0``,
``unanswered==0`` and ``unregistered==0`` are checked in every run unless the user
gives a threshold on that count (which replaces its default) or turns them off.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .accounting import JUDGED
from .config import LoadUsageError
from .histograms import LATENCIES

if TYPE_CHECKING:
    from .result import LoadResult

_OPERATORS: dict[str, Callable[[float, float], bool]] = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
              "==": operator.eq, "!=": operator.ne}
_SYNTAX = re.compile(r"^\s*([a-z][a-z0-9.]*)\s*(<=|>=|==|!=|<|>)\s*([0-9]*\.?[0-9]+)\s*(us|ms|s|%|/s)?\s*$")
_COUNTS = ("sent", "acked", "delivered", "misrouted", "misattributed", "lost", "duplicated", "reordered",
           "corrupted", "rejected", "replies", "answers", "unanswered", "heartbeats", "devices",
           "unregistered", "clients", "unsent", "errors")
_FRACTIONS = ("errors", "misrouted", "misattributed", "lost", "duplicated", "reordered", "corrupted", "rejected")
DEFAULTS = tuple(f"{kind}==0" for kind in JUDGED)
"""The thresholds every run is held to unless told otherwise: integrity."""
_STATS = ("p50", "p90", "p99", "p99.9", "max", "count")
_TO_MS: dict[str | None, float] = {"us": 0.001, "ms": 1.0, "s": 1000.0}


@dataclass(frozen=True)
class Threshold:
    """One parsed expression; ``check(result)`` -> (held, observed text)."""

    text: str
    metric: str
    compare: Callable[[float, float], bool]
    value: float
    unit: str | None
    default: bool = False       # one of DEFAULTS, not given by the user

    @property
    def count(self) -> str:
        """The count or phase it is about ('lost' for 'lost.rate<0.1%')."""
        return self.metric.partition(".")[0]

    @classmethod
    def parse(cls, text: str, *, default: bool = False) -> Threshold:
        match = _SYNTAX.match(text)
        if not match:
            raise LoadUsageError(f"bad threshold {text!r}: write METRIC OP VALUE, e.g. 'relay.p99<50ms', "
                                 "'lost==0', 'errors.rate<0.1%', 'delivered.rate>=20000/s'")
        metric, op, number, unit = match.groups()
        value = float(number)
        head, _, stat = metric.partition(".")
        if head in LATENCIES:
            if stat not in _STATS:
                raise LoadUsageError(f"bad threshold {text!r}: {head} has {', '.join(_STATS)}")
            if stat == "count":
                if unit is not None:
                    raise LoadUsageError(f"bad threshold {text!r}: a count takes no unit")
            elif unit not in _TO_MS:
                raise LoadUsageError(f"bad threshold {text!r}: a latency is in us, ms or s "
                                     f"('{metric}{op}{number}ms')")
        elif head in _COUNTS and stat == "rate":
            if unit == "%" and head not in _FRACTIONS:
                raise LoadUsageError(f"bad threshold {text!r}: a percentage is for "
                                     f"{', '.join(_FRACTIONS)} (of the messages sent)")
            if unit not in ("%", "/s"):
                raise LoadUsageError(f"bad threshold {text!r}: a rate is in /s, or % of sent")
        elif head in _COUNTS and not stat:
            if unit is not None:
                raise LoadUsageError(f"bad threshold {text!r}: a count takes no unit")
        else:
            raise LoadUsageError(f"bad threshold {text!r}: unknown metric {metric!r} (latencies "
                                 f"{'/'.join(LATENCIES)}.p99 etc., counts {', '.join(_COUNTS)}, COUNT.rate)")
        return cls(text.strip(), metric, _OPERATORS[op], value, unit, default)

    def observed(self, result: LoadResult) -> float | None:
        """The value compared (ms, count, /s or %), or None when nothing was measured."""
        head, _, stat = self.metric.partition(".")
        if head in LATENCIES:
            if result.unmeasurable(head):
                return None
            figure = result.latency(head)[stat]
            return None if figure is None else (figure if stat == "count" else figure / _TO_MS[self.unit])
        count = result.error_count if head == "errors" else result.counters.get(head, 0)
        if stat != "rate":
            return count
        if self.unit == "%":
            sent = result.counters.get("sent", 0)
            return count / sent * 100 if sent else None
        return count / result.duration if result.duration else None

    def check(self, result: LoadResult) -> tuple[bool, str]:
        value = self.observed(result)
        if value is None:
            why = result.unmeasurable(self.count)
            return False, f"not measurable: {why}" if why else "nothing measured"
        shown = f"{value:g}" if isinstance(value, int) else f"{value:.3f}".rstrip("0").rstrip(".")
        return bool(self.compare(value, self.value)), shown + (self.unit or "")


def parse_all(texts: Iterable[str] | None, *, integrity: bool = True) -> list[Threshold]:
    """The user's thresholds, after the integrity DEFAULTS (unless ``integrity`` is
    False) that no user threshold is about: 'lost.rate<0.1%' replaces 'lost==0'."""
    given = [Threshold.parse(text) for text in texts or ()]
    if not integrity:
        return given
    covered = {threshold.count for threshold in given}
    defaults = [Threshold.parse(text, default=True) for text in DEFAULTS
                if text.partition("==")[0] not in covered]
    return defaults + given


def apply(result: LoadResult, thresholds: Iterable[Threshold]) -> LoadResult:
    """Check each threshold on ``result``; stored in ``result.thresholds`` (the
    defaults among them named in ``result.default_thresholds``)."""
    result.thresholds = []
    result.default_thresholds = []
    for threshold in thresholds:
        held, observed = threshold.check(result)
        result.thresholds.append((threshold.text, held, observed))
        if threshold.default:
            result.default_thresholds.append(threshold.text)
    return result
