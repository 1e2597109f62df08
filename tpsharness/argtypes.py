"""argparse types the commands share: a bad value is a usage error naming it."""

import argparse
import math
from collections.abc import Callable


def port(text: str) -> int:
    """A TCP port, 1-65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port must be a number, not {text!r}") from None
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"port must be 1-65535, not {value}")
    return value


def address(default_port: int | None, *, allow_any_port: bool = False,
            bare_port: bool = False) -> Callable[[str], tuple[str, int]]:
    """A type for HOST[:PORT] ([v6]:PORT, a bare IPv6 address) as (host, port), read by
    net.parse_address: without a port, ``default_port`` (None: a port must be given);
    port 0 only with ``allow_any_port`` (to listen); with ``bare_port``, a lone number
    is that port on loopback."""
    def parse(text: str) -> tuple[str, int]:
        from .defaults import HOST
        from .errors import InvalidArgument
        from .net import parse_address

        if bare_port and text.isdigit():
            text = f"{HOST}:{text}"
        try:
            host, port = parse_address(text, 0 if default_port is None else default_port,
                                       allow_any_port=allow_any_port)
        except InvalidArgument as error:
            raise argparse.ArgumentTypeError(str(error)) from None
        if default_port is None and port == 0:
            raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
        return host, port
    parse.__name__ = "address"      # argparse names the type in some messages
    return parse


def positive_int(text: str) -> int:
    """A whole number, at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def seconds(text: str) -> float:
    """A timeout: a finite number of seconds above 0, at most deadline.MAX_TIMEOUT."""
    from .deadline import validate_timeout

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    try:
        return validate_timeout(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error).replace(repr(value), text)) from None


def seconds_between(low: float, high: float, *, low_allowed: bool = True) -> Callable[[str], float]:
    """A type for a finite number of seconds from ``low`` to ``high`` (``low`` itself
    only when ``low_allowed``): a timeout, a budget, a grace. inf and NaN are refused."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
        if not (math.isfinite(value) and low <= value <= high and (low_allowed or value > low)):
            bounds = f"from {low:g}" if low_allowed else f"above {low:g}"
            raise argparse.ArgumentTypeError(f"must be seconds {bounds} to {high:g}, not {text}")
        return value
    parse.__name__ = "seconds"      # argparse names the type in some messages
    return parse
