"""Threshold ranges in the Monitoring Plugins syntax (nagios-plugins guidelines).

    10      alert if x < 0 or x > 10
    10:     alert if x < 10
    ~:10    alert if x > 10
    10:20   alert if x < 10 or x > 20
    @10:20  alert if 10 <= x <= 20
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import InvalidArgument


@dataclass(frozen=True)
class Range:
    """A parsed range; ``alerts(x)`` tells whether x is outside it (inside, with @)."""

    text: str
    low: float
    high: float
    inside: bool = False

    @classmethod
    def parse(cls, text: str) -> Range:
        raw = text.strip()
        spec = raw
        inside = spec.startswith("@")
        if inside:
            spec = spec[1:]
        try:
            if ":" in spec:
                low_text, high_text = spec.split(":", 1)
                low = -math.inf if low_text == "~" else float(low_text) if low_text else 0.0
                high = float(high_text) if high_text else math.inf
            else:
                low, high = 0.0, float(spec)
        except ValueError:
            raise InvalidArgument(f"bad range {text!r}: use N, N:, ~:N, N:M or @N:M") from None
        if low > high:
            raise InvalidArgument(f"bad range {text!r}: the start is above the end")
        return cls(raw, low, high, inside)

    @property
    def side(self) -> str:
        """Where a value that alerts lies: 'outside' the range, or 'inside' an @ range."""
        return "inside" if self.inside else "outside"

    def alerts(self, value: float) -> bool:
        within = self.low <= value <= self.high
        return within if self.inside else not within
