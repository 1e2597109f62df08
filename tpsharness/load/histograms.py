"""Latency histograms: HdrHistogram (the ``hdrhistogram`` package), in microseconds.

Recording one value in hdrh costs ~2.5 us of Python; the hot path instead appends
the value to an array, and ``Latencies.flush()`` (once a second) counts equal values
in C, folds them onto the value each stands for in a 3-digit HdrHistogram (its
lowest equivalent value: the low bits below 11 significant bits dropped), and
records each of those once, with its count.
"""

import base64
import binascii
import struct
import zlib
from array import array
from collections import Counter
from collections.abc import Iterable

from hdrh.histogram import HdrHistogram

from ..errors import InvalidArgument

LOWEST_US = 1
HIGHEST_US = 3_600_000_000          # an hour: anything slower is clamped to it
DIGITS = 3
LATENCIES = ("register", "ack", "relay", "reply")
"""What a load run times, in its own words (a check's stages are tpsharness.checker.STAGES):
register, a device's register until its reply; ack, a client's private data until its
ack; relay, the send until the device has it; reply, a device's answer until the client
has it."""
PERCENTILES = (50.0, 90.0, 99.0, 99.9)
_SUB_BUCKET_BITS = 11       # 3 significant digits: 2048 sub-buckets, values below exact
_EXACT_BELOW = 1 << _SUB_BUCKET_BITS


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, DIGITS)


def encode(histogram: HdrHistogram) -> str:
    """HdrHistogram's compressed form (base64 text), which merges exactly."""
    return histogram.encode().decode("ascii")


_OUTER = struct.Struct(">II")                  # cookie, length of the zlib part
_PAYLOAD = struct.Struct(">IIIIQQd")            # cookie, payload length, offset, digits, lowest, highest, ratio
_COMPRESSED_COOKIE = 0x1C849304                 # HdrHistogram's V2 compressed form (low nibble: word size)
_COUNTS = new_histogram().counts_len
MAX_ENCODED = 1 << 20                           # characters of one encoded histogram
MAX_DECODED = _PAYLOAD.size + 9 * _COUNTS       # every counter at its longest varint


def decode(text: str | bytes) -> HdrHistogram:
    """The histogram ``text`` encodes; InvalidArgument unless it is one of this
    module's (1 us to an hour, 3 digits). A file's histogram is untrusted: its
    zlib part is inflated to at most MAX_DECODED bytes, what a real one can need,
    before hdrh sees it (a zlib bomb costs no more than that)."""
    if len(text) > MAX_ENCODED:
        raise InvalidArgument(f"a histogram of {len(text):,} characters, over {MAX_ENCODED:,}")
    try:
        data = text.encode("ascii") if isinstance(text, str) else bytes(text)
        raw = base64.b64decode(data, validate=True)
    except (UnicodeEncodeError, binascii.Error, TypeError):
        raise InvalidArgument("a histogram that is not base64") from None
    if len(raw) < _OUTER.size:
        raise InvalidArgument("a histogram too short for its header")
    cookie, length = _OUTER.unpack_from(raw)
    if cookie & ~0xF0 != _COMPRESSED_COOKIE or length != len(raw) - _OUTER.size:
        raise InvalidArgument("a histogram without HdrHistogram's header")
    inflater = zlib.decompressobj()
    try:
        payload = inflater.decompress(raw[_OUTER.size:], MAX_DECODED + 1)
    except zlib.error:
        raise InvalidArgument("a histogram whose zlib part is damaged") from None
    if len(payload) > MAX_DECODED or inflater.unconsumed_tail:
        raise InvalidArgument(f"a histogram that inflates past {MAX_DECODED:,} bytes (a zlib bomb?)")
    if not inflater.eof or len(payload) < _PAYLOAD.size:
        raise InvalidArgument("a histogram cut short")
    _, declared, _, digits, lowest, highest, _ = _PAYLOAD.unpack_from(payload)
    if (digits, lowest, highest) != (DIGITS, LOWEST_US, HIGHEST_US) or declared != len(payload) - _PAYLOAD.size:
        raise InvalidArgument(f"a histogram of other settings ({lowest}-{highest}, {digits} digits) "
                              f"or size ({declared:,} bytes declared)")
    try:
        return HdrHistogram.decode(data)
    except Exception as error:          # hdrh raises its own types and zlib's, ValueError, TypeError
        raise InvalidArgument(f"a histogram hdrh cannot read ({type(error).__name__})") from None


def merge(encoded_list: Iterable[str | bytes | None]) -> HdrHistogram:
    """One histogram holding every value of the encoded ones."""
    total = new_histogram()
    for text in encoded_list:
        if text:
            total.add(decode(text))
    return total


def summary_ms(histogram: HdrHistogram) -> dict[str, float | None]:
    """count, p50/p90/p99/p99.9 and max, in milliseconds (None without values)."""
    count = histogram.get_total_count()
    figures: dict[str, float | None] = {"count": count}
    for p in PERCENTILES:
        figures[f"p{p:g}"] = histogram.get_value_at_percentile(p) / 1000 if count else None
    figures["max"] = histogram.get_max_value() / 1000 if count else None
    return figures


class Latencies:
    """One phase's latencies: values of this second buffered, then histograms."""

    __slots__ = ("buffer", "second", "total")

    def __init__(self) -> None:
        self.buffer = array("q")        # microseconds, appended by the hot path (never replaced)
        self.second = new_histogram()   # the values of the last flushed second
        self.total = new_histogram()

    def flush(self) -> HdrHistogram:
        """Record the buffered values; the histogram of this second alone."""
        values = self.buffer[:]
        del self.buffer[:]          # in place: the hot path keeps the buffer's bound append
        self.second = new_histogram()       # cheaper than reset(), a Python loop over the counts
        if not values:
            return self.second
        folded: dict[int, int] = {}
        get = folded.get
        for value, count in Counter(values).items():
            if value >= _EXACT_BELOW:
                value &= -1 << (value.bit_length() - _SUB_BUCKET_BITS)
            folded[value] = get(value, 0) + count
        record = self.second.record_value
        for value, count in folded.items():
            record(min(max(value, LOWEST_US), HIGHEST_US), count)
        self.total.add(self.second)
        return self.second
