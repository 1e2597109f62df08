"""``pytest --pyargs tpsharness.fuzz --tps HOST:PORT``: fuzz the TPS under test.

One test: a fuzzing run of TPS_FUZZ_BUDGET seconds (default 20) with model
TPS_FUZZ_MODEL (strict) and seed TPS_FUZZ_SEED (0), that fails listing every
finding with its minimal program. TPS_FUZZ_OUTPUT names a directory for the
findings' scenario fixtures. Without --tps it fuzzes the bundled fake: a self-test.
"""

import os

import pytest

from tpsharness.fuzz.fixture import write
from tpsharness.fuzz.runner import Fuzzer, Options

BUDGET = float(os.environ.get("TPS_FUZZ_BUDGET", "20"))


@pytest.mark.timeout(BUDGET + 120)
def test_fuzzing_finds_no_difference_from_the_model(tps_address: tuple[str, int]) -> None:
    from tpsharness.fuzz.model import MODELS
    model = os.environ.get("TPS_FUZZ_MODEL", "strict")
    if not BUDGET > 0 or model not in MODELS:
        raise pytest.UsageError(f"TPS_FUZZ_BUDGET must be above 0 (is {BUDGET:g}) and TPS_FUZZ_MODEL "
                                f"one of {', '.join(MODELS)} (is {model!r})")
    options = Options(target=tps_address, budget=BUDGET, model=model,
                      seed=int(os.environ.get("TPS_FUZZ_SEED", "0")))
    report = Fuzzer(options).run()
    assert report.programs > 0, f"no program ran in {report.elapsed:.1f} s (stopped by {report.stopped_by})"
    if not report.findings:
        return
    lines = [f"{len(report.findings)} difference(s) from the model in {report.programs} programs:"]
    for signature, finding in report.findings.items():
        lines.append(f"\n{signature}: {finding.difference.describe()}")
        lines += [f"  {number:3}. {step}" for number, (step, ran) in enumerate(finding.listing(), 1) if ran]
        if os.environ.get("TPS_FUZZ_OUTPUT"):
            lines.append(f"  written to {write(finding, os.environ['TPS_FUZZ_OUTPUT'], options.model)}")
    pytest.fail("\n".join(lines), pytrace=False)
