"""HTTP basic authentication against bcrypt hashes, as exporter-toolkit does it.

A bcrypt comparison costs tens of milliseconds of CPU by design, so it never runs on
the server's loop: ``known`` answers from a bounded cache of earlier verdicts (a
scraper sends the same credentials every time), and ``verify`` (the bcrypt package)
runs on a thread of its own. A user that does not exist is compared against a hash
of the same cost, so that timing does not tell which names exist.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import threading
from collections import OrderedDict

import bcrypt

CACHE_SIZE = 1024                # verdicts kept (user, hash, password): successes and failures
MAX_HEADER = 4096                # characters of an Authorization header worth decoding
BCRYPT_MAX_PASSWORD = 72         # bytes bcrypt reads; a longer password cannot match


def parse_basic(header: str | None) -> tuple[str, bytes] | None:
    """(user, password) from an ``Authorization: Basic ...`` header, or None."""
    if not header or len(header) > MAX_HEADER:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, colon, password = decoded.partition(b":")
    if not colon:
        return None
    return user.decode("utf-8", "replace"), password


class BasicAuth:
    """The users of ``basic_auth_users`` (name -> bcrypt hash)."""

    def __init__(self, users: dict[str, bytes]) -> None:
        self.users = dict(users)
        cost = next(iter(self.users.values()))[4:6] if self.users else b"10"
        # a hash nobody's password matches, of the users' cost, for names that do not exist
        rounds = int(cost) if cost.isdigit() and 4 <= int(cost) <= 31 else 10
        self._decoy = bcrypt.hashpw(os.urandom(16).hex().encode(), bcrypt.gensalt(rounds))
        self._verdicts: OrderedDict[tuple[str, bytes], bool] = OrderedDict()
        self._lock = threading.Lock()

    def _key(self, user: str, password: bytes) -> tuple[str, bytes]:
        hashed = self.users.get(user, self._decoy)
        return user, hmac.digest(hashed, password, "sha256")   # no password kept in memory

    def known(self, credentials: tuple[str, bytes] | None) -> bool | None:
        """The cached verdict for these credentials: True, False, or None (not known yet:
        ``verify`` must decide). No credentials are refused at once."""
        if credentials is None:
            return False
        key = self._key(*credentials)
        with self._lock:
            verdict = self._verdicts.get(key)
            if verdict is not None:
                self._verdicts.move_to_end(key)
            return verdict

    def verify(self, credentials: tuple[str, bytes]) -> bool:
        """Compare with bcrypt (slow: call it off the loop) and remember the verdict."""
        user, password = credentials
        hashed = self.users.get(user)
        try:
            matches = len(password) <= BCRYPT_MAX_PASSWORD and \
                bcrypt.checkpw(password, hashed if hashed is not None else self._decoy)
        except ValueError:          # a hash bcrypt cannot read
            matches = False
        verdict = matches and hashed is not None
        key = self._key(user, password)
        with self._lock:
            self._verdicts[key] = verdict
            if len(self._verdicts) > CACHE_SIZE:
                self._verdicts.popitem(last=False)
        return verdict
