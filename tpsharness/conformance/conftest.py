"""Every conformance test ends by checking that the TPS is still alive."""

import socket

import pytest


@pytest.fixture(autouse=True)
def tps_survives(tps_address):
    yield
    try:
        with socket.create_connection(tps_address, timeout=3):
            pass
    except OSError as error:
        host, port = tps_address
        pytest.fail(f"the TPS at {host}:{port} stopped accepting connections during this test "
                    f"({error.strerror or error}): it died", pytrace=False)
