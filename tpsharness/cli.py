"""``python -m tpsharness COMMAND``: the command line; ``check`` Monitoring Plugins style.

check's exit status: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (usage errors, --help,
--version and internal errors too, as the plugin guidelines ask). Every other
command, and ``tpsharness`` itself, exits 0 for --help and --version and 3 for a
usage error; 1 and 2 are each command's own.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from .version import __version__
from .checker import (CheckProgress, CheckResult, check_async, run_bounded, validate_field,
                      validate_payload)
from .defaults import AUTH_CODE, HOST, PORT, TIMEOUT
from .errors import UsageError
from .deadline import MAX_TIMEOUT, Deadline
from .argtypes import port as _port, seconds as _seconds
from .report import UNKNOWN, json_text, prometheus_text, state_of, status_line
from .syscalls import NewTask
from .thresholds import Range




class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error exits 3 (not 2). ``--help`` and ``--version`` exit
    0, as CLIs do, except for ``check``, which follows the Monitoring Plugins
    convention: every way out of it that is no verdict is 3 (UNKNOWN)."""

    commands: dict[str, argparse.ArgumentParser]    # the top parser's: name -> a subcommand's
    help_status = 0         # what --help and --version exit with (check's parser: UNKNOWN)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            self._print_message(message, sys.stderr)
        sys.exit(self.help_status if status == 0 else UNKNOWN)

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(UNKNOWN, f"{self.prog}: error: {message}\n")




