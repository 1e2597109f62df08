"""docs/protocol.md cannot drift: its wire examples are rebuilt with tpsharness.protocol.

A byte block in the document is a fenced block preceded by ``<!-- bytes: NAME ... -->``;
its paragraphs are the named messages, written with visible line breaks that are not
bytes and with ``\\r``, ``\\n`` and ``\\x00`` escapes that are. Every block must name
messages this module knows how to build, and every message built here must appear.
"""

import codecs
import json
import re
from pathlib import Path

import pytest

from fake_tps import FAULTS, OPTIONS
from tpsharness.protocol import (PrivateData, RegisterRequest, Reader, private_data_request,
                                 register_reply, register_request, reply)

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"

SERIAL = "tpsharness-3f2a9c1d"
CLIENT = "tpsharness-app-5b7e0c21"
UTC_TIME = 1795545036

EXAMPLES = {
    "register-request": register_request(SERIAL),
    "register-reply": register_reply(utc_time=UTC_TIME),
    "register-reply-401": register_reply(utc_time=UTC_TIME, error_num="401",
                                         error_string="Unauthorized"),
    "private-data-request": private_data_request(CLIENT, SERIAL, b"hello"),
    "ack-200": reply(200),
    "ack-404": reply(404),
    "ack-400": reply(400),
    "ack-401": reply(401),
    "ack-413": reply(413),
    "ack-200-nul": reply(200, nul=True),
    "ack-404-nul": reply(404, nul=True),
    "strict-ack-200": reply(200, strict=True),
    "strict-ack-404": reply(404, strict=True),
    "strict-ack-400": reply(400, strict=True),
}

MARKED_BLOCK = re.compile(r"<!-- bytes: ([^>]*?) -->\n```[a-z]*\n(.*?)\n```", re.S)
FENCED_BLOCK = re.compile(r"^```[a-z]*\n(.*?)\n```", re.S | re.M)


def wire_bytes(paragraph):
    """A paragraph of the document as the bytes it shows: line breaks dropped, escapes decoded."""
    return codecs.escape_decode("".join(paragraph.split("\n")).encode("ascii"))[0]


def documented_messages(text):
    """(name, bytes) for every message in a marked block, in document order."""
    found = []
    for names, block in MARKED_BLOCK.findall(text):
        names = names.split()
        paragraphs = block.split("\n\n")
        assert len(names) == len(paragraphs), \
            f"marker names {names} but its block holds {len(paragraphs)} messages"
        found += [(name, wire_bytes(paragraph)) for name, paragraph in zip(names, paragraphs)]
    return found


@pytest.fixture(scope="module")
def text():
    return DOC.read_text(encoding="utf-8")


def sections(text):
    """Top-level section number -> its text (citations say "docs/protocol.md section N")."""
    parts = re.split(r"^## (\d)\. ", text, flags=re.M)
    return {int(number): body for number, body in zip(parts[1::2], parts[2::2])}


# -- the bytes -------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(EXAMPLES))
def test_each_message_the_document_shows_is_what_the_builders_make(text, name):
    shown = [data for documented, data in documented_messages(text) if documented == name]
    assert shown, f"docs/protocol.md shows no {name!r} block"
    for data in shown:
        assert data == EXAMPLES[name], f"{name}: the document shows {data!r}, the code builds " \
                                       f"{EXAMPLES[name]!r}"


def test_every_marked_block_names_a_message_this_test_builds(text):
    unknown = {name for name, _ in documented_messages(text)} - set(EXAMPLES)
    assert not unknown, f"markers without a builder here: {sorted(unknown)}"


def test_every_wire_block_is_marked_and_so_checked(text):
    """A block with CRLF escapes is wire bytes; an unmarked one would go unchecked."""
    marked = {block for _, block in MARKED_BLOCK.findall(text)}
    unchecked = [block[:60] for block in FENCED_BLOCK.findall(text)
                 if "\\r\\n" in block and block not in marked]
    assert not unchecked, f"wire blocks without a <!-- bytes: ... --> marker: {unchecked}"


def test_the_documented_messages_read_back_as_what_they_say(text):
    """The examples are not only bytes the builders make, but messages the reader accepts."""
    messages = dict(documented_messages(text))
    for name in ("register-request", "private-data-request"):
        reader = Reader()
        reader.feed(messages[name])
        [message] = list(reader)
        assert isinstance(message, RegisterRequest if name == "register-request" else PrivateData)
    relayed = Reader()
    relayed.feed(messages["ack-200-nul"] + messages["private-data-request"])
    ack, data = list(relayed)
    assert ack.status == 200 and (data.src, data.dest, data.body) == (CLIENT, SERIAL, b"hello")


def test_the_numeric_register_example_is_json_with_numbers(text):
    [block] = [b for b in re.findall(r"```json\n(.*?)\n```", text, re.S) if "4242" in b]
    body = json.loads(block)["TransProxy"]
    assert body["Body"] == {"AuthCode": 4242, "SerialNumber": 4242} and body["Header"]["CSeq"] == 3


# -- the structure others cite ---------------------------------------------------------------

def test_the_six_cited_sections_exist_in_order(text):
    titles = re.findall(r"^## (\d)\. (.*)$", text, flags=re.M)
    assert [number for number, _ in titles] == ["1", "2", "3", "4", "5", "6"]
    assert titles[0][1].startswith("Register") and titles[1][1].startswith("Private data")


def test_section_4_catalogues_every_fault_and_option_of_the_fake(text):
    section = sections(text)[4]
    missing = [name for name in [*FAULTS, *OPTIONS] if f"`{name}`" not in section]
    assert not missing, f"docs/protocol.md section 4 does not describe {missing}"
