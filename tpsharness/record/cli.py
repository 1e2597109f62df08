"""``python -m tpsharness record``: a template's conversation, a proxy session or a
capture, written as scenario files.

Exit status: 0 written (a partial import says what it skipped), 2 nothing could be
recorded (the upstream is down, the capture cannot be read, the TPS did not answer
a template's first step), 3 usage error, or a missing optional extra.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..argtypes import address, positive_int as _positive_int, seconds_between
from ..defaults import HOST, PORT
from ..errors import CaptureError, ScenarioFailure, UpstreamDown, UsageError
from ..files import write_atomically, write_file
from ..net import format_address
from .conversation import Conversation
from .files import scenario_name, scenario_text, slug

NOT_RECORDED, USAGE = 2, 3
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
MAX_DURATION = 7 * 86400        # seconds: a week of recording
EXTRA_LINE = "tpsharness record: needs the 'record' extra: pip install 'tpsharness[record]'"


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser],
               add_target: Callable[[argparse.ArgumentParser], None],
               target: Callable[[argparse.Namespace], tuple[str, int] | None]) -> argparse.ArgumentParser:
    """Add ``record`` to tpsharness's subcommands; ``add_target`` adds the check's
    target options (HOST PORT, -t, --uuid...) that a template recording takes, and
    ``target`` reads them back (None: the bundled fake)."""
    from ..scenario import TEMPLATES

    parser = commands.add_parser(
        "record", help="record a conversation with a TPS (a template, a proxy session, a capture) "
                       "as replayable scenario files",
        description="Write scenarios that expect exactly what a TPS did: run a template against it "
                    "(HOST PORT --scenario check -o FILE), relay real devices and apps to it and "
                    "record what passes (--proxy LISTEN --upstream HOST:PORT -o DIR), or import a "
                    "tcpdump capture taken on a TPS host (--pcap FILE [--port 6604] -o DIR). Exit status 0 "
                    "written, 2 nothing could be recorded, 3 usage error.")
    add_target(parser)
    parser.add_argument("-o", "--output", required=True, metavar="PATH",
                        help="the scenario FILE (a template; - for stdout), or the DIR for a proxy "
                             "session's or a capture's files")
    parser.add_argument("--scenario", choices=sorted(TEMPLATES), default="check",
                        help="the template to run against HOST PORT (default: check)")
    parser.add_argument("--force", action="store_true", help="overwrite files that exist")
    parser.add_argument("--proxy", type=address(PORT, allow_any_port=True, bare_port=True), metavar="LISTEN",
                        help="listen on LISTEN (PORT or HOST:PORT; host 127.0.0.1 unless given) and "
                             "relay every connection to --upstream, recording what passes")
    parser.add_argument("--upstream", type=address(PORT, bare_port=True), metavar="HOST:PORT",
                        help="the TPS the proxy relays to")
    parser.add_argument("--duration", type=seconds_between(0, MAX_DURATION, low_allowed=False), metavar="S",
                        help="stop the proxy and write after S seconds (default: at Ctrl-C)")
    parser.add_argument("--max-bytes", type=_positive_int, default=DEFAULT_MAX_BYTES, metavar="N",
                        help=f"stop and write once N bytes are recorded (default {DEFAULT_MAX_BYTES})")
    parser.add_argument("--pcap", metavar="FILE",
                        help="import a tcpdump capture (pcap or pcapng) taken on a TPS host")
    parser.add_argument("--per-device", action="store_true",
                        help="one scenario per device and the clients that spoke to it")
    parser.add_argument("--only", action="extend", nargs="+", default=[], metavar="UUID",
                        help="write only the conversations of these serials or SrcUuids")
    parser.add_argument("--anonymize", action="store_true",
                        help="pseudonyms for serials and SrcUuids, random payloads, auth codes 0000")
    parser.add_argument("--name", metavar="NAME",
                        help="the files' name: DIR/test_NAME.tps.json (default: session_<time>, "
                             "or the capture's name)")
    parser.set_defaults(handler=cmd_record, target_of=target)
    return parser


def cmd_record(args: argparse.Namespace) -> int:
    if args.proxy is not None or args.pcap is not None:
        return _record_traffic(args)
    traffic_only = {"--upstream": args.upstream is not None, "--duration": args.duration is not None,
                    "--max-bytes": args.max_bytes != DEFAULT_MAX_BYTES, "--per-device": args.per_device,
                    "--only": bool(args.only), "--anonymize": args.anonymize, "--name": args.name is not None}
    given = [option for option, present in traffic_only.items() if present]
    if given:
        raise UsageError(f"{', '.join(given)} go{'es' if len(given) == 1 else ''} with --proxy or --pcap, "
                         "not with a template")
    return _record_template(args)


# -- a template -------------------------------------------------------------------------------

def _record_template(args: argparse.Namespace) -> int:
    from ..scenario import record

    address = args.target_of(args)
    to_stdout = args.output == "-"
    output = Path(args.output)
    if not to_stdout:
        if output.is_dir():
            raise UsageError(f"{output} is a directory; give a file name")
        if os.path.lexists(output) and not args.force:
            raise UsageError(f"{output} exists; give --force to overwrite it")
    options: dict[str, Any] = dict(timeout=args.timeout, uuid=args.uuid, payload=args.payload,
                                   auth_code=args.auth_code, strict=args.strict_http, family=args.family)
    try:
        if address is None:
            from fake_tps import FakeTPS
            server = FakeTPS(host="::1" if args.family == socket.AF_INET6 else HOST,
                             strict_http=args.strict_http)
            with server.start_in_thread():
                scenario = record(args.scenario, server.address, **options)
        else:
            scenario = record(args.scenario, address, **options)
    except ScenarioFailure as failure:
        print(f"tpsharness record: nothing to record: arrived: {failure.arrived}", file=sys.stderr)
        return NOT_RECORDED
    text = scenario_text(scenario)
    last = scenario["steps"][-1]
    summary = (f"{len(scenario['steps'])} steps, the last: {last['do']}"
               f"{' (' + last['note'] + ')' if 'note' in last else ''}")
    if to_stdout:
        sys.stdout.write(text)
        print(f"recorded {summary}", file=sys.stderr)     # stdout holds the scenario only
        return 0
    try:
        write_atomically(output, text, force=args.force)
    except FileExistsError:
        raise UsageError(f"{output} exists; give --force to overwrite it") from None
    except OSError as error:
        raise UsageError(f"cannot write {output}: {error.strerror or error}") from None
    print(f"wrote {output}: {summary}")
    return 0


# -- a proxy session or a capture ---------------------------------------------------------------

def _record_traffic(args: argparse.Namespace) -> int:
    if args.proxy is not None and args.pcap is not None:
        raise UsageError("give --proxy or --pcap, not both")
    if args.host is not None or args.hostname is not None or args.port is not None:
        raise UsageError("HOST PORT are a template's target; the proxy's is --upstream, a "
                         "capture's TPS port is --port")
    if args.proxy is not None and args.port_option is not None:
        raise UsageError("--port goes with --pcap (the TPS's port in the capture)")
    if args.proxy is not None and args.upstream is None:
        raise UsageError("--proxy needs --upstream HOST:PORT, the TPS to relay to")
    if args.pcap is not None and (args.upstream is not None or args.duration is not None):
        raise UsageError("--upstream and --duration go with --proxy, not --pcap")
    directory = Path(args.output)
    if args.output == "-" or (directory.exists() and not directory.is_dir()):
        raise UsageError(f"-o {args.output}: give a directory for the scenario files")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"-o {args.output}: {error.strerror or error}") from None
    if not os.access(directory, os.W_OK):
        raise UsageError(f"-o {args.output}: not writable")
    if args.pcap is not None:
        tps_port = args.port_option or PORT
        try:
            from .capture import import_capture
        except ImportError:
            print(EXTRA_LINE, file=sys.stderr)
            return USAGE
        try:
            imported = import_capture(args.pcap, tps_port, max_bytes=args.max_bytes)
        except CaptureError as error:
            print(f"tpsharness record: {error}", file=sys.stderr)
            return NOT_RECORDED
        for line in imported.report():
            print(f"tpsharness record: {line}", file=sys.stderr)
        conversation = imported.conversation
        stem = args.name or Path(args.pcap).name.split(".")[0] or "capture"
        recorded: dict[str, Any] = {"by": "tpsharness record --pcap", "tps_port": tps_port}
        if not args.anonymize:
            recorded["capture"] = Path(args.pcap).name
        source = "a capture" if args.anonymize else f"the capture {Path(args.pcap).name}"
    else:
        signals = _Signals()
        with signals.handled():         # until the files are written: a second Ctrl-C loses nothing
            session, why, died = _run_proxy(args, signals)
            if session is None:
                print(f"tpsharness record: {why}", file=sys.stderr)
                return NOT_RECORDED
            conversation = session
            stem = args.name or time.strftime("session_%Y%m%d_%H%M%S")
            upstream = format_address(args.upstream)
            recorded = {"by": "tpsharness record --proxy"}
            if not args.anonymize:
                recorded["upstream"] = upstream
            source = f"a proxy in front of {'the TPS' if args.anonymize else upstream}"
            if died:
                recorded["upstream_died"] = ("the TPS stopped accepting connections during the session: "
                                             "the scenario is marked destructive")
            return _write(args, conversation, slug(stem), source, recorded, destructive=died)
    return _write(args, conversation, slug(stem), source, recorded)


def _write(args: argparse.Namespace, conversation: Conversation, stem: str, source: str,
           recorded: dict[str, Any], destructive: bool = False) -> int:
    from .writer import write_scenarios

    if args.anonymize:
        from .anonymize import Anonymizer
        conversation = Anonymizer().anonymize(conversation)
        recorded["anonymized"] = True
    description = f"Recorded by tpsharness record from {source}"
    scenarios = write_scenarios(conversation, per_device=args.per_device, only=args.only, stem=stem,
                                description=description, recorded=recorded, destructive=destructive)
    if not scenarios:
        wanted = f" of {', '.join(args.only)}" if args.only else ""
        print(f"tpsharness record: nothing to write: no connection{wanted} was seen", file=sys.stderr)
        return NOT_RECORDED
    for written in scenarios:
        try:
            path = write_file(args.output, scenario_name(written.stem), scenario_text(written.data),
                              force=args.force)
        except OSError as error:
            print(f"tpsharness record: cannot write into {args.output}: {error.strerror or error}",
                  file=sys.stderr)
            return NOT_RECORDED
        actors = written.data["actors"]
        kinds = [spec["kind"] for spec in actors.values()]
        counts = ", ".join(f"{kinds.count(k)} {k}{'s' if kinds.count(k) != 1 else ''}"
                           for k in ("device", "client", "raw") if k in kinds)
        print(f"wrote {path}: {counts}, {len(written.data['steps'])} steps"
              f"{'; ' + written.cut if written.cut else ''}")
    return 0


def _run_proxy(args: argparse.Namespace, signals: _Signals) -> tuple[Conversation | None, str, bool]:
    """Relay until Ctrl-C (or SIGTERM), --duration or --max-bytes; the conversation (or
    None and why nothing could be recorded), and whether the upstream died meanwhile."""
    from .. import kernel
    from ..deadline import Deadline
    from .proxy import RecordingProxy

    try:
        proxy = RecordingProxy(args.proxy, args.upstream, max_bytes=args.max_bytes)
    except OSError as error:
        raise UsageError(f"--proxy {format_address(args.proxy)}: {error.strerror or error}") from None
    try:
        proxy.check_upstream()
    except UpstreamDown as error:
        proxy.close()
        return None, str(error), False
    until = "--duration" if args.duration else "Ctrl-C"
    print(f"tpsharness record: relaying {format_address(proxy.address)} -> "
          f"{format_address(args.upstream)}; {until} writes the recording", file=sys.stderr, flush=True)
    deadline = Deadline(args.duration) if args.duration else None
    signals.stop = proxy.request_stop
    kernel.run(proxy.serve(deadline))
    signals.stop = signals.writing
    reasons = {"stop": "interrupted", "deadline": "--duration reached", "max-bytes": "--max-bytes reached"}
    conversation = proxy.conversation
    refused = f", {proxy.refused} refused by the upstream" if proxy.refused else ""
    died = not proxy.upstream_alive()
    print(f"tpsharness record: {reasons.get(proxy.stopped_by, proxy.stopped_by)}: "
          f"{len(conversation.peers)} connections{refused}, {conversation.size} bytes recorded"
          f"{'; the upstream no longer accepts connections: the files are marked destructive' if died else ''}",
          file=sys.stderr)
    return conversation, "", died


class _Signals:
    """What SIGINT and SIGTERM do while a proxy session is recorded: before the relay
    starts, stop the command (KeyboardInterrupt); while it relays, ``stop`` it (the
    recording is then written); once it stopped, nothing but a line: the files are
    being written, and a second Ctrl-C must not lose them."""

    def __init__(self) -> None:
        self.stop: Callable[[], None] = self.starting
        self._told = False

    def starting(self) -> None:
        raise KeyboardInterrupt

    def writing(self) -> None:
        if not self._told:
            self._told = True
            # os.write: a print here could land inside the main thread's own print to stderr
            os.write(2, b"tpsharness record: writing the recording first\n")

    @contextmanager
    def handled(self) -> Iterator[None]:
        def handler(signum: int, frame: object) -> None:
            self.stop()
        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)
