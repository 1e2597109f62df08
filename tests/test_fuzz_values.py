"""Hostile values of every field's kind (tpsharness.fuzz.values): each class builds the
request it says, shrinks to its smallest member, is drawn within a run's first
seconds, and the bundled fake (the model) answers every one without dying."""

import json
import socket
from collections import Counter

import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings

from fake_tps import FakeTPS
from tpsharness.fuzz import values
from tpsharness.fuzz.programs import programs
from tpsharness.fuzz.uuids import Uuids
from tpsharness.fuzz.values import Hostile
from tpsharness.protocol import Reader

UUIDS = Uuids("fz00000001")
HOST = "127.0.0.1:6604"


def all_pairs() -> list[tuple[str, str, str]]:
    classes = {"json": values.JSON_CLASSES, "header": values.HEADER_CLASSES, "line": values.LINE_CLASSES}
    pairs = []
    for base in ("register", "private_data"):
        places = ([f"json:{path}" for path in values.JSON_PLACES] if base == "register" else []) + \
            [f"header:{name}" for name in values.HEADERS[base]] + [f"line:{part}" for part in values.LINE_PARTS]
        pairs += [(base, where, kind) for where in places for kind in classes[where.split(":")[0]]]
    return pairs


def body(data: bytes) -> bytes:
    return data.partition(b"\r\n\r\n")[2]


@pytest.mark.parametrize("kind, text", [
    ("object", {}), ("array", []), ("number", 0), ("float", 0.5), ("negative", -1), ("huge", 9999999999999999999),
    ("null", None), ("true", True), ("false", False), ("empty", ""), ("long", ""), ("unicode", "é中😀\ud800"),
    ("nul", "\x00b"), ("nested", [[]]),
])
def test_each_json_value_class_at_size_0_is_its_smallest_member(kind: str, text: object) -> None:
    data = Hostile("register", "json:TransProxy.Body.AuthCode", kind).build(UUIDS, HOST)
    assert json.loads(body(data))["TransProxy"]["Body"]["AuthCode"] == text


def test_json_structure_classes_remove_repeat_or_add_a_field_and_replace_whole_objects() -> None:
    def document(where: str, kind: str) -> bytes:
        return body(Hostile("register", where, kind).build(UUIDS, HOST))
    assert "AuthCode" not in json.loads(document("json:TransProxy.Body.AuthCode", "missing"))["TransProxy"]["Body"]
    assert document("json:TransProxy.Body.AuthCode", "duplicated").count(b'"AuthCode"') == 2
    assert json.loads(document("json:TransProxy.Header", "unknown"))["TransProxy"]["X-Unknown-0"] == "v"   # beside it
    assert json.loads(document("json:TransProxy.Body", "array"))["TransProxy"]["Body"] == []
    assert document("json:", "missing") == b"" and json.loads(document("json:", "null")) is None


def test_a_long_value_has_the_size_it_says_and_content_length_follows_the_body() -> None:
    data = Hostile("register", "json:TransProxy.Body.SerialNumber", "long", 65536).build(UUIDS, HOST)
    message = Reader(max_body=2 ** 20)
    message.feed(data)
    assert len(json.loads(body(data))["TransProxy"]["Body"]["SerialNumber"]) == 65536
    assert message.next() is not None and message.buffered == 0
    header = Hostile("private_data", "header:DestUuid", "long", 1025, payload=b"hi").build(UUIDS, HOST)
    assert b"\r\nDestUuid: " + b"x" * 1025 + b"\r\n" in header


@pytest.mark.parametrize("kind, line", [
    ("missing", None), ("empty", b"SrcUuid: "), ("cr", b"SrcUuid: \rfz00000001-u0"),
    ("lf", b"SrcUuid: \nfz00000001-u0"), ("nul", b"SrcUuid: \x00fz00000001-u0"), ("case", b"srcuuid: fz00000001-u0"),
    ("spacing", b"SrcUuid:fz00000001-u0"), ("number", b"SrcUuid: 0"),
])
def test_each_header_class_at_size_0(kind: str, line: bytes | None) -> None:
    data = Hostile("private_data", "header:SrcUuid", kind, payload=b"x").build(UUIDS, HOST)
    head = data.partition(b"\r\n\r\n")[0]
    if line is None:
        assert b"SrcUuid" not in head
    else:
        assert line in head
    assert Hostile("private_data", "header:SrcUuid", "duplicated").build(UUIDS, HOST).count(b"SrcUuid: ") == 2


def test_request_line_classes() -> None:
    def line(part: str, kind: str, size: int = 0) -> bytes:
        return Hostile("register", f"line:{part}", kind, size).build(UUIDS, HOST).split(b"\r\n")[0]
    assert line("method", "other") == b"GET /TransProxy HTTP/1.1"
    assert line("version", "missing") == b"POST /TransProxy"
    assert line("path", "case") == b"POST /transproxy HTTP/1.1"
    assert line("path", "long", 3) == b"POST /aaa HTTP/1.1"


def test_every_class_of_every_place_is_answered_by_the_fake_which_stays_alive() -> None:
    fake = FakeTPS()
    with fake.start_in_thread():
        for base, where, kind in all_pairs():
            for size in (0, 1025):
                request = Hostile(base, where, kind, size, 0, 1, b"hi").build(UUIDS, HOST)
                with socket.create_connection(fake.address, timeout=5) as sock:
                    sock.sendall(request)
                    sock.shutdown(socket.SHUT_WR)
                    sock.settimeout(5)
                    while sock.recv(65536):     # its answer, then its close: never silence
                        pass
        with socket.create_connection(fake.address, timeout=5):
            pass
    assert fake.crash is None


def test_every_value_class_is_drawn_within_the_first_programs_of_a_run() -> None:
    seen: Counter[str] = Counter()

    @seed(1)
    @settings(max_examples=3000, database=None, suppress_health_check=list(HealthCheck), phases=[Phase.generate])
    @given(programs(10))
    def draw(program: object) -> None:
        for step in program.steps:      # type: ignore[attr-defined]
            raw = step.get("raw")
            if isinstance(raw, Hostile):
                seen[f"{raw.where.split(':')[0]}:{raw.kind}"] += 1
    draw()
    wanted = {f"json:{kind}" for kind in values.JSON_CLASSES} | {f"header:{kind}" for kind in values.HEADER_CLASSES} \
        | {f"line:{kind}" for kind in values.LINE_CLASSES}
    # 3000 programs are about 30 s of a run against the fake (some 100 programs/s). Alone
    # this seed draws every class within 900; once in a CI run (an xdist worker, after other
    # tests) 1500 missed json:long, for a reason not found: hence the margin.
    assert wanted <= set(seen), sorted(wanted - set(seen))
