"""``tpsharness load`` and ``tpsharness report``: parsers and handlers.

Exit status of load: 0 every threshold held (the integrity ones by default), 1 one
failed, 2 the run could not be carried out (the TPS refused or died, a worker died:
what was measured is still shown), 3 usage (and a missing extra). report: 0, or 3
for a file it cannot use.
"""

from __future__ import annotations

import argparse
import sys

from ..argtypes import port, positive_int
from ..defaults import PORT, TIMEOUT
from ..errors import InvalidArgument, UsageError

USAGE = 3
NOT_CARRIED_OUT = 2
_EXTRAS = {"load": ("hdrh", "execnet"), "report": ("hdrh", "execnet", "matplotlib")}


def _whole_or_zero(text: str) -> int:
    """A whole number, 0 included (0: none)."""
    return 0 if text.strip() == "0" else positive_int(text)


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``load`` and ``report`` to the subcommands of ``python -m tpsharness``."""
    load = commands.add_parser(
        "load", help="capacity test: N held devices, M clients, latency percentiles, loss, thresholds",
        description="Drive N simulated devices and M clients against a TPS and report throughput, "
                    "latency percentiles (register, ack, relay, reply), loss/duplicates/reordering "
                    "counted at the devices, and errors by reason. Exit status 0 thresholds held, "
                    "1 a threshold failed, 2 the run could not be carried out, 3 usage error.")
    load.add_argument("host", nargs="?", metavar="HOST",
                      help="the TPS (default: the bundled fake TPS, started as a separate process)")
    load.add_argument("port", nargs="?", type=port, metavar="PORT", help=f"its port (default {PORT})")
    load.add_argument("--devices", type=positive_int, default=100, metavar="N", help="held devices (100)")
    load.add_argument("--clients", type=positive_int, default=10, metavar="M",
                      help="clients, spread evenly over the devices (10)")
    load.add_argument("--duration", type=_number, default=10.0, metavar="S", help="seconds of traffic (10)")
    mode = load.add_mutually_exclusive_group()
    mode.add_argument("--rate", type=_number, metavar="R",
                      help="open loop: R messages/s in total, latency from each one's scheduled time")
    mode.add_argument("--window", type=positive_int, metavar="W",
                      help="closed loop: W messages in flight per client (default 1)")
    load.add_argument("--payload-size", type=positive_int, default=64, metavar="B",
                      help="payload bytes, 32-byte header included (64)")
    load.add_argument("--ramp", type=_number, default=0.0, metavar="S",
                      help="spread the devices' connect and register over S seconds (0)")
    load.add_argument("--heartbeat", action="store_true",
                      help="devices re-register before the KeepAliveIntervel of the register reply")
    load.add_argument("--reply-every", type=_whole_or_zero, default=0, metavar="K",
                      help="every K-th message asks its device to answer (reply latency); 0: none")
    load.add_argument("--timeout", type=_number, default=TIMEOUT, metavar="S",
                      help="connect/register deadline; how long a window, and the end of the run, wait for "
                           "deliveries before counting messages as timed out or lost "
                           f"({TIMEOUT:g})")
    load.add_argument("--workers", type=positive_int, default=1, metavar="K",
                      help="K worker processes on this host (execnet popen gateways)")
    load.add_argument("--tx", action="append", default=[], metavar="SPEC",
                      help="a worker per SPEC, xdist style: popen, ssh=user@host//python=/venv/bin/python")
    load.add_argument("--threshold", action="append", default=[], metavar="EXPR",
                      help="'relay.p99<50ms', 'lost.rate<0.1%%', 'errors.rate<0.1%%', 'delivered.rate>=20000/s'; "
                           "one on misrouted, misattributed, lost, corrupted, duplicated, reordered, rejected, "
                           "unanswered or unregistered replaces its default (==0)")
    load.add_argument("--no-integrity-thresholds", dest="integrity", action="store_false",
                      help="do not hold the run to misrouted==0, misattributed==0, lost==0, corrupted==0, "
                           "duplicated==0, reordered==0, rejected==0, unanswered==0 and unregistered==0 (a run "
                           "that only measures speed; the counts are still shown)")
    load.add_argument("--json", metavar="FILE", help="write the result, histograms included, as JSON")
    load.add_argument("--csv", metavar="PREFIX", help="write PREFIX_series.csv, PREFIX_latency.csv and PREFIX_summary.csv")
    load.add_argument("--force", action="store_true",
                      help="replace the --json and --csv files if they exist (without it, a file there "
                           "stops the run before it starts)")
    load.add_argument("--quiet", action="store_true", help="no progress line")
    load.add_argument("--fake-option", action="append", default=[], metavar="ARG",
                      help="an option for the bundled fake TPS, e.g. --fake-option=--reply-delay=0.05")
    load.set_defaults(handler=cmd_load)

    report = commands.add_parser(
        "report", help="show load results (JSON) on one self-contained HTML page",
        description="Write an HTML page of RESULT.json files of load runs, each file shown as a run "
                    "of its own: summary, throughput and latency percentiles over time, latency "
                    "distribution. Needs matplotlib (the 'report' extra).")
    report.add_argument("results", nargs="+", metavar="RESULT.json")
    report.add_argument("-o", "--output", required=True, metavar="FILE", help="the HTML file to write")
    report.add_argument("--force", action="store_true", help="overwrite FILE if it exists (never a RESULT.json)")
    report.set_defaults(handler=cmd_report)


def missing_extra(command: str, error: ImportError) -> int:
    """One line naming the pip command for an extra that is not installed; USAGE.
    An ImportError of anything else is a bug, and raised again."""
    if (error.name or "").split(".")[0] not in _EXTRAS[command]:
        raise error
    print(f"tpsharness {command}: needs the '{command}' extra: pip install 'tpsharness[{command}]'",
          file=sys.stderr)
    return USAGE


def cmd_load(args: argparse.Namespace) -> int:
    """The load command; a usage error is raised as UsageError, which the command
    line reports with the usage of ``tpsharness load``."""
    from ..errors import LoadUsageError

    if args.port is not None and args.host is None:
        raise UsageError("a PORT without a HOST")
    try:
        from . import api, output
        from .result import csv_paths, unwritable
    except ImportError as error:
        return missing_extra("load", error)
    targets = [("--json", args.json)] if args.json else []
    targets += [("--csv", path) for path in csv_paths(args.csv)] if args.csv else []
    for option, path in targets:
        why = unwritable(path, force=args.force)
        if why:
            raise UsageError(f"{option} {path}: {why}")
    progress = None if args.quiet else output.Progress()

    def announce(address: tuple[str, int]) -> None:
        print(f"tpsharness load: no HOST PORT given: running against the bundled fake TPS at "
              f"{address[0]}:{address[1]} (python -m fake_tps, a separate process, stopped at the end)",
              flush=True)
    try:
        result = api.load(args.host, args.port, devices=args.devices, clients=args.clients,
                          duration=args.duration, rate=args.rate, window=args.window,
                          payload_size=args.payload_size, ramp=args.ramp, heartbeat=args.heartbeat,
                          reply_every=args.reply_every, timeout=args.timeout, workers=args.workers,
                          tx=args.tx, thresholds=args.threshold, integrity=args.integrity,
                          on_tick=progress, fake_args=args.fake_option, on_fake_started=announce)
    except LoadUsageError as error:
        if progress is not None:
            progress.done()
        raise UsageError(str(error)) from None
    except (OSError, RuntimeError) as error:
        if progress is not None:
            progress.done()
        print(f"tpsharness load: the run could not be carried out: {error}", file=sys.stderr)
        return NOT_CARRIED_OUT
    if progress is not None:
        progress.done()
    print(output.summary_text(result), flush=True)
    try:
        if args.json:
            result.write_json(args.json, force=args.force)
            print(f"wrote {args.json}")
        if args.csv:
            print("wrote " + ", ".join(result.write_csv(args.csv, force=args.force)))
    except OSError as error:
        print(f"tpsharness load: cannot write {error.filename or args.json or args.csv}: "
              f"{error.strerror or error}", file=sys.stderr)
        return max(result.exit_code, NOT_CARRIED_OUT)
    return result.exit_code


def cmd_report(args: argparse.Namespace) -> int:
    try:
        from .report import write_report
    except ImportError as error:
        return missing_extra("report", error)
    try:
        summary = write_report(args.results, args.output, force=args.force)
    except ImportError as error:        # matplotlib is imported when the first chart is drawn
        return missing_extra("report", error)
    except InvalidArgument as error:
        print(f"tpsharness report: {error}", file=sys.stderr)
        return USAGE
    except OSError as error:
        print(f"tpsharness report: {error.filename or args.output}: {error.strerror or error}",
              file=sys.stderr)
        return USAGE
    print(f"wrote {args.output}: {summary}")
    return 0
