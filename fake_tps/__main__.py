"""python -m fake_tps: serve the fake TPS until SIGINT or SIGTERM, then print counters."""

import argparse
import math
import signal
import sys
import textwrap
from collections.abc import Callable, Sequence
from typing import TypeVar

from tpsharness import __version__
from tpsharness.defaults import HOST, KEEPALIVE_INTERVAL, PORT
from tpsharness.kernel import Scheduler
from tpsharness.net import format_address
from tpsharness.protocol import DEFAULT_MAX_BODY

from .server import (BAD_REQUEST_IDLE_TIMEOUT, FAULTS, IDLE_TIMEOUT, MAX_REPLY_DELAY,
                     REQUEST_TIMEOUT, FakeTPS)

N = TypeVar("N", int, float)


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port (0-65535)")
    return port


def _checked(convert: Callable[[str], N], wanted: str,
             accept: Callable[[N], bool]) -> Callable[[str], N]:
    """An argparse type: ``convert`` the text, refuse what ``accept`` does not."""
    def check(text: str) -> N:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {wanted}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not {wanted}")
        return value
    check.__name__ = wanted         # argparse names a type by it in some messages
    return check


_seconds = _checked(float, "a number of seconds > 0", lambda v: math.isfinite(v) and v > 0)
_delay = _checked(float, f"a number of seconds from 0 to {MAX_REPLY_DELAY:g}",
                  lambda v: 0 <= v <= MAX_REPLY_DELAY)
_positive = _checked(int, "a whole number > 0", lambda v: v > 0)
_size = _checked(int, "a whole number of bytes >= 0", lambda v: v >= 0)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fake-tps" if sys.argv[0].endswith("fake-tps") else "python -m fake_tps",
        description="The bundled fake TPS (TransProxy Server): field replies byte for byte, "
                    "field behaviour (docs/protocol.md section 4), bounded and never crashed "
                    "by what a peer sends.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="faults (--fault NAME, repeatable):\n" + "\n".join(
            textwrap.fill(text, 100, initial_indent=f"  {name:25}", subsequent_indent=" " * 27)
            for name, fault in FAULTS.items() for text in [fault.description]))
    parser.add_argument("-V", "--version", action="version", version=f"%(prog)s (tpsharness {__version__})")
    parser.add_argument("--host", default=HOST, help=f"address to bind (default {HOST})")
    parser.add_argument("--port", type=_port, default=PORT,
                        help=f"port (default {PORT}; 0 picks a free one)")
    parser.add_argument("--keepalive-interval", type=_positive, default=KEEPALIVE_INTERVAL,
                        metavar="SECONDS", help=f"KeepAliveIntervel sent in register replies "
                                                f"(default {KEEPALIVE_INTERVAL})")
    parser.add_argument("--idle-timeout", type=_seconds, default=IDLE_TIMEOUT, metavar="SECONDS",
                        help=f"close a connection this long after the last byte received "
                             f"(default {IDLE_TIMEOUT:g})")
    parser.add_argument("--bad-request-idle-timeout", type=_seconds, default=BAD_REQUEST_IDLE_TIMEOUT,
                        metavar="SECONDS",
                        help=f"the idle timeout of a connection after unrecognised input, which "
                             f"gets 400 (default {BAD_REQUEST_IDLE_TIMEOUT:g})")
    parser.add_argument("--request-timeout", type=_seconds, default=REQUEST_TIMEOUT, metavar="SECONDS",
                        help=f"close a connection whose request is not whole this long after its "
                             f"first byte (slow senders; default {REQUEST_TIMEOUT:g})")
    parser.add_argument("--nul-replies", action="store_true",
                        help="end PrivateData replies with one NUL, as older field builds do")
    parser.add_argument("--strict-http", action="store_true",
                        help="validate requests with h11 and send replies with Content-Length")
    parser.add_argument("--check-auth", metavar="CODE",
                        help="refuse registers and private data whose AuthCode is not CODE")
    parser.add_argument("--max-body", type=_size, default=DEFAULT_MAX_BODY, metavar="BYTES",
                        help=f"largest request body accepted; larger gets 413 and a close "
                             f"(default {DEFAULT_MAX_BODY})")
    parser.add_argument("--reply-delay", type=_delay, default=0.0, metavar="SECONDS",
                        help="wait this long before answering each request (fault injection)")
    parser.add_argument("--fault", action="append", default=[], choices=sorted(FAULTS), metavar="NAME",
                        help="inject a fault (repeatable); see the list below")
    return parser


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    return make_parser().parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        server = FakeTPS(args.host, args.port, keepalive_interval=args.keepalive_interval,
                         idle_timeout=args.idle_timeout,
                         bad_request_idle_timeout=args.bad_request_idle_timeout,
                         request_timeout=args.request_timeout, nul_replies=args.nul_replies,
                         strict_http=args.strict_http, check_auth=args.check_auth,
                         max_body=args.max_body, reply_delay=args.reply_delay,
                         faults=args.fault)
    except ValueError as error:         # what the argument types let through
        parser.error(str(error))
    except OSError as error:
        print(f"fake TPS: {error}", file=sys.stderr)
        return 1
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: server.request_stop())
    print(f"fake TPS listening on {format_address(server.address)}", flush=True)
    scheduler = Scheduler()
    try:
        scheduler.new(server.serve())
        scheduler.run()
    finally:
        scheduler.close()
        server.close()
    counters = " ".join(f"{name}={value}" for name, value in server.stats.as_dict().items())
    print(f"fake TPS stopped: {counters}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
