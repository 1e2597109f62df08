"""``python -m tpsharness fuzz``: the parser, live progress, the summary, exit status.

Exit status: 0 nothing found, 1 something found, 2 the run failed (a server command
that never listens, a server that cannot be reached), 3 usage error.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from typing import TYPE_CHECKING, Any, Callable, TextIO

from ..argtypes import port as _port, positive_int as _positive_int
from ..defaults import HOST

if TYPE_CHECKING:
    from .process import ServerProcess
    from .runner import Report

Address = tuple[str, int]

FOUND, NOTHING, FAILED, USAGE = 1, 0, 2, 3
SELF_TEST_COMMAND = "{python} -m fake_tps --port {port}"


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"the budget must be above 0 seconds, not {text}")
    return value


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add ``fuzz`` to the subcommands of tpsharness's parser."""
    from .model import MODELS

    parser = commands.add_parser(
        "fuzz", help="differential fuzzing: random programs against the TPS and the model",
        description="Run random programs of devices, clients and raw connections against the TPS "
                    "and against the model (the bundled fake, in-process), compare what each "
                    "shows, shrink every difference to a minimal program and write it as a "
                    "scenario fixture. It tries to crash the server: do not point it at "
                    "production. Exit status 0 nothing found, 1 found, 2 run failed, 3 usage error.")
    parser.add_argument("host", nargs="?", metavar="HOST",
                        help="the TPS (default: the bundled fake, started as a process: a self-test)")
    parser.add_argument("port", nargs="?", type=_port, metavar="PORT", help="its port")
    parser.add_argument("--server-cmd", metavar="CMD",
                        help="start the server with CMD and restart it after each crash; {port} in "
                             "CMD is replaced by a free loopback port (then HOST PORT may be left out)")
    parser.add_argument("--budget", type=_positive_seconds, default=60.0, metavar="SECONDS",
                        help="how long to fuzz (default 60)")
    parser.add_argument("--max-steps", type=_positive_int, default=10, metavar="N",
                        help="the most steps in one program (default 10)")
    parser.add_argument("--max-programs", type=_positive_int, metavar="N",
                        help="stop after N programs (with --seed, a run that repeats exactly)")
    parser.add_argument("--max-findings", type=_positive_int, metavar="N", help="stop after N findings")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--model", choices=sorted(MODELS), default="strict",
                        help="strict: the fake as it is (default); field: with the field server's "
                             "framing, one TCP read = one message")
    parser.add_argument("--ignore", action="append", default=[], metavar="SIGNATURE",
                        help="a known finding's signature to silence (repeatable)")
    parser.add_argument("--settle", type=_positive_seconds, default=0.25, metavar="SECONDS",
                        help="how long to wait for what the model produced (default 0.25)")
    parser.add_argument("--start-timeout", type=_positive_seconds, default=10.0, metavar="SECONDS",
                        help="how long the server command may take to listen (default 10)")
    parser.add_argument("-o", "--output", metavar="DIR",
                        help="write each finding as DIR/test_<signature>.tps.json (a name taken gets "
                             "_2, _3...: nothing is overwritten)")
    parser.add_argument("--force", action="store_true",
                        help="with -o, replace a file of the same name instead")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    return parser


