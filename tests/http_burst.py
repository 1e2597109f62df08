"""Many HTTP requests at once from one thread (selectors), for the exporter's tests
and its soak: each connection sends one request and reads its answer until the close."""

import re
import selectors
import socket
import time


def burst(address, request, count, seconds):
    """``count`` connections at once, each sending ``request``; (statuses, seconds until
    the last answer). A status is 'unanswered' when no answer came within ``seconds``."""
    selector = selectors.DefaultSelector()
    answers = {}
    started = time.monotonic()
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(address)
        answers[sock] = b""
        selector.register(sock, selectors.EVENT_WRITE)
    deadline = started + seconds
    pending = set(answers)
    while pending and time.monotonic() < deadline:
        for key, events in selector.select(timeout=max(0.0, deadline - time.monotonic())):
            sock = key.fileobj
            if events & selectors.EVENT_WRITE:
                try:
                    sock.send(request)
                    selector.modify(sock, selectors.EVENT_READ)
                except OSError:
                    pending.discard(sock)
                    selector.unregister(sock)
                continue
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            answers[sock] += data
            if not data:
                pending.discard(sock)
                selector.unregister(sock)
    elapsed = time.monotonic() - started
    statuses = []
    for sock, answer in answers.items():
        match = re.match(rb"HTTP/1\.[01] (\d{3}) ", answer)
        statuses.append(int(match.group(1)) if match and sock not in pending else "unanswered")
        sock.close()
    selector.close()
    return statuses, elapsed
