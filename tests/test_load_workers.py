"""Workers for real (issue 18): two ``--tx ssh=...`` workers through a private sshd on
loopback, whose results merge exactly, and a worker killed mid-run, which ends the
run with the figures so far, names the worker and exits 2."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

pytest.importorskip("hdrh")
pytest.importorskip("execnet")

import tpsharness  # noqa: E402
from tpsharness.load.fake import FakeProcess  # noqa: E402

from conftest import free_port, wait_until  # noqa: E402
from test_load import ROOT  # noqa: E402

SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)
HOST_ALIAS = "tpsharness-test-sshd"
WORKER_MARK = "exec(eval(sys.stdin.readline()"     # how execnet starts a worker's Python


def _children(pid):
    found = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as children:
                found += [int(child) for child in children.read().split()]
        except OSError:
            pass
    return found


def _descendants(pid):
    found, todo = [], [pid]
    while todo:
        for child in _children(todo.pop()):
            found.append(child)
            todo.append(child)
    return found


def _workers_under(pid):
    """The execnet worker processes below ``pid``."""
    workers = []
    for child in _descendants(pid):
        try:
            with open(f"/proc/{child}/cmdline", "rb") as cmdline:
                if WORKER_MARK.encode() in cmdline.read():
                    workers.append(child)
        except OSError:
            pass
    return workers


@pytest.fixture
def sshd(tmp_path):
    """A private sshd on 127.0.0.1 (Debian's openssh-server) with a throwaway host key
    and one authorised key; the ssh config file that reaches it as HOST_ALIAS."""
    if SSHD is None or shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        pytest.skip("no sshd/ssh here: install Debian's openssh-server (bash .ci/run does, as root)")
    if not os.path.isdir("/run/sshd"):
        if os.geteuid() != 0:
            pytest.skip("sshd needs its privilege separation directory /run/sshd, and only root can make it")
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    for name in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / name)], check=True)
    shutil.copy(tmp_path / "user_key.pub", tmp_path / "authorized_keys")
    port = free_port()
    user = os.environ.get("USER") or __import__("pwd").getpwuid(os.getuid()).pw_name
    (tmp_path / "sshd_config").write_text(
        f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {tmp_path / 'host_key'}\n"
        f"AuthorizedKeysFile {tmp_path / 'authorized_keys'}\nPidFile {tmp_path / 'sshd.pid'}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        "PermitRootLogin prohibit-password\nLogLevel ERROR\n")
    (tmp_path / "ssh_config").write_text(
        f"Host {HOST_ALIAS}\n  HostName 127.0.0.1\n  Port {port}\n  User {user}\n"
        f"  IdentityFile {tmp_path / 'user_key'}\n  IdentitiesOnly yes\n  BatchMode yes\n"
        "  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n")
    server = subprocess.Popen([SSHD, "-D", "-e", "-f", str(tmp_path / "sshd_config")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        def listening():
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return True
            except OSError:
                return server.poll() is not None
        wait_until(listening, 10)
        if server.poll() is not None:
            pytest.skip(f"sshd did not start here: {server.stderr.read().strip()[-300:]}")
        login = subprocess.run(["ssh", "-F", str(tmp_path / "ssh_config"), HOST_ALIAS, "true"],
                               capture_output=True, text=True, timeout=20)
        if login.returncode:
            pytest.skip(f"the private sshd refused the test's key: {login.stderr.strip()[-300:]}")
        yield server, str(tmp_path / "ssh_config")
    finally:
        server.terminate()
        try:
            server.wait(5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(5)


def _spec(ssh_config):
    return f"ssh={HOST_ALIAS}//ssh_config={ssh_config}//python={sys.executable}"


@pytest.mark.slow
@pytest.mark.timeout(90)        # two ssh logins and a worker's imports on each, on a loaded machine
def test_two_ssh_workers_through_a_private_sshd_deliver_and_merge_exactly(sshd):
    _, ssh_config = sshd
    with FakeProcess() as address:
        result = tpsharness.load(*address, tx=[_spec(ssh_config)] * 2, devices=6, clients=2, duration=1.0,
                                 window=2, timeout=5.0, drain=3.0)
    assert result.exit_code == 0, result.verdict
    assert [w["name"] for w in result.workers] == [f"0:ssh={HOST_ALIAS}", f"1:ssh={HOST_ALIAS}"]
    assert [w["devices"] for w in result.workers] == [3, 3]
    assert result.devices == 6 and result.clients == 2
    assert result.delivered == result.sent > 0 and result.lost == 0
    assert result.latency("relay")["count"] == result.delivered == sum(w["delivered"] for w in result.workers)
    assert result.latency("register")["count"] == 6
    assert sum(entry["delivered"] for entry in result.series) == result.delivered


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_an_ssh_worker_killed_mid_run_ends_the_run_with_the_figures_so_far(sshd):
    server, ssh_config = sshd
    killed = []

    def kill_one_after_the_first_second(snapshot):
        if killed:
            return
        workers = _workers_under(server.pid)
        if workers:
            os.kill(workers[0], signal.SIGKILL)
            killed.append(workers[0])

    started = time.monotonic()
    with FakeProcess() as address:
        result = tpsharness.load(*address, tx=[_spec(ssh_config)] * 2, devices=4, clients=2, duration=30.0,
                                 window=1, timeout=5.0, drain=2.0, on_tick=kill_one_after_the_first_second)
    assert killed
    assert time.monotonic() - started < 30
    assert result.exit_code == 2
    assert f"ssh={HOST_ALIAS}" in result.aborted and "ended without a result" in result.aborted
    assert result.delivered > 0
    assert result.verdict.startswith("FAILED: the run could not be carried out: worker ")


@pytest.mark.slow
def test_a_worker_killed_mid_run_ends_it_with_exit_2_naming_the_worker():
    with FakeProcess() as (host, port):
        process = subprocess.Popen([sys.executable, "-m", "tpsharness", "load", host, str(port), "--devices", "4",
                                    "--clients", "2", "--duration", "20", "--tx", "popen", "--tx", "popen"],
                                   cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        try:
            for line in process.stdout:
                if line.strip().startswith("1s"):
                    break
            workers = wait_until(lambda: _workers_under(process.pid), 5)
            assert len(workers) == 2, workers
            os.kill(workers[1], signal.SIGKILL)
            out, err = process.communicate(timeout=15)
        finally:
            process.kill()
            process.wait()
    assert process.returncode == 2, out + err
    assert f"worker 1:popen (pid {workers[1]}) ended without a result" in out
    assert "interrupted (Ctrl-C)" not in out
    delivered = int(out.split("\ndelivered")[1].split()[0].replace(",", ""))
    assert delivered > 0
    verdict = out.rstrip().splitlines()[-1]
    assert verdict.startswith(f"FAILED: the run could not be carried out: worker 1:popen (pid {workers[1]})")


class _Channel:
    """What execnet gives worker.serve: the setup, then the coordinator's messages."""

    def __init__(self, setup, started):
        self.setup, self.started, self.sent, self.callback = setup, started, [], None

    def receive(self):
        return self.setup

    def setcallback(self, callback):
        self.callback = callback

    def send(self, item):
        self.sent.append(item)
        if item[0] == "ready":      # every worker is ready: the coordinator says when to start
            from tpsharness.load.distributed import start_message
            self.callback(start_message(time.monotonic() + 0.1))


@pytest.mark.parametrize("skew", [-3600.0, 3600.0], ids=["clock-behind", "clock-ahead"])
def test_a_worker_whose_wall_clock_is_off_by_an_hour_starts_with_the_others(monkeypatch, skew):
    from fake_tps import FakeTPS
    from tpsharness.load import worker
    from tpsharness.load.config import LoadConfig

    real_time = time.time
    with FakeTPS().start_in_thread() as fake:
        config = LoadConfig(address=fake.address, devices=2, clients=1, duration=0.3, drain=0.5)
        channel = _Channel({"config": config.to_dict(), "name": "w0", "path": None}, time.monotonic())
        monkeypatch.setattr(time, "time", lambda: real_time() + skew)       # this "host's" clock
        started = time.monotonic()
        worker.serve(channel)
    assert channel.sent[-1][0] == "result", channel.sent[-1]
    assert channel.sent[-1][1]["counters"]["delivered"] > 0
    assert time.monotonic() - started < 15          # an hour behind waited an hour; ahead, not at all