def _unwritable(directory: str) -> str | None:
    """Why findings could not be written to ``directory`` (made if missing), or None."""
    import os
    import tempfile
    try:
        os.makedirs(directory, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            return None
    except OSError as error:
        return error.strerror or str(error)


def cmd_fuzz(args: argparse.Namespace) -> int:
    """Run the fuzzer the arguments describe; the exit status."""
    try:
        import hypothesis   # noqa: F401  (an optional extra: say so plainly)
    except ImportError:
        print("tpsharness fuzz: needs the 'fuzz' extra: pip install 'tpsharness[fuzz]'", file=sys.stderr)
        return USAGE
    from .process import ServerProcess, ServerStartError
    from .runner import Fuzzer, Options

    if (args.host is None) != (args.port is None):
        return _usage("give both HOST and PORT, or neither")
    if args.output:         # checked before the run, so that no finding is lost at its end
        problem = _unwritable(args.output)
        if problem:
            return _usage(f"-o {args.output}: {problem}")
    command = args.server_cmd
    if command is None and args.host is None:
        command = SELF_TEST_COMMAND.replace("{python}", sys.executable)
        if args.model == "field":
            command += " --profile field"
    server: ServerProcess | None = None
    target: Address
    interrupted = False
    terminated: list[str] = []

    def terminate(signum: int, frame: object) -> None:
        terminated.append("SIGTERM")
        raise KeyboardInterrupt     # unwinds as Ctrl-C does: the servers are stopped on the way out

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        if command is not None:
            try:
                server = ServerProcess(command, args.host or HOST, args.port,
                                       start_timeout=args.start_timeout)
            except ValueError as error:
                return _usage(str(error))
            server.start()
            target = server.address
        else:
            target = (args.host, args.port)
            _reachable(target)
        options = Options(target=target, model=args.model, budget=args.budget,
                          max_programs=args.max_programs, max_findings=args.max_findings,
                          max_steps=args.max_steps, seed=args.seed, ignore=tuple(args.ignore),
                          settle=args.settle, server=server,
                          progress=None if args.json else _progress_printer())
        fuzzer = Fuzzer(options)
        try:
            report = fuzzer.run()
        except KeyboardInterrupt:       # Ctrl-C or SIGTERM: what was found so far still counts
            report, interrupted = fuzzer.report, True
            report.stopped_by = terminated[0] if terminated else "interrupt"
            print(f"tpsharness fuzz: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
    except KeyboardInterrupt:           # before the first program
        print(f"tpsharness fuzz: {'terminated' if terminated else 'interrupted'} before the run began",
              file=sys.stderr)
        return FAILED
    except ServerStartError as error:
        print(f"tpsharness fuzz: {error}", file=sys.stderr)
        return FAILED
    except (OSError, TimeoutError) as error:
        print(f"tpsharness fuzz: the run failed: {error}", file=sys.stderr)
        return FAILED
    finally:
        interrupt = signal.signal(signal.SIGINT, signal.SIG_IGN)    # a second Ctrl-C must not
        signal.signal(signal.SIGTERM, signal.SIG_IGN)               # cut the cleaning up short
        if server is not None:
            server.close()
        signal.signal(signal.SIGINT, interrupt)
        signal.signal(signal.SIGTERM, previous)
    paths: dict[str, str] = {}
    if args.output:
        from .fixture import write
        for signature, finding in report.findings.items():
            try:
                paths[signature] = str(write(finding, args.output, args.model, f"{target[0]}:{target[1]}",
                                             force=args.force))
            except OSError as error:
                print(f"tpsharness fuzz: cannot write {signature} to {args.output}: "
                      f"{error.strerror or error}", file=sys.stderr)
    if args.json:
        print(json.dumps(summary(report, target, args.model, paths), indent=2))
    else:
        print_summary(report, target, args.model, paths, self_test=args.host is None and args.server_cmd is None)
    if report.findings:
        return FOUND
    return FAILED if interrupted else NOTHING


def _reachable(target: Address) -> None:
    """OSError naming the target unless it accepts a connection."""
    import socket

    try:
        with socket.create_connection(target, timeout=5):
            pass
    except OSError as error:
        raise OSError(f"cannot connect to the TPS at {target[0]}:{target[1]}: "
                      f"{error.strerror or error}") from None


def _usage(message: str) -> int:
    print(f"tpsharness fuzz: error: {message}", file=sys.stderr)
    return USAGE


def _progress_printer(stream: TextIO | None = None) -> Callable[[Report], None]:
    stream = stream or sys.stderr
    live = stream.isatty()

    def show(report: Report) -> None:
        line = (f"fuzz: {report.elapsed:5.0f} s  {report.programs} programs  {report.steps} steps  "
                f"{report.steps_per_second:.0f} steps/s  {len(report.findings)} findings")
        if live:
            print(f"\r{line}", end="", file=stream, flush=True)
        elif int(report.elapsed) % 10 == 0:
            print(line, file=stream, flush=True)
    return show


def summary(report: Report, target: Address, model: str,
            paths: dict[str, str] | None = None) -> dict[str, Any]:
    """The run as a JSON-able dict."""
    paths = paths or {}
    return {
        "target": f"{target[0]}:{target[1]}", "model": model, "programs": report.programs,
        "steps": report.steps, "seconds": round(report.elapsed, 3),
        "steps_per_second": round(report.steps_per_second, 1), "crashes": report.crashes,
        "stopped_by": report.stopped_by, "unrepeatable": report.unrepeatable,
        "findings": [{"signature": signature, "class": finding.difference.cls,
                      "description": finding.difference.describe(),
                      "program": [str(step) + ("" if ran else "  (skipped)")
                                  for step, ran in finding.listing()],
                      "found_after": round(finding.found_after, 3),
                      "fixture": paths.get(signature)}
                     for signature, finding in report.findings.items()],
    }


def print_summary(report: Report, target: Address, model: str, paths: dict[str, str] | None = None,
                  self_test: bool = False, stream: TextIO | None = None) -> None:
    stream = stream or sys.stdout
    paths = paths or {}
    if sys.stderr.isatty():
        print(file=sys.stderr)
    what = "the bundled fake against itself" if self_test else f"{target[0]}:{target[1]}"
    print(f"tpsharness fuzz: {what}, model {model}: {report.programs} programs, {report.steps} steps "
          f"in {report.elapsed:.1f} s ({report.steps_per_second:.0f} steps/s, each also run on the "
          f"model), stopped by {report.stopped_by}", file=stream)
    if report.unrepeatable:
        print(f"  {len(report.unrepeatable)} difference(s) did not repeat with a patient settle "
              f"window and were dropped: {', '.join(report.unrepeatable)}", file=stream)
    if not report.findings:
        print("  found nothing", file=stream)
        return
    print(f"  {len(report.findings)} finding(s):", file=stream)
    for signature, finding in report.findings.items():
        print(f"\n  {signature}  (after {finding.found_after:.1f} s)", file=stream)
        print(f"    {finding.difference.describe()}", file=stream)
        for number, (step, ran) in enumerate(finding.listing(), 1):
            print(f"    {number:3}. {step}{'' if ran else '  (skipped: its connection was closed)'}",
                  file=stream)
        if signature in paths:
            print(f"    written to {paths[signature]}", file=stream)
