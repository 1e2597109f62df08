"""A device's next register request is a public operation: the scenario player and
``register`` build it the same way, with the next CSeq."""

import json

from tpsharness.device import Device
from tpsharness.protocol import Reader


def _register(data):
    reader = Reader()
    reader.feed(data)
    (message,) = list(reader)
    return message


def test_register_request_numbers_each_request_and_defaults_to_the_device():
    device = Device(("127.0.0.1", 6604), "cam-7", auth_code="1234", trailing_crlf=True)
    first, second = device.register_request(), device.register_request()
    assert first.endswith(b"}\r\n") and second.endswith(b"}\r\n")
    heads = [json.loads(data.split(b"\r\n\r\n", 1)[1])["TransProxy"] for data in (first, second)]
    assert [head["Header"]["CSeq"] for head in heads] == ["1", "2"]
    assert heads[0]["Body"] == {"AuthCode": "1234", "SerialNumber": "cam-7"}
    assert _register(first).serial == "cam-7"


def test_register_request_may_name_another_serial_and_fields():
    device = Device(("127.0.0.1", 6604), "cam-7")
    data = device.register_request("cam-8", auth_code="9", trailing_crlf=False)
    body = json.loads(data.split(b"\r\n\r\n", 1)[1])["TransProxy"]["Body"]
    assert body == {"AuthCode": "9", "SerialNumber": "cam-8"} and not data.endswith(b"\r\n")
    assert device.uuid == "cam-7"
