"""The defaults every layer shares, defined once: what a TPS expects when nobody
says otherwise (docs/protocol.md section 1) and how long the harness waits."""

HOST = "127.0.0.1"
"""Where servers bind and the harness connects by default: loopback."""

PORT = 6604
"""The TPS port of field deployments."""

AUTH_CODE = "0000"
"""The AuthCode field servers accept from test devices."""

TIMEOUT = 5.0
"""Seconds a check, an actor or a probe waits by default."""

KEEPALIVE_INTERVAL = 120
"""Seconds: the KeepAliveIntervel a register reply gives (the fake's), or that a device
assumes when a reply gives none."""
