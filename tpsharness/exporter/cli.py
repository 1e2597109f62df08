"""``tpsharness exporter``: its options, and ``serve``, which runs it until SIGTERM.

The parser needs none of the extra's libraries, so that ``tpsharness --help`` works
without them; ``serve`` says in one line which pip command brings a missing one.
Exit status: 0 stopped by SIGINT/SIGTERM (or --help), 2 cannot listen, 3 a usage
error, a configuration file that cannot be used, or a missing extra.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..argtypes import address, positive_int, seconds, seconds_between
from ..defaults import HOST
from ..errors import ConfigError, InvalidArgument
from ..net import format_address

if TYPE_CHECKING:
    from .server import ExporterServer

DEFAULT_LISTEN = (HOST, 9115)     # blackbox_exporter's port, on loopback
USAGE = 3
CANNOT_LISTEN = 2
EXTRA_MODULES = ("prometheus_client", "yaml", "bcrypt")     # what the 'exporter' extra brings
NO_ALLOWLIST_WARNING = ("tpsharness exporter: warning: no --allow-target: anyone who can reach "
                        "this exporter can make it connect to any host and port "
                        "(docs/exporter.md, \"Running it safely\")")


def _target_rule(text: str) -> str:
    from .allowlist import Rule

    try:
        Rule.parse(text)
    except InvalidArgument as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add ``exporter`` to the subcommands of tpsharness's parser."""
    parser = commands.add_parser(
        "exporter", help="serve Prometheus probes of TPS servers (blackbox_exporter style)",
        description="GET /probe?target=HOST:PORT[&module=NAME][&timeout=S][&debug=true] runs one "
                    "check and answers its metrics; GET /metrics answers the exporter's own. "
                    "Needs the 'exporter' extra. Exit status 0 stopped by SIGTERM, 2 cannot "
                    "listen, 3 usage or configuration error.")
    parser.add_argument("--listen", type=address(DEFAULT_LISTEN[1], allow_any_port=True), default=DEFAULT_LISTEN, metavar="HOST:PORT",
                        help=f"where to serve (default {HOST}:9115)")
    parser.add_argument("--allow-target", action="append", default=[], type=_target_rule,
                        metavar="SPEC",
                        help="allow probes only of these targets (repeatable): a network "
                             "(10.0.0.0/8, ::1/128), HOST:PORT, HOST:* or *.example.net; "
                             "anything else gets 403")
    parser.add_argument("--web-config", metavar="FILE",
                        help="TLS and basic auth, in exporter-toolkit's YAML format "
                             "(tls_server_config, basic_auth_users)")
    parser.add_argument("--config", metavar="FILE",
                        help="modules (timeout, auth_code, payload_size, strict), chosen by "
                             "&module=NAME")
    parser.add_argument("--max-timeout", type=seconds, default=60.0, metavar="SECONDS",
                        help="the longest a probe may take, whatever a scrape asks (default 60)")
    parser.add_argument("--max-concurrent", type=positive_int, default=8, metavar="N",
                        help="probes at once; one more gets 503 (default 8)")
    parser.add_argument("--max-connections", type=positive_int, default=1024, metavar="N",
                        help="HTTP connections at once; past it a new one evicts the oldest "
                             "unfinished request (default 1024)")
    parser.add_argument("--request-timeout", type=seconds, default=5.0, metavar="SECONDS",
                        help="a request must arrive whole within this of its connection, or "
                             "gets 408 (default 5)")
    parser.add_argument("--shutdown-grace", type=seconds_between(0, 600), default=5.0, metavar="SECONDS",
                        help="on SIGTERM, how long probes in flight may finish before they get "
                             "503 (default 5)")
    parser.set_defaults(handler=cmd_exporter)
    return parser


def cmd_exporter(args: argparse.Namespace) -> int:
    return serve(args.listen, max_timeout=args.max_timeout, max_concurrent=args.max_concurrent,
                 allow_targets=args.allow_target, config=args.config, web_config=args.web_config,
                 max_connections=args.max_connections, request_timeout=args.request_timeout,
                 shutdown_grace=args.shutdown_grace)


def serve(listen: tuple[str, int] = DEFAULT_LISTEN, *, max_timeout: float = 60.0,
          max_concurrent: int = 8, allow_targets: Sequence[str] = (), config: str | None = None,
          web_config: str | None = None, max_connections: int = 1024,
          request_timeout: float = 5.0, shutdown_grace: float = 5.0) -> int:
    """Serve until SIGINT or SIGTERM (the ``tpsharness exporter`` command); exit status."""
    try:
        server = _build(listen, max_timeout, max_concurrent, allow_targets, config, web_config,
                        max_connections, request_timeout, shutdown_grace)
    except ModuleNotFoundError as error:
        if (error.name or "").split(".")[0] not in EXTRA_MODULES:
            raise
        print(f"tpsharness exporter: needs the 'exporter' extra: pip install 'tpsharness[exporter]' "
              f"(no module named {error.name!r})", file=sys.stderr)
        return USAGE
    except (ConfigError, InvalidArgument) as error:
        print(f"tpsharness exporter: {error}", file=sys.stderr)
        return USAGE
    except OSError as error:
        print(f"tpsharness exporter: cannot listen on {format_address(listen)}: "
              f"{error.strerror or error}", file=sys.stderr)
        return CANNOT_LISTEN
    if not allow_targets:
        print(NO_ALLOWLIST_WARNING, file=sys.stderr, flush=True)

    def request_stop(*_: object) -> None:
        server.shutdown(wait=False)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, request_stop)
    host, port = server.server_address
    shown = f"[{host}]" if ":" in host else host
    print(f"tpsharness exporter listening on {server.scheme}://{shown}:{port}/ "
          f"(/probe?target=HOST:PORT, /metrics)", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


def _build(listen: tuple[str, int], max_timeout: float, max_concurrent: int,
           allow_targets: Sequence[str], config: str | None, web_config: str | None,
           max_connections: int, request_timeout: float, shutdown_grace: float) -> ExporterServer:
    """The server ``serve`` runs: every file read and checked, the port bound."""
    import prometheus_client

    from .allowlist import AllowList
    from .app import Exporter
    from .config import WebConfig, load_modules, load_web_config
    from .server import ExporterServer

    allowlist = AllowList(allow_targets)
    modules = load_modules(config, max_timeout)
    web = load_web_config(web_config) if web_config is not None else WebConfig()
    auth = None
    if web.users:
        from .auth import BasicAuth
        auth = BasicAuth(web.users)
    _raise_file_limit(max_connections + 4 * max_concurrent + 64)
    prometheus_client.disable_created_metrics()     # *_created series: noise beside each counter
    exporter = Exporter(max_timeout=max_timeout, max_concurrent=max_concurrent, modules=modules,
                        allowlist=allowlist)
    return ExporterServer(exporter, *listen, tls=web.tls, auth=auth, max_connections=max_connections,
                          request_timeout=request_timeout, shutdown_grace=shutdown_grace)


def _raise_file_limit(wanted: int) -> None:
    """Raise the soft limit on open files toward ``wanted`` (as far as the hard limit
    allows): each connection is a descriptor, and 1024 is a common soft default."""
    try:
        import resource
    except ImportError:         # not on this platform
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
