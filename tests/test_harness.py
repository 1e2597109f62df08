"""The blocking handles speak the one vocabulary: ``uuid``, ``receive()`` returning a
PrivateData, ``send(dest, payload)`` for private data and ``send_raw`` for bytes."""

from tpsharness.harness import Harness
from tpsharness.protocol import PrivateData, register_request


def test_receive_returns_private_data_on_devices_and_clients(fake):
    harness = Harness(fake.address, timeout=5)
    try:
        device, client = harness.device(), harness.client()
        client.send(device.uuid, b"question")
        question = device.receive()
        assert isinstance(question, PrivateData)
        assert (question.src, question.dest, question.body) == (client.uuid, device.uuid, b"question")
        device.send(question.src, b"answer")
        answer = client.receive()
        assert isinstance(answer, PrivateData) and (answer.src, answer.body) == (device.uuid, b"answer")
    finally:
        harness.close()


def test_send_raw_is_on_every_handle_and_send_always_means_private_data(fake):
    harness = Harness(fake.address, timeout=5)
    try:
        device = harness.device(register=False)
        device.send_raw(register_request(device.uuid))
        assert device.next_reply().ok
        raw = harness.raw()
        raw.send_raw(b"GET / HTTP/1.1\r\n\r\n")
        assert raw.next_reply().status == 400
        client = harness.client("tpsharness-app-given")
        assert client.uuid == "tpsharness-app-given"
        client.send_raw(b"GET / HTTP/1.1\r\n\r\n")
        assert client.next_reply().status == 400
        assert not hasattr(raw, "send")
        for handle in (device, client):
            assert not any(hasattr(handle, old) for old in ("serial", "src", "receive_message"))
    finally:
        harness.close()


def test_a_harness_check_is_strict_when_the_harness_is(fake):
    from tpsharness.harness import Harness
    fake.configure(strict_http=False)
    lenient = Harness(fake.address, timeout=2)
    strict = Harness(fake.address, timeout=2, strict=True)
    try:
        assert lenient.check().ok
        result = strict.check()          # the fake's field ack is not HTTP that h11 frames
        assert not result.ok and "under strict HTTP/1.1" in result.message, result.message
        assert strict.check(strict=False).ok
    finally:
        lenient.close()
        strict.close()


def test_a_harness_is_a_context_manager_that_closes_what_it_opened(fake):
    from conftest import wait_until

    with Harness(fake.address, timeout=2) as tps:
        device = tps.device()
        client = tps.client()
        assert client.send(device.uuid, b"inside").status == 200
        assert wait_until(lambda: fake.stats.open_connections == 2)
    assert device.endpoint.sock.closed and client.endpoint.sock.closed
    assert wait_until(lambda: fake.stats.open_connections == 0), fake.stats


def test_a_harness_closes_its_connections_when_the_block_raises(fake):
    import pytest

    with pytest.raises(RuntimeError):
        with Harness(fake.address, timeout=2) as tps:
            device = tps.device()
            raise RuntimeError("the test failed")
    assert device.endpoint.sock.closed
