"""``tpsharness exporter``: check a TPS on every scrape, as blackbox_exporter probes.

``GET /probe?target=HOST:PORT`` runs one check and answers its metrics; ``GET
/metrics`` answers the exporter's own. Its parts: ``app`` (what each request gets),
``server`` (HTTP on the kernel, probes on threads), ``allowlist`` (``--allow-target``),
``config`` (``--config`` modules and ``--web-config``), ``auth`` (basic auth),
``cli`` (the command). Needs the ``exporter`` extra (prometheus_client, PyYAML,
bcrypt); the names below are imported when first used, so that the command line
can say in one line that the extra is missing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_names

if TYPE_CHECKING:       # what mypy and mkdocstrings see; at run time, __getattr__ below
    from ..errors import BadProbe, ForbiddenTarget
    from .allowlist import AllowList
    from .app import Exporter, ProbeResultCollector, Request, Response, parse_target
    from .cli import serve
    from .config import Module, WebConfig, load_modules, load_web_config
    from .server import ExporterServer

__all__ = ["Exporter", "ExporterServer", "make_exporter_server", "serve", "parse_target",
           "AllowList", "Module", "WebConfig", "load_modules", "load_web_config", "Request",
           "Response", "ProbeResultCollector", "BadProbe", "ForbiddenTarget"]

_HOMES = {"Exporter": ".app", "ProbeResultCollector": ".app", "Request": ".app", "Response": ".app",
          "parse_target": ".app", "ExporterServer": ".server", "serve": ".cli",
          "AllowList": ".allowlist", "Module": ".config", "WebConfig": ".config",
          "load_modules": ".config", "load_web_config": ".config", "BadProbe": "..errors",
          "ForbiddenTarget": "..errors"}


def make_exporter_server(exporter: Exporter, host: str = "127.0.0.1", port: int = 9115,
                         **options: object) -> ExporterServer:
    """Bind (IPv4 or IPv6, as ``host`` is) and return the server; ``serve_forever()``
    serves. ``options`` are ExporterServer's (tls, auth, max_connections, ...)."""
    from .server import ExporterServer
    return ExporterServer(exporter, host, port, **options)  # type: ignore[arg-type]


__getattr__ = lazy_names(__name__, _HOMES)
