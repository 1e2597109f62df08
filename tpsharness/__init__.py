"""tpsharness: a test harness for TPS (TransProxy Server) relays.

Simulated IP cameras (devices) and apps (clients) run as coroutines on our own
cooperative kernel (``tpsharness.kernel``) and talk the TPS protocol
(``tpsharness.protocol``) to a real server or the bundled fake (``fake_tps``).
"""

__version__ = "0.1.0"

# Bound after the submodule of the same name is imported, so that
# ``tpsharness.check`` stays the function the README documents.
from .check import CheckResult, check  # noqa: E402

__all__ = ["__version__", "check", "CheckResult"]
