"""The seed's echo server on the kernel: one task serves every client, another
keeps saying it is alive, and neither blocks the other.

    python -m tpsharness.examples.echo [--host 127.0.0.1] [--port 16000]

Try it with ``nc 127.0.0.1 16000``. Ctrl-C stops it.
"""

import argparse
import sys
from collections.abc import Callable

from tpsharness import net
from tpsharness.defaults import HOST
from tpsharness.kernel import run
from tpsharness.syscalls import NewTask, Sleep


async def handle_client(sock: net.Socket) -> None:
    """Echo what arrives until the peer closes."""
    try:
        while True:
            data = await sock.recv()
            if not data:
                return
            await sock.sendall(data)
    except OSError:
        return              # a reset peer ends only its own handler
    finally:
        sock.close()


async def echo_server(listener: net.Socket,
                      on_connection: Callable[[tuple[str, int]], None] | None = None) -> None:
    """Accept forever; each connection gets a daemon handler task."""
    try:
        while True:
            sock, address = await listener.accept()
            if on_connection is not None:
                on_connection(address)
            await NewTask(handle_client(sock), daemon=True)
    finally:
        listener.close()


async def alive(interval: float = 1.0, say: Callable[[str], object] = print) -> None:
    """Keep saying "I'm alive" every ``interval`` seconds."""
    while True:
        say("I'm alive")
        await Sleep(interval)


async def main(host: str, port: int) -> None:
    listener = net.listen(host, port)
    print(f"echo server listening on {listener.peer}", flush=True)
    await NewTask(alive())
    await echo_server(listener)


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tpsharness.examples.echo",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=HOST)
    parser.add_argument("--port", type=int, default=16000)
    args = parser.parse_args(argv)
    try:
        run(main(args.host, args.port))
    except KeyboardInterrupt:
        return 0
    except OSError as error:
        print(f"echo: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(cli())
