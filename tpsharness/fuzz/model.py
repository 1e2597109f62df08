"""The reference model: the bundled fake TPS, run in the fuzzer's own kernel.

``strict`` is the fake as it is; ``field`` adds the field server's framing (each TCP
read is one message, docs/protocol.md section 3), so that a field server's known
framing is not reported again and again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..defaults import HOST

if TYPE_CHECKING:
    from fake_tps import FakeTPS

MODELS: dict[str, tuple[str, ...]] = {
    "strict": (),
    "field": ("one-read-one-message",),
}


def make_model(name: str) -> FakeTPS:
    """A fresh fake TPS on a free loopback port, with the faults model ``name`` names."""
    from fake_tps import FakeTPS        # the fake ships beside tpsharness

    return FakeTPS(HOST, 0, faults=MODELS[name])
