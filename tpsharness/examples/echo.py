"""The seed's echo server on the kernel: one task serves every client, another
keeps saying it is alive, and neither blocks the other.

    python -m tpsharness.examples.echo [--host 127.0.0.1] [--port 16000]

Try it with ``nc 127.0.0.1 16000``. Ctrl-C stops it.
"""

import argparse
import sys

from tpsharness import net
from tpsharness.kernel import run
from tpsharness.syscalls import NewTask, Sleep


async def handle_client(sock):
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


async def echo_server(listener, on_connection=None):
    """Accept forever; each connection gets a daemon handler task."""
    try:
        while True:
            sock, address = await listener.accept()
            if on_connection is not None:
                on_connection(address)
            await NewTask(handle_client(sock), daemon=True)
    finally:
        listener.close()


async def alive(interval=1.0, say=print):
    """Keep saying "I'm alive" every ``interval`` seconds."""
    while True:
        say("I'm alive")
        await Sleep(interval)


async def main(host, port):
    listener = net.listen(host, port)
    print(f"echo server listening on {listener.peer}", flush=True)
    await NewTask(alive())
    await echo_server(listener)


def cli(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tpsharness.examples.echo",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
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
