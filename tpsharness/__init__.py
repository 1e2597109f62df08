"""tpsharness: a test harness for TPS (TransProxy Server) relays.

Simulated IP cameras (devices) and apps (clients) run as coroutines on our own
cooperative kernel (``tpsharness.kernel``) and talk the TPS protocol
(``tpsharness.protocol``) to a real server or the bundled fake (``fake_tps``).
"""

__version__ = "0.1.0"
