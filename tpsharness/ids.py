"""Fresh uuids for simulated actors, made in one place.

A uuid must not collide with a real camera's or with another run's on a shared
TPS: it carries a prefix no field serial has, the pytest-xdist worker id and
random bits (``os.urandom``: ``secrets`` would cost 4 MB of imports).
"""

import os

DEVICE_PREFIX = "tpsharness-"
CLIENT_PREFIX = "tpsharness-app-"


def new_uuid(prefix: str = DEVICE_PREFIX) -> str:
    """``tpsharness-3f2a9c1d4e`` (``tpsharness-gw1-...`` in xdist worker gw1)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    return f"{prefix}{worker + '-' if worker else ''}{os.urandom(5).hex()}"
