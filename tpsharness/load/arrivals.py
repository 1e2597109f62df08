"""What arrives during a load run, judged in the pool's callback: the hot path.

A device's read is framed and each relayed payload checked before it is believed:
its checksum, its pair, that the pair's client is its sender, that its number was
sent and its send time lies within the run. A payload that passes is delivered (at
its own device, under its sender's SrcUuid), misattributed (at its own device under
another SrcUuid) or misrouted (anywhere else, a client included); one that fails is
corrupted. A client's read is acks (counted in a batch when the read is nothing
else, matched in order to send times), refusals, or private data: its device's
answer, or a message that reached it instead of a device.

Nothing a TPS sends can stop the reading: every field is range-checked, and a
closed-loop sender is refilled only for a message of its own still in flight. A
corrupted payload refills the client its header names only when its checksum fails
(bytes damaged: most likely one of ours); one with a valid checksum and impossible
fields was made up, and refilling for it would let a TPS multiply what is sent.
"""

from __future__ import annotations

from collections.abc import Callable
from time import monotonic
from typing import Protocol
from zlib import crc32

from ..protocol import PrivateData, RegisterReply, Reply, quote, status_text
from . import payload as payload_format
from .accounting import MAX_EXAMPLES, Counters, Streams, reply_status
from .endpoints import LoadClient, LoadDevice, Message

LoadEndpoint = LoadDevice | LoadClient
OnRead = Callable[[LoadEndpoint, bytes], None]
Send = Callable[[LoadClient, float], bool]
Write = Callable[[LoadEndpoint, bytes], None]


class Sending(Protocol):
    """The run the reading refills: closed-loop senders send again while ``sending``."""

    sending: bool


class Evidence:
    """What the anomalies looked like, for the patterns a summary names: where
    misrouted messages went, and whether each came in a read that also held a
    message for the device that got it; the first corrupted payloads, described."""

    __slots__ = ("same_read", "to_clients", "receivers", "corrupted")

    def __init__(self) -> None:
        self.same_read = 0                      # misrouted at a device, after one for it in the same read
        self.to_clients = 0                     # misrouted to a client
        self.receivers: dict[int, int] = {}     # endpoint code (see Streams) -> misrouted arrivals
        self.corrupted: list[dict[str, str]] = []

    def to_dict(self, name: Callable[[int], str]) -> dict[str, object]:
        top = max(self.receivers.items(), key=lambda item: item[1], default=None)
        return {"misrouted_same_read": self.same_read, "misrouted_to_clients": self.to_clients,
                "misrouted_receivers": len(self.receivers),
                "misrouted_top_receiver": [name(top[0]), top[1]] if top else None}


