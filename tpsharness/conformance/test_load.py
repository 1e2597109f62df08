"""Many devices at once, on one kernel."""

from tpsharness.client import Client
from tpsharness.device import Device
from tpsharness.harness import Harness
from tpsharness.syscalls import NewTask, WaitTask


def test_200_devices_registered_at_once_each_receive_their_data(tps: Harness) -> None:
    async def connect_and_register(device: Device) -> None:
        await device.connect()
        await device.register()

    async def main() -> list[bytes]:
        devices = [Device(tps.address, timeout=tps.timeout) for _ in range(200)]
        try:
            for tid in [await NewTask(connect_and_register(d)) for d in devices]:
                await WaitTask(tid)
            client = Client(tps.address, timeout=tps.timeout)
            await client.connect()
            try:
                for index, device in enumerate(devices):
                    await client.send(device.uuid, b"for device %d" % index)
                return [(await device.receive()).body for device in devices]
            finally:
                client.close()
        finally:
            for device in devices:
                device.close()

    received = tps.run(main(), timeout=60)
    assert received == [b"for device %d" % i for i in range(200)]
