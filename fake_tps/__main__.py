"""python -m fake_tps: serve the fake TPS until SIGINT or SIGTERM, then print counters."""

import argparse
import os
import resource
import signal
import sys
import textwrap
from collections.abc import Sequence

from tpsharness.version import __version__
from tpsharness.defaults import HOST, PORT
from tpsharness.kernel import Scheduler
from tpsharness.net import format_address

from .faults import FAULTS, Crash
from .jsonlog import JsonLines
from .options import FAULT_ALIASES, add_arguments, from_arguments
from .server import FakeTPS


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port (0-65535)")
    return port


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fake-tps" if sys.argv[0].endswith("fake-tps") else "python -m fake_tps",
        description="The bundled fake TPS (TransProxy Server): field replies byte for byte, "
                    "field behaviour (docs/protocol.md section 4), bounded and never crashed "
                    "by what a peer sends.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="faults (--fault NAME, repeatable):\n" + "\n".join(
            textwrap.fill(text, 100, initial_indent=f"  {name:25}", subsequent_indent=" " * 27)
            for name, text in [*((name, fault.description) for name, fault in FAULTS.items()),
                               *((old, f"the old name of --profile {profile}, which it now selects "
                                       f"(each read decided as field servers do)")
                                 for old, profile in FAULT_ALIASES.items())]))
    parser.add_argument("-V", "--version", action="version", version=f"%(prog)s (tpsharness {__version__})")
    parser.add_argument("--host", default=HOST, help=f"address to bind (default {HOST})")
    parser.add_argument("--port", type=_port, default=PORT,
                        help=f"port (default {PORT}; 0 picks a free one)")
    parser.add_argument("--log", metavar="FILE",
                        help="write one JSON line per event (connect, register, heartbeat, relay, "
                             "reply, close, fault fired) to FILE (appended to), or - for standard "
                             "output (the listening and stopped lines then go to stderr)")
    add_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    log = None
    if args.log is not None:
        try:
            log = JsonLines.open(args.log)
        except OSError as error:
            parser.error(f"argument --log: cannot open {args.log!r}: {error.strerror or error}")
    said = sys.stderr if args.log == "-" else sys.stdout    # stdout holds the events alone
    try:
        options = from_arguments(args)
        server = FakeTPS(args.host, args.port, on_event=log, **vars(options))
    except ValueError as error:         # what the argument types let through
        parser.error(str(error))
    except OSError as error:
        print(f"fake TPS: {error}", file=sys.stderr)
        return 1
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: server.request_stop())
    print(f"fake TPS listening on {format_address(server.address)}", file=said, flush=True)
    scheduler = Scheduler()
    try:
        scheduler.new(server.serve())
        scheduler.run()
    finally:
        scheduler.close()
        server.close()
        if log is not None:
            log.close()
    if server.crash is not None:
        return crash(server.crash)
    counters = " ".join(f"{name}={value}" for name, value in server.stats.as_dict().items())
    print(f"fake TPS stopped: {counters}", file=said, flush=True)
    return 0


def crash(how: Crash) -> int:
    """End the process as the planted crash says: its report on stderr, then its
    signal (no core file) or its exit status."""
    sys.stdout.flush()
    sys.stderr.write(how.report.replace("{pid}", str(os.getpid())))
    sys.stderr.flush()
    if how.signal is None:
        return how.status
    resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
    signal.signal(how.signal, signal.SIG_DFL)
    os.kill(os.getpid(), how.signal)
    return 128 + how.signal     # (not reached: the signal ends the process)


if __name__ == "__main__":
    sys.exit(main())
