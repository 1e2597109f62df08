"""The defaults every layer shares, defined once: what a TPS expects when nobody
says otherwise (docs/protocol.md section 1) and how long the harness waits."""

HOST = "127.0.0.1"
PORT = 6604                     # the TPS port of field deployments
AUTH_CODE = "0000"              # the AuthCode field servers accept from test devices
TIMEOUT = 5.0                   # seconds a check, an actor or a probe waits by default
KEEPALIVE_INTERVAL = 120        # seconds; KeepAliveIntervel when a reply gives none
