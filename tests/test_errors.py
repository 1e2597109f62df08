"""One root for every exception, one module that defines them, and the stage prefix
that TPSError adds itself."""

import ast
import inspect
import pathlib

import pytest

import tpsharness
from tpsharness import errors

ROOT = pathlib.Path(tpsharness.__file__).parent.parent
# Private control flow, not errors: a kill thrown into a task, the fuzzer's search stop.
NOT_ERRORS = {("tpsharness/errors.py", "KillSignal"), ("tpsharness/fuzz/runner.py", "_Stop")}


def test_every_error_derives_from_the_root():
    classes = [value for value in vars(errors).values()
               if inspect.isclass(value) and issubclass(value, BaseException)
               and value.__module__ == errors.__name__]
    assert len(classes) > 20
    outside = [cls.__name__ for cls in classes
               if not issubclass(cls, errors.TPSHarnessError) and cls is not errors.KillSignal]
    assert outside == []
    assert not issubclass(errors.KillSignal, Exception)


def _exception_bases(node):
    names = {base.id if isinstance(base, ast.Name) else getattr(base, "attr", "") for base in node.bases}
    return any(name.endswith(("Error", "Exception", "Failure", "Signal")) or name in
               {"Exception", "BaseException", "Divergence", "ServerDown", "BadProbe", "UsageError"}
               for name in names)


def test_no_module_defines_an_exception_outside_errors_py():
    found = []
    for package in ("tpsharness", "fake_tps"):
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if relative == "tpsharness/errors.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ClassDef) and _exception_bases(node) \
                        and (relative, node.name) not in NOT_ERRORS:
                    found.append(f"{relative}: {node.name}")
    assert found == []


def test_moved_errors_keep_their_old_homes_and_kinds():
    from tpsharness import cli, exporter, scenario
    from tpsharness.fuzz import executor, process
    from tpsharness.load import config
    assert cli.UsageError is errors.UsageError
    assert config.LoadUsageError is errors.LoadUsageError
    assert issubclass(errors.LoadUsageError, errors.UsageError)
    assert exporter.BadProbe is errors.BadProbe
    assert executor.ServerDown is errors.ServerDown and process.ServerStartError is errors.ServerStartError
    assert scenario.ScenarioFailure is errors.ScenarioFailure
    assert issubclass(errors.ScenarioFailure, AssertionError)


@pytest.mark.parametrize("error_type", [errors.ConnectError, errors.RegisterError, errors.SendError,
                                        errors.UnknownDestination, errors.Rejected, errors.ReceiptError])
def test_a_tps_error_names_its_stage_itself(error_type):
    error = error_type("TPS 127.0.0.1:1 refused the connection after 1.0 ms", 0.001)
    assert str(error) == f"{error_type.stage}: TPS 127.0.0.1:1 refused the connection after 1.0 ms"
    assert error.elapsed == 0.001


def test_scenario_failure_carries_its_sentences():
    failure = errors.ScenarioFailure("x.json: step 2 (device: expect_reply)\n  expected: a\n  arrived:  b",
                                     expected="a", arrived="b")
    assert (failure.expected, failure.arrived) == ("a", "b")


def test_an_argument_nothing_can_run_with_is_caught_under_the_root_and_as_a_value_error():
    import pytest

    from fake_tps import FakeTPS
    from tpsharness import check
    from tpsharness.errors import InvalidArgument, TPSHarnessError
    from tpsharness.harness import Harness
    for bad in (lambda: check("127.0.0.1", 70000), lambda: check("127.0.0.1", 6604, timeout=0),
                lambda: check("127.0.0.1", 6604, payload="text"),
                lambda: Harness(("127.0.0.1", 6604), timeout=float("inf")),
                lambda: FakeTPS(faults={"no-such-fault"}), lambda: FakeTPS(idle_timeout=-1)):
        with pytest.raises(InvalidArgument) as caught:
            bad()
        assert isinstance(caught.value, TPSHarnessError) and isinstance(caught.value, ValueError)
