"""``pytest --pyargs tpsharness.fuzz --tps HOST:PORT``: fuzz the TPS under test.

One test: a fuzzing run of TPS_FUZZ_BUDGET seconds (default 20) with model
TPS_FUZZ_MODEL (strict) and seed TPS_FUZZ_SEED (0), that fails listing every
finding with its minimal program. TPS_FUZZ_OUTPUT names a directory for the
findings' scenario fixtures. Without --tps it fuzzes the bundled fake: a self-test.
"""

import argparse
import os

import pytest

from tpsharness.argtypes import seconds_between
from tpsharness.fuzz.cli import MAX_BUDGET
from tpsharness.fuzz.fixture import write
from tpsharness.fuzz.model import MODELS
from tpsharness.fuzz.runner import Fuzzer, Options

DEFAULT_BUDGET = 20.0


def _settings() -> tuple[float, str, int, list[str]]:
    """TPS_FUZZ_BUDGET, TPS_FUZZ_MODEL and TPS_FUZZ_SEED as the command line bounds
    them, and a line for each one that is wrong (the defaults stand in for them)."""
    problems = []
    budget, model, seed = DEFAULT_BUDGET, os.environ.get("TPS_FUZZ_MODEL", "strict"), 0
    if "TPS_FUZZ_BUDGET" in os.environ:
        try:
            budget = seconds_between(0, MAX_BUDGET, low_allowed=False)(os.environ["TPS_FUZZ_BUDGET"])
        except argparse.ArgumentTypeError as error:
            problems.append(f"TPS_FUZZ_BUDGET: {error}")
    if model not in MODELS:
        problems.append(f"TPS_FUZZ_MODEL: must be one of {', '.join(MODELS)}, not {model!r}")
    try:
        seed = int(os.environ.get("TPS_FUZZ_SEED", "0"))
    except ValueError:
        problems.append(f"TPS_FUZZ_SEED: must be an integer, not {os.environ['TPS_FUZZ_SEED']!r}")
    return budget, model, seed, problems


BUDGET, MODEL, SEED, PROBLEMS = _settings()
if PROBLEMS:        # a usage error, at collection: "ERROR: <each line>", exit status 4
    raise pytest.UsageError("\n".join(PROBLEMS))


@pytest.mark.timeout(BUDGET + 120)
def test_fuzzing_finds_no_difference_from_the_model(tps_address: tuple[str, int]) -> None:
    options = Options(target=tps_address, budget=BUDGET, model=MODEL, seed=SEED)
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
