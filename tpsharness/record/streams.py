"""TCP stream rebuilding, sans-IO: captured segments in, each direction's bytes in
order out, as the writes the sender made.

Sequence numbers are taken relative to the first one (the SYN's, or the first
segment's when the capture began mid-stream), modulo 2**32. A segment wholly before
what was delivered is a retransmission and is dropped; one that overlaps it
delivers only its new part; one past a gap waits (at most ``max_pending`` bytes)
until the gap fills. Delivered bytes are grouped into the sender's writes: a write
ends at a segment with PSH (TCP's sender marks the end of each write so), at a FIN,
or when the next segment comes more than WRITE_GAP later. A direction whose gap
never fills, or that holds more than ``max_pending`` bytes past one, cannot be
rebuilt: ``broken`` says why.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

MASK = 0xFFFFFFFF
HALF = 1 << 31
WRITE_GAP = 0.05            # seconds: segments further apart were separate writes
MAX_PENDING = 16 * 1024 * 1024


@dataclass(slots=True)
class HalfStream:
    """One direction of a connection."""

    max_pending: int = MAX_PENDING
    base: int | None = None         # the sequence number of offset 0
    offset: int = 0                 # the next offset to deliver
    fin_at: int | None = None       # where the FIN is, once seen
    finished: bool = False          # every byte up to the FIN is delivered
    broken: str = ""
    mid_stream: bool = False        # no SYN was seen: offset 0 is the first segment seen
    retransmitted: int = 0          # segments dropped as already delivered
    _pending: list[tuple[int, bytes, bool]] = field(default_factory=list)   # a heap: offset, data, PSH
    _pending_size: int = 0
    _write: bytearray = field(default_factory=bytearray)
    _write_time: float = 0.0

    @property
    def empty(self) -> bool:
        """No byte came this way: none delivered, none held past a gap, none lost."""
        return not self.offset and not self._pending and not self.broken

    def syn(self, seq: int) -> None:
        if self.base is None:
            self.base = (seq + 1) & MASK

    def segment(self, time: float, seq: int, data: bytes, *, push: bool, fin: bool) -> list[tuple[float, bytes]]:
        """Take one segment; the writes it completes, each with its time."""
        if self.broken or self.finished or not (data or fin):
            return []           # a bare ACK says nothing of this direction's bytes
        if self.base is None:
            self.base = seq
            self.mid_stream = True
        start = (seq - self.base) & MASK
        if start == self.offset and push and not fin and not self._write and not self._pending:
            self.offset += len(data)    # the usual segment: in order, a whole write
            return [(time, data)]
        if start >= HALF:
            start -= 1 << 32            # before offset 0: only its tail can be new
        end = start + len(data)
        if fin and self.fin_at is None:
            self.fin_at = end
        writes: list[tuple[float, bytes]] = []
        if self._write and time - self._write_time > WRITE_GAP:
            writes.append(self._flush())
        if data:
            if end <= self.offset:
                self.retransmitted += 1
            elif start > self.offset:
                heapq.heappush(self._pending, (start, data, push))
                self._pending_size += len(data)
                if self._pending_size > self.max_pending:
                    self.broken = (f"more than {self.max_pending} bytes arrived past a gap at "
                                   f"byte {self.offset} (a segment the capture lost)")
                    self._pending.clear()
                    return writes
            else:
                self._deliver(time, data[self.offset - start:])
                if push:
                    writes.append(self._flush())
                self._drain(time, writes)
        if self.fin_at is not None and self.offset >= self.fin_at:
            self.finished = True
            if self._write:
                writes.append(self._flush())
        return writes

    def _deliver(self, time: float, data: bytes) -> None:
        self._write_time = time         # a write is complete when its last byte is
        self._write += data
        self.offset += len(data)

    def _drain(self, time: float, writes: list[tuple[float, bytes]]) -> None:
        pending = self._pending
        while pending and pending[0][0] <= self.offset:
            start, data, push = heapq.heappop(pending)
            self._pending_size -= len(data)
            if start + len(data) > self.offset:
                self._deliver(time, data[self.offset - start:])
                if push:
                    writes.append(self._flush())

    def _flush(self) -> tuple[float, bytes]:
        write = (self._write_time, bytes(self._write))
        self._write.clear()
        return write

    def end(self) -> list[tuple[float, bytes]]:
        """The capture ended: the write still held; ``broken`` if a gap never filled."""
        if self._pending and not self.broken:
            self.broken = (f"a gap at byte {self.offset} never filled (the capture lost a segment); "
                           f"{self._pending_size} bytes after it")
        return [self._flush()] if self._write and not self.broken else []