def _field(what: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        try:
            validate_field(what, text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
        return text
    parse.__name__ = what       # argparse names the type in some messages
    return parse


def _payload(text: str) -> bytes:
    data = os.fsencode(text)    # the bytes given, even when they are not UTF-8
    try:
        validate_payload(data)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return data


def _range(text: str) -> Range:
    try:
        return Range.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _add_target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("host", nargs="?", metavar="HOST", help="the TPS to check (default: the "
                        "bundled fake TPS, started in-process)")
    parser.add_argument("port", nargs="?", type=_port, metavar="PORT", help=f"its port (default {PORT})")
    parser.add_argument("-H", "--hostname", metavar="HOST", help="the TPS host (as HOST)")
    parser.add_argument("-p", "--port", dest="port_option", type=_port, metavar="PORT",
                        help="the TPS port (as PORT)")
    parser.add_argument("-t", "--timeout", type=_seconds, default=TIMEOUT, metavar="SECONDS",
                        help=f"deadline for the whole check (default {TIMEOUT:g}, at most {MAX_TIMEOUT:g})")
    parser.add_argument("--uuid", type=_field("uuid"),
                        help="the device's uuid, the SerialNumber it registers (default: tpsharness-<random>)")
    parser.add_argument("--auth-code", type=_field("auth code"), default=AUTH_CODE,
                        help=f"AuthCode to send (default {AUTH_CODE})")
    parser.add_argument("--payload", type=_payload,
                        help="private data to send (default: 16 random hex characters)")
    parser.add_argument("--strict-http", action="store_true",
                        help="read the TPS's replies and relayed requests with h11, as strict HTTP/1.1")
    family = parser.add_mutually_exclusive_group()
    family.add_argument("-4", "--ipv4", dest="family", action="store_const", const=socket.AF_INET,
                        default=0, help="connect over IPv4 only")
    family.add_argument("-6", "--ipv6", dest="family", action="store_const", const=socket.AF_INET6,
                        help="connect over IPv6 only")


def build_parser() -> _Parser:
    parser = _Parser(prog="tpsharness", description="Test harness for TPS (TransProxy Server) relays.")
    parser.add_argument("-V", "--version", action="version", version=f"tpsharness {__version__}")
    commands: argparse._SubParsersAction[argparse.ArgumentParser] = parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=_Parser)
    check = commands.add_parser(
        "check", help="register a device, relay private data to it, report (Nagios style)",
        description="Register a simulated device on the TPS, send it private data from a simulated "
                    "client, and check that it arrives. Exit status 0 OK, 1 WARNING, 2 CRITICAL, "
                    "3 UNKNOWN.")
    assert isinstance(check, _Parser)
    check.help_status = UNKNOWN
    _add_target(check)
    check.add_argument("-w", "--warning", type=_range, metavar="RANGE",
                       help="WARNING when the total time in ms is outside RANGE (500, ~:500, @10:20)")
    check.add_argument("-c", "--critical", type=_range, metavar="RANGE",
                       help="CRITICAL when the total time in ms is outside RANGE")
    output = check.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print the result as one JSON object")
    output.add_argument("--prometheus", action="store_true",
                        help="print the result in the Prometheus text exposition format")
    check.add_argument("-v", "--verbose", action="count", default=0, help="add the wire transcript")
    check.add_argument("-V", "--version", action="version", version=f"tpsharness {__version__}")

    from .exporter.cli import add_parser as add_exporter_parser
    add_exporter_parser(commands)
    from .load.cli import add_parsers as add_load_parsers      # load, report
    add_load_parsers(commands)
    from .fuzz.cli import add_parser as add_fuzz_parser
    add_fuzz_parser(commands)
    from .record.cli import add_parser as add_record_parser
    add_record_parser(commands, _add_target, target)
    parser.commands = commands.choices        # name -> its parser, for usage errors found later
    return parser


def target(args: argparse.Namespace) -> tuple[str, int] | None:
    """(host, port), or None for the embedded fake TPS; UsageError for conflicts."""
    host, port = args.host, args.port
    if args.hostname is not None:
        if host is not None and host != args.hostname:
            raise UsageError(f"HOST {host!r} and -H {args.hostname!r} disagree")
        host = args.hostname
    if args.port_option is not None:
        if port is not None and port != args.port_option:
            raise UsageError(f"PORT {port} and -p {args.port_option} disagree")
        port = args.port_option
    if host is None:
        if port is not None:
            raise UsageError("a PORT without a HOST")
        return None
    if host.startswith("[") and host.endswith("]"):     # '[::1]', as the status line writes it
        host = host[1:-1]
    return host, port or PORT


def run_check(args: argparse.Namespace) -> CheckResult:
    """Run the check the arguments describe; a CheckResult."""
    address = target(args)
    deadline = Deadline(args.timeout)
    progress = CheckProgress()
    options = dict(uuid=args.uuid, auth_code=args.auth_code, payload=args.payload,
                   timeout=args.timeout, strict=args.strict_http, family=args.family,
                   deadline=deadline, progress=progress)
    if address is not None:
        return run_bounded(check_async(*address, **options), address, deadline, progress)
    return run_bounded(_check_embedded(options), (HOST, 0), deadline, progress)


async def _check_embedded(options: dict[str, Any]) -> CheckResult:
    from fake_tps import FakeTPS        # only the embedded mode needs it

    server = FakeTPS(host="::1" if options["family"] == socket.AF_INET6 else HOST,
                     strict_http=options["strict"])
    try:
        await NewTask(server.serve())
        result = await check_async(*server.address, **options)
        result.embedded = True
        return result
    finally:
        server.close()      # serve() is killed with the other tasks when we return


def cmd_check(args: argparse.Namespace) -> int:
    result = run_check(args)
    state, reason = state_of(result, args.warning, args.critical)
    if args.json:
        print(json_text(result, state, reason, transcript=args.verbose > 0))
    elif args.prometheus:
        print(prometheus_text(result, state))
    else:
        print(status_line(result, state, reason, args.warning, args.critical))
        if args.verbose and result.transcript is not None:
            for line in result.transcript.lines():
                print(line)
    return state


FAILED_RUN = 2      # every command but check: the run could not be carried out


def misspelt_option(parser: _Parser, argv: Sequence[str]) -> tuple[argparse.ArgumentParser, str] | None:
    """The command's parser and the first ``--name`` it does not know (exactly or as a
    unique prefix), if any. Found before parsing, because argparse would take the value
    after it for HOST, and then blame PORT for what is HOST."""
    command = next((word for word in argv if not word.startswith("-")), None)
    sub = parser.commands.get(command) if command is not None else None
    if sub is None:
        return None
    known = sub._option_string_actions
    for word in argv[argv.index(command) + 1:]:
        if word == "--":
            return None
        name = word.partition("=")[0]
        if name.startswith("--") and name not in known and \
                sum(option.startswith(name) for option in known) != 1:
            return sub, word
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    words = sys.argv[1:] if argv is None else list(argv)
    misspelt = misspelt_option(parser, words)
    if misspelt is not None:
        misspelt[0].error(f"unrecognized arguments: {misspelt[1]}")
    args, extras = parser.parse_known_args(words)
    if extras:          # argparse would blame the top-level command; the subcommand's usage helps
        parser.commands.get(args.command, parser).error(f"unrecognized arguments: {' '.join(extras)}")
    if args.command is None:
        parser.print_usage(sys.stderr)
        print("tpsharness: error: name a command (check, record, load, report, fuzz, exporter)", file=sys.stderr)
        return UNKNOWN
    try:
        if args.command == "check":
            return cmd_check(args)
        if args.command == "fuzz":
            from .fuzz.cli import cmd_fuzz
            return cmd_fuzz(args)
        if getattr(args, "handler", None) is not None:     # load, report, record, exporter
            return args.handler(args)
        raise UsageError(f"unknown command {args.command!r}")
    except UsageError as error:
        parser.commands.get(args.command, parser).print_usage(sys.stderr)
        print(f"tpsharness {args.command}: error: {error}", file=sys.stderr)
        return UNKNOWN
    except KeyboardInterrupt:
        if args.command != "check":     # the others stop on a signal themselves; this is a late one
            print(f"tpsharness {args.command}: interrupted", file=sys.stderr)
            return FAILED_RUN
        print("TPS UNKNOWN - interrupted")
        return UNKNOWN
    except Exception as error:          # a bug: say so, with the traceback
        if args.command != "check":
            print(f"tpsharness {args.command}: internal error: {type(error).__name__}: {error}",
                  file=sys.stderr)
            traceback.print_exc()
            return FAILED_RUN
        print(f"TPS UNKNOWN - internal error: {type(error).__name__}: {error}")
        traceback.print_exc()
        return UNKNOWN


if __name__ == "__main__":
    sys.exit(main())
