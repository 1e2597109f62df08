"""TCP stream rebuilding: segments in any order, repeated or overlapping, give each
direction's bytes once, in order, as the writes the sender made."""

from tpsharness.record.streams import MASK, HalfStream


def feed(stream, segments):
    """(seq, data, push) segments at one time each; the writes delivered."""
    writes = []
    for time, (seq, data, push) in enumerate(segments):
        writes += [data for _, data in stream.segment(time * 0.001, seq, data, push=push, fin=False)]
    return writes


def test_segments_in_order_are_one_write_until_psh():
    stream = HalfStream()
    stream.syn(99)
    assert feed(stream, [(100, b"POST ", False), (105, b"/x", True), (107, b"next", True)]) == \
        [b"POST /x", b"next"]


def test_out_of_order_segments_wait_for_the_gap_to_fill():
    stream = HalfStream()
    stream.syn(0)
    assert feed(stream, [(6, b"world", True), (1, b"hello", False)]) == [b"helloworld"]


def test_a_retransmission_is_dropped_and_an_overlap_delivers_only_its_new_part():
    stream = HalfStream()
    stream.syn(0)
    writes = feed(stream, [(1, b"abcd", True), (1, b"abcd", True), (3, b"cdef", True)])
    assert writes == [b"abcd", b"ef"]
    assert stream.retransmitted == 1


def test_sequence_numbers_wrap_around():
    stream = HalfStream()
    stream.syn(MASK - 2)            # offset 0 is at MASK - 1
    assert feed(stream, [(MASK - 1, b"ab", False), (0, b"cd", True)]) == [b"abcd"]


def test_a_capture_that_starts_mid_stream_begins_at_the_first_segment_seen():
    stream = HalfStream()
    assert feed(stream, [(5000, b"tail of something", True), (5017, b"POST", True)]) == \
        [b"tail of something", b"POST"]
    assert stream.mid_stream


def test_a_segment_from_before_the_first_one_seen_adds_only_what_is_new():
    stream = HalfStream()
    feed(stream, [(5000, b"later", True)])
    assert feed(stream, [(4990, b"0123456789later!", True)]) == [b"!"]


def test_a_gap_that_never_fills_breaks_the_stream():
    stream = HalfStream()
    stream.syn(0)
    assert feed(stream, [(1, b"ok", True), (10, b"after a lost segment", True)]) == [b"ok"]
    assert stream.end() == []
    assert "never filled" in stream.broken


def test_bytes_held_past_a_gap_are_bounded():
    stream = HalfStream(max_pending=1000)
    stream.syn(0)
    feed(stream, [(5000 + i * 100, b"x" * 100, True) for i in range(11)])
    assert "more than 1000 bytes" in stream.broken and stream.end() == []


def test_the_fin_ends_the_stream_after_the_last_byte():
    stream = HalfStream()
    stream.syn(0)
    assert stream.segment(0, 4, b"def", push=True, fin=True) == []      # early: waits
    assert [d for _, d in stream.segment(0, 1, b"abc", push=False, fin=False)] == [b"abcdef"]
    assert stream.finished


def test_segments_further_apart_than_a_write_gap_are_separate_writes():
    stream = HalfStream()
    stream.syn(0)
    first = stream.segment(0.0, 1, b"one", push=False, fin=False)
    second = stream.segment(1.0, 4, b"two", push=True, fin=False)
    assert first == [] and [d for _, d in second] == [b"one", b"two"]
