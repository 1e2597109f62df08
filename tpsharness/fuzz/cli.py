"""``python -m tpsharness fuzz``: the parser, running the servers, the findings written, exit status.

Exit status: 0 nothing found, 1 something found, 2 the run failed (a server command
that never listens, a server that cannot be reached, Ctrl-C or SIGTERM before a
finding), 3 usage error (and a missing 'fuzz' extra).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from typing import TYPE_CHECKING

from ..argtypes import address, port as _port, positive_int as _positive_int, seconds_between
from ..defaults import HOST
from ..errors import Interrupted
from ..text import printable
from .stopping import SWITCH
from .summary import print_summary, progress_printer, summary

if TYPE_CHECKING:
    from .process import ServerProcess
    from .programs import Program
    from .report import Report

Address = tuple[str, int]

FOUND, NOTHING, FAILED, USAGE = 1, 0, 2, 3
SELF_TEST_COMMAND = "{python} -m fake_tps --port {port}"
MAX_BUDGET = 7 * 24 * 3600.0    # a week: a longer campaign is a series of runs
MAX_SETTLE = 30.0               # seconds a point waits for the server (confirmations x10)
MAX_START_TIMEOUT = 600.0       # seconds a server command may take to listen
FIELD_SELF_TEST = " --profile field"
STOPPED_BY = {signal.SIGINT: "interrupt", signal.SIGTERM: "SIGTERM"}   # a signal -> the run's stop reason


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add ``fuzz`` to the subcommands of tpsharness's parser."""
    from .model import MODELS

    parser = commands.add_parser(
        "fuzz", help="differential fuzzing: random programs against the TPS and the model",
        description="Run random programs of devices, clients and raw connections against the TPS "
                    "and against the model (the bundled fake, in-process), or against a reference "
                    "server, compare what each shows, shrink every difference to a minimal program "
                    "and write it as a scenario fixture. It tries to crash the server: do not point "
                    "it at production. Exit status 0 nothing found, 1 found, 2 run failed, 3 usage error.")
    parser.add_argument("host", nargs="?", metavar="HOST",
                        help="the TPS (default: the bundled fake, started as a process: a self-test)")
    parser.add_argument("port", nargs="?", type=_port, metavar="PORT", help="its port")
    parser.add_argument("--server-cmd", metavar="CMD",
                        help="a shell command line (run by /bin/sh, so 'cd DIR && exec ./server' "
                             "works) that starts the server; it is restarted after each crash, its "
                             "crashes triaged from its exit status and output; {port} in CMD is "
                             "replaced by a free loopback port (then HOST PORT may be left out)")
    parser.add_argument("--reference", type=address(None), metavar="HOST:PORT",
                        help="compare the server with this one (a last release, another "
                             "implementation) instead of with the model")
    parser.add_argument("--reference-cmd", metavar="CMD",
                        help="start the reference with CMD (a shell line with {port}), restarted "
                             "after its crashes")
    parser.add_argument("--seeds", metavar="DIR",
                        help="start from the scenario files (*.tps.json) under DIR: fixtures, "
                             "findings, recorded conversations; their steps are mutated and extended")
    parser.add_argument("--budget", type=seconds_between(0, MAX_BUDGET, low_allowed=False), default=60.0, metavar="SECONDS",
                        help="how long to explore and shrink (default 60); the program under way and "
                             "the confirmation of the last finding may take up to 5 s more")
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
    parser.add_argument("--settle", type=seconds_between(0, MAX_SETTLE, low_allowed=False), default=0.25, metavar="SECONDS",
                        help="how long to wait for what the model produced (default 0.25)")
    parser.add_argument("--start-timeout", type=seconds_between(0, MAX_START_TIMEOUT, low_allowed=False), default=10.0, metavar="SECONDS",
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
    import tempfile
    try:
        os.makedirs(directory, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            return None
    except OSError as error:
        return error.strerror or str(error)


def _seeds(directory: str) -> tuple[Program, ...] | str:
    """The programs of ``directory``'s scenarios (each skipped one said on stderr), or why none."""
    from .seeds import load_seeds
    if not os.path.isdir(directory):
        return f"--seeds {directory}: not a directory"
    seeds = load_seeds(directory)
    for path, reason in seeds.skipped:
        print(f"tpsharness fuzz: --seeds: skipped {path}: {reason}", file=sys.stderr)
    for path in seeds.cut:
        print(f"tpsharness fuzz: --seeds: {path}: only its first steps are used", file=sys.stderr)
    if not seeds.programs:
        return f"--seeds {directory}: no scenario there the fuzzer can play ({len(seeds.skipped)} skipped)"
    print(f"tpsharness fuzz: --seeds: {len(seeds.programs)} programs from {directory}", file=sys.stderr)
    return tuple(seeds.programs)


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
    if args.reference is not None and args.reference_cmd is not None:
        return _usage("give --reference or --reference-cmd, not both")
    if args.output:         # checked before the run, so that no finding is lost at its end
        problem = _unwritable(args.output)
        if problem:
            return _usage(f"-o {args.output}: {problem}")
    seeds: tuple[Program, ...] = ()
    if args.seeds is not None:
        loaded = _seeds(args.seeds)
        if isinstance(loaded, str):
            return _usage(loaded)
        seeds = loaded
    command = args.server_cmd
    if command is None and args.host is None:
        command = SELF_TEST_COMMAND.replace("{python}", sys.executable)
        if args.model == "field":
            command += FIELD_SELF_TEST
    servers: list[ServerProcess] = []

    def stop(signum: int, frame: object) -> None:     # the servers are stopped on the way out
        SWITCH.request(STOPPED_BY.get(signal.Signals(signum), "a signal"))

    SWITCH.arm()
    previous = {signum: signal.signal(signum, stop) for signum in STOPPED_BY}
    try:
        try:
            server = ServerProcess(command, args.host or HOST, args.port, start_timeout=args.start_timeout) \
                if command is not None else None
            reference_server = ServerProcess(args.reference_cmd, start_timeout=args.start_timeout, role="reference") \
                if args.reference_cmd is not None else None
        except ValueError as error:
            return _usage(str(error))
        servers = [process for process in (server, reference_server) if process is not None]
        for process in servers:
            process.start()
        target: Address = server.address if server is not None else (args.host, args.port)
        if server is None:
            _reachable(target, "the TPS")
        reference = reference_server.address if reference_server is not None else args.reference
        if args.reference is not None:
            _reachable(args.reference, "the reference")
        options = Options(target=target, model=args.model, budget=args.budget,
                          max_programs=args.max_programs, max_findings=args.max_findings,
                          max_steps=args.max_steps, seed=args.seed, ignore=tuple(args.ignore),
                          settle=args.settle, server=server, reference=reference,
                          reference_server=reference_server, seeds=seeds,
                          progress=None if args.json else progress_printer())
        fuzzer = Fuzzer(options)
        try:
            report = fuzzer.run()
        except (Interrupted, KeyboardInterrupt):    # what was found so far still counts
            report = fuzzer.report
        finally:
            SWITCH.disarm()
        target = server.address if server is not None else target       # restarts move it
        reference = reference_server.address if reference_server is not None else reference
        restarts = sum(process.restarts for process in servers)
    except (Interrupted, KeyboardInterrupt):        # before the first program
        SWITCH.disarm()
        print(f"tpsharness fuzz: {_stopped_word()} before the run began", file=sys.stderr)
        return FAILED
    except ServerStartError as error:
        print(f"tpsharness fuzz: {error}", file=sys.stderr)
        return FAILED
    except (OSError, TimeoutError) as error:
        print(f"tpsharness fuzz: the run failed: {error}", file=sys.stderr)
        return FAILED
    finally:
        SWITCH.disarm()         # a second signal must not cut the cleaning up short
        for process in servers:
            process.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    interrupted = SWITCH.requested is not None
    if interrupted:
        report.stopped_by = SWITCH.requested or ""
        print(f"tpsharness fuzz: {_stopped_word()}", file=sys.stderr)
    paths = _write(report, args, target)
    if args.json:
        print(json.dumps(summary(report, target, args.model, paths, reference, restarts), indent=2))
    else:
        print_summary(report, target, args.model, paths, self_test=args.host is None and args.server_cmd is None,
                      reference=reference, restarts=restarts)
    for signature in dict.fromkeys(args.ignore):
        if signature not in report.ignored:
            print(f"tpsharness fuzz: --ignore {printable(signature)}: matched nothing in this run", file=sys.stderr)
    if report.findings:
        return FOUND
    return FAILED if interrupted else NOTHING


def _stopped_word() -> str:
    return "terminated" if SWITCH.requested == "SIGTERM" else "interrupted"


def _write(report: Report, args: argparse.Namespace, target: Address) -> dict[str, str]:
    """Each finding as a fixture in ``-o DIR``: signature -> path (a failure said, the rest written)."""
    from .fixture import write_all
    paths: dict[str, str] = {}
    if not args.output:
        return paths
    for finding, written in write_all(report.findings.values(), args.output, args.model,
                                      f"{target[0]}:{target[1]}", force=args.force,
                                      run_crashed=report.crashes > 0):
        if isinstance(written, OSError):
            print(f"tpsharness fuzz: cannot write {finding.signature} to {args.output}: "
                  f"{written.strerror or written}", file=sys.stderr)
        else:
            paths[finding.signature] = str(written)
    return paths


def _reachable(target: Address, what: str) -> None:
    """OSError naming the target unless it accepts a connection."""
    import socket

    try:
        with socket.create_connection(target, timeout=5):
            pass
    except OSError as error:
        raise OSError(f"cannot connect to {what} at {target[0]}:{target[1]}: "
                      f"{error.strerror or error}") from None


def _usage(message: str) -> int:
    print(f"tpsharness fuzz: error: {message}", file=sys.stderr)
    return USAGE
