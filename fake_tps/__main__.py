"""python -m fake_tps: serve the fake TPS until SIGINT or SIGTERM, then print counters."""

import argparse
import signal
import sys

from tpsharness.kernel import Scheduler
from tpsharness.net import format_address
from tpsharness.protocol import DEFAULT_MAX_BODY, DEFAULT_PORT

from .server import FAULTS, FakeTPS


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m fake_tps",
        description="The bundled fake TPS (TransProxy Server): field replies byte for byte.",
        epilog="faults: " + "; ".join(f"{name}: {text}" for name, text in FAULTS.items()))
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port (default {DEFAULT_PORT}; 0 picks a free one)")
    parser.add_argument("--keepalive-interval", type=int, default=120, metavar="SECONDS",
                        help="KeepAliveIntervel sent in register replies (default 120)")
    parser.add_argument("--idle-timeout", type=float, default=300.0, metavar="SECONDS",
                        help="close a connection this long after the last byte received (default 300)")
    parser.add_argument("--nul-replies", action="store_true",
                        help="end PrivateData replies with one NUL, as older field builds do")
    parser.add_argument("--strict-http", action="store_true",
                        help="validate requests with h11 and send replies with Content-Length")
    parser.add_argument("--check-auth", metavar="CODE",
                        help="refuse registers and private data whose AuthCode is not CODE")
    parser.add_argument("--max-body", type=int, default=DEFAULT_MAX_BODY, metavar="BYTES",
                        help=f"largest request body accepted (default {DEFAULT_MAX_BODY})")
    parser.add_argument("--reply-delay", type=float, default=0.0, metavar="SECONDS",
                        help="wait this long before answering each request (fault injection)")
    parser.add_argument("--fault", action="append", default=[], choices=sorted(FAULTS),
                        help="inject a fault (repeatable); see the list below")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        server = FakeTPS(args.host, args.port, keepalive_interval=args.keepalive_interval,
                         idle_timeout=args.idle_timeout, nul_replies=args.nul_replies,
                         strict_http=args.strict_http, check_auth=args.check_auth,
                         max_body=args.max_body, reply_delay=args.reply_delay,
                         faults=args.fault)
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
