"""The reference model: the bundled fake TPS, run in the fuzzer's own kernel.

``strict`` is the fake's default profile; ``field`` is its field profile, which
decides each TCP read as field servers do, rule by rule (docs/protocol.md section
3.1), so that a field-like server's framing is not reported again and again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..defaults import HOST

if TYPE_CHECKING:
    from fake_tps import FakeTPS

MODELS: dict[str, str] = {          # model name -> the fake's profile
    "strict": "default",
    "field": "field",
}


def make_model(name: str) -> FakeTPS:
    """A fresh fake TPS on a free loopback port, in the profile model ``name`` names."""
    from fake_tps import FakeTPS        # the fake ships beside tpsharness

    return FakeTPS(HOST, 0, profile=MODELS[name])