def make_on_read(run: Sending, streams: Streams, counters: Counters, evidence: Evidence,
                 clients: list[LoadClient], answers: list[Callable[[bytes], bytes]], send: Send,
                 write: Write, start: float, closed_loop: bool) -> OnRead:
    """The pool's callback for one read of any endpoint; ``start`` is when traffic began
    (no payload of this run was sent before it), ``answers[pair]`` builds a device's
    answer (empty: no message asks for one)."""
    receive = streams.receive
    highest = streams.highest
    at_destination = streams.at_destination
    device_of = streams.device_of
    client_of = streams.client_of
    next_seq = streams.next_seq
    pairs = len(device_of)
    ack_append = counters.latency["ack"].buffer.append      # the buffers are emptied in place
    relay_append = counters.latency["relay"].buffer.append
    reply_append = counters.latency["reply"].buffer.append
    unpack_header = payload_format.unpack_header
    header_size = payload_format.HEADER_SIZE
    ask = payload_format.ASK_REPLY if answers else 0
    by_src = {client.uuid: client for client in clients}
    uuids = [client.uuid for client in clients]
    errors = counters.errors
    own_in_read = False             # the device read being framed held a message for its device

    def refill(client: LoadClient, now: float) -> None:
        if client.in_flight <= 0:       # an arrival the TPS made up: no message of ours to replace
            return
        client.in_flight -= 1
        client.last_progress = now
        if closed_loop and run.sending:
            send(client, now)

    def on_read(endpoint: LoadEndpoint, data: bytes) -> None:
        """One read's messages: a device's relays, a client's acks and answers."""
        nonlocal own_in_read
        now = monotonic()
        if endpoint.__class__ is LoadDevice:
            own_in_read = False
            for message in endpoint.frame(data, relayed, now):
                if message.__class__ is PrivateData:
                    relayed(endpoint, message.src, message.body, now)
                elif not isinstance(message, (Reply, RegisterReply)):
                    unexpected(endpoint, message)
                elif message.status != 200:
                    errors.add(reply_status(message), f"device {endpoint.uuid}: TPS answered "
                               f"{status_text(message)} to a heartbeat or an answer")
            return
        client: LoadClient = endpoint   # type: ignore[assignment]  # the pool holds devices and clients
        acks = client.whole_acks(data)
        if acks:
            counters.acked += acks
            due_times = client.due_times
            for _ in range(acks):
                if due_times:
                    ack_append(int((now - due_times.popleft()) * 1e6))
            return
        for message in client.messages(data):
            on_client_message(client, message, now)

    def relayed(endpoint: LoadDevice, src: str, body: bytes, now: float) -> None:
        """Private data relayed to device ``endpoint`` from ``src``: account it."""
        nonlocal own_in_read
        if len(body) >= header_size:            # intact(), inline: the hot path
            check, sender, pair, seq, due, flags = unpack_header(body)
            if (check == crc32(body[4:]) and pair < pairs and client_of[pair] == sender
                    and seq < next_seq[pair] and start <= due <= now):
                if device_of[pair] != endpoint.index:
                    misrouted(endpoint, endpoint.index, sender, pair, seq, now)
                    return
                if src != uuids[sender]:
                    if streams.misattribute(pair, seq, endpoint.index):     # a copy frees no slot
                        refill(clients[sender], now)
                    return
                own_in_read = True
                if seq == highest[pair] + 1:            # Streams.receive's usual case, inline
                    highest[pair] = at_destination[pair] = seq
                    streams.delivered += 1
                    streams.arrived += 1
                elif not receive(pair, seq):
                    return
                relay_append(int((now - due) * 1e6))
                if flags & ask:
                    counters.answers += 1
                    write(endpoint, answers[pair](body))
                client = clients[sender]
                if client.in_flight > 0:        # refill(), inline
                    client.in_flight -= 1
                    client.last_progress = now
                    if closed_loop and run.sending:
                        send(client, now)
                return
        corrupted(endpoint, src, body, now)

    def misrouted(endpoint: LoadEndpoint, at: int, sender: int, pair: int, seq: int, now: float) -> None:
        """An intact message that reached ``endpoint`` (code ``at``), not its device."""
        first = streams.misroute(pair, seq, at)
        evidence.receivers[at] = evidence.receivers.get(at, 0) + 1
        if endpoint.__class__ is LoadDevice:
            evidence.same_read += own_in_read
        else:
            evidence.to_clients += 1
        if first:                       # a copy frees no slot of its sender's window
            refill(clients[sender], now)

    def corrupted(endpoint: LoadEndpoint, src: str, body: bytes, now: float) -> None:
        """Bytes that are not a message this run sent (damaged, or made up)."""
        streams.corrupted += 1
        if len(evidence.corrupted) < MAX_EXAMPLES:
            evidence.corrupted.append(
                {"at": endpoint.uuid, "src": quote(src.encode("utf-8", "replace"), 60),
                 "why": payload_format.describe_damage(body, pairs, client_of, next_seq)})
        if len(body) >= header_size:
            check, sender, pair, seq, _, _ = unpack_header(body)
            if check == crc32(body[4:]):
                return              # made up: it replaces no message, lost or in flight
            if endpoint.__class__ is LoadDevice and pair < pairs and client_of[pair] == sender \
                    and seq < next_seq[pair]:
                streams.damage(pair, seq)       # one of ours, damaged: it arrived, once
        client = by_src.get(src)
        if client is not None:
            refill(client, now)

    def on_client_message(endpoint: LoadClient, message: Message, now: float) -> None:
        """A client's message: an ack (in order), a refusal, or private data."""
        if message.__class__ is PrivateData:
            received_by_client(endpoint, message, now)
            return
        if not isinstance(message, (Reply, RegisterReply)):
            unexpected(endpoint, message)
            return
        due_times = endpoint.due_times
        due = due_times.popleft() if due_times else None
        if message.status == 200:
            counters.acked += 1
            if due is not None:
                ack_append(int((now - due) * 1e6))
        else:
            counters.rejected += 1
            errors.add(reply_status(message), f"client {endpoint.uuid}: TPS answered "
                       f"{status_text(message)} to private data")
            refill(endpoint, now)

    def received_by_client(endpoint: LoadClient, message: PrivateData, now: float) -> None:
        """This client's answer from its device (the request's body sent back), or a
        message that reached a client: misrouted."""
        body = message.body
        header = intact(body, now)
        if header is None:
            corrupted(endpoint, message.src, body, now)
            return
        _, sender, pair, seq, due, _ = header
        if message.src in by_src or sender != endpoint.index:
            misrouted(endpoint, -1 - endpoint.index, sender, pair, seq, now)
            return
        counters.replies += 1
        reply_append(int((now - due) * 1e6))

    def intact(body: bytes, now: float) -> tuple[int, int, int, int, float, int] | None:
        """The header of ``body`` if it is a payload this run sent, intact; else None."""
        if len(body) < header_size:
            return None
        header = unpack_header(body)
        check, sender, pair, seq, due, _ = header
        if (check == crc32(body[4:]) and pair < pairs and client_of[pair] == sender
                and seq < next_seq[pair] and start <= due <= now):
            return header
        return None

    def unexpected(endpoint: LoadEndpoint, message: Message) -> None:
        """A request no TPS sends its peers (a register, an unknown path): an error
        counted, not the end of every connection's reading."""
        what = "device" if endpoint.__class__ is LoadDevice else "client"
        errors.add("protocol error", f"{what} {endpoint.uuid}: TPS sent a request that is "
                   f"neither private data nor a reply: {quote(message.raw)}")

    return on_read
