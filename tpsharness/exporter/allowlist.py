"""Which targets a scrape may make the exporter connect to: ``--allow-target SPEC``.

Without an allowlist, anyone who can reach /probe can make the exporter connect to
any host and port (blackbox_exporter's SSRF, CVE-2020-16248). With one, the
exporter resolves the target once, keeps the addresses a rule allows and connects
to exactly those (``check(..., addresses=...)``): nothing is resolved again after
the check, so a name that resolves elsewhere the second time (DNS rebinding) gets
nowhere. Addresses are compared as numbers: an IPv4-mapped IPv6 address is its
IPv4 address, and ``2130706433``, ``0x7f.1`` and ``0177.0.0.1`` are 127.0.0.1.

A SPEC is one of:

- a network, ``10.0.0.0/8`` or ``::1/128`` (a bare address is one host): any port;
- ``HOST:PORT`` or ``HOST:*`` (``[V6]:PORT`` for IPv6): an address, matched against
  each resolved address, or a name, matched against the target's name;
- ``*.example.net`` (optionally ``:PORT``): any name under example.net.

A name rule trusts that name's DNS (whoever controls example.net's zone chooses
where ``*.example.net`` connects); network rules trust nothing but the addresses.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import ForbiddenTarget, InvalidArgument
from ..net import IPAddress, format_address, host_problem, ip_address

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def normal_name(host: str) -> str:
    """A host name as rules compare it: lower case, IDNA-encoded, no trailing dot."""
    name = host.rstrip(".").lower()
    try:
        return name.encode("idna").decode("ascii")
    except UnicodeError:
        return name


def _network(text: str) -> Network:
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError as error:
        raise InvalidArgument(f"{text!r} is not a network: {error}") from None
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_MAPPED):
        low = int(network.network_address) & 0xFFFFFFFF
        return ipaddress.IPv4Network((low, network.prefixlen - 96))
    return network


def _port(text: str, spec: str) -> int | None:
    if text == "*":
        return None
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) < 65536:
        raise InvalidArgument(f"{spec!r}: the port must be 1-65535 or *, not {text!r}")
    return int(text)


@dataclass(frozen=True)
class Rule:
    """One ``--allow-target`` SPEC: a network, a name or a name suffix, and a port
    (None: any port)."""

    spec: str
    network: Network | None = None
    name: str | None = None
    suffix: str | None = None           # ".example.net"
    port: int | None = None

    @classmethod
    def parse(cls, spec: str) -> Rule:
        """The rule SPEC writes; InvalidArgument naming SPEC when it is none."""
        text = spec.strip()
        if not text or text == "*" or text.startswith("*:"):
            raise InvalidArgument(f"{spec!r} is not a target rule: give networks (0.0.0.0/0 and ::/0 "
                                  f"allow every address), HOST:PORT, HOST:* or *.DOMAIN")
        if "/" in text:
            return cls(spec, network=_network(text))
        if ip_address(text) is not None and not text.startswith("["):   # a bare address
            return cls(spec, network=_network(str(ip_address(text))))
        host, port = text, None
        if text.startswith("["):
            host, bracket, rest = text[1:].partition("]")
            if not bracket or not rest.startswith(":"):
                raise InvalidArgument(f"{spec!r}: write an IPv6 address as [V6]:PORT or [V6]:*")
            port = _port(rest[1:], spec)
        elif ":" in text:
            host, _, port_text = text.rpartition(":")
            port = _port(port_text, spec)
        if host.startswith("*."):
            suffix = host[1:]
            problem = host_problem(suffix[1:])
            if problem is not None:
                raise InvalidArgument(f"{spec!r}: {problem}")
            return cls(spec, suffix="." + normal_name(suffix[1:]), port=port)
        address = ip_address(host)
        if address is not None:
            return cls(spec, network=_network(str(address)), port=port)
        problem = host_problem(host)
        if problem is not None or "*" in host:
            raise InvalidArgument(f"{spec!r}: {problem or 'a * stands only first, as in *.example.net'}")
        return cls(spec, name=normal_name(host), port=port)

    def allows_name(self, name: str, port: int) -> bool:
        """Does this rule allow the name (normal_name) at ``port``, whatever it resolves to?"""
        if self.port is not None and self.port != port:
            return False
        if self.name is not None:
            return name == self.name
        return self.suffix is not None and name.endswith(self.suffix)

    def allows_address(self, address: IPAddress, port: int) -> bool:
        if self.network is None or (self.port is not None and self.port != port):
            return False
        return address.version == self.network.version and address in self.network


class AllowList:
    """The ``--allow-target`` rules; ``permitted`` says which resolved addresses of a
    target may be connected to. An empty list allows everything (the exporter warns)."""

    def __init__(self, specs: Sequence[str] = ()) -> None:
        self.rules = tuple(Rule.parse(spec) for spec in specs)

    def __bool__(self) -> bool:
        return bool(self.rules)

    @property
    def has_networks(self) -> bool:
        """Whether a rule allows addresses (then a name's addresses must be looked up)."""
        return any(rule.network is not None for rule in self.rules)

    def allows_name(self, host: str, port: int) -> bool:
        """Whether a name rule allows ``host`` (a name, not an address) at ``port``."""
        if ip_address(host) is not None:
            return False
        name = normal_name(host)
        return any(rule.allows_name(name, port) for rule in self.rules)

    def permitted(self, host: str, port: int, addresses: Sequence[str]) -> tuple[list[str], str]:
        """The addresses of ``addresses`` (what ``host`` resolved to) that may be connected
        to, in order, and why, in words; ForbiddenTarget when none may (its reason names
        no address: what a name resolves to is not the scraper's to learn)."""
        if not self.rules:
            return list(addresses), "no --allow-target: every address is allowed"
        name = normal_name(host) if ip_address(host) is None else None
        if name is not None:
            rule = next((rule for rule in self.rules if rule.allows_name(name, port)), None)
            if rule is not None:
                return list(addresses), f"the name is allowed by {rule.spec}"
        allowed, why = [], []
        for text in addresses:
            address = ip_address(text)
            rule = next((rule for rule in self.rules
                         if address is not None and rule.allows_address(address, port)), None)
            if rule is not None:
                allowed.append(text)
                why.append(f"{text} by {rule.spec}")
        if allowed:
            refused = len(addresses) - len(allowed)
            return allowed, ", ".join(why) + (f"; {refused} other address(es) refused" if refused else "")
        raise ForbiddenTarget(f"target {format_address((host, port))} is not allowed by any --allow-target")
