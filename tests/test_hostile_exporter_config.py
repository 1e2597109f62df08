"""Hostile ``--config`` and ``--web-config`` files: each is refused at start in one line,
within a bound of time and memory, and none silently weakens the deployment."""

import os
import subprocess
import sys
import textwrap

import bcrypt
import pytest

from tpsharness.errors import ConfigError, ScenarioError
from tpsharness.exporter.config import load_modules, load_web_config
from tpsharness.readfile import read_bounded
from tpsharness.scenario import load as load_scenario

MEMORY_LIMIT = 512 * 1024 * 1024        # bytes of address space a refused file may cost the process


def alias_bomb(levels=12):
    """A few hundred bytes of YAML that expand to 9**levels values."""
    lists = ["&a0 [x,x,x,x,x,x,x,x,x]"]
    lists += [f"&a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "[" + ",".join(lists) + "]"


def limit_memory():
    """In the child: a file that expands in memory makes it fail with MemoryError
    instead of filling the machine."""
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def run_bounded(arguments, **options):
    return subprocess.run([sys.executable, *arguments], capture_output=True, text=True, timeout=20,
                          preexec_fn=limit_memory, **options)


def test_an_alias_bomb_in_a_module_setting_is_refused_in_one_line_with_bounded_memory(tmp_path):
    path = tmp_path / "bomb.yml"
    path.write_text(f"modules:\n  default:\n    timeout: {alias_bomb()}\n")
    assert path.stat().st_size < 600
    result = run_bounded(["-m", "tpsharness", "exporter", "--listen", "127.0.0.1:0", "--config", str(path)])
    assert result.returncode == 3, result.stderr[-2000:]
    assert result.stderr.splitlines() == [f"tpsharness exporter: --config {path}: line 3: anchors and "
                                          f"aliases (&name, *name) are not allowed in a configuration file"]


def test_an_alias_bomb_under_any_setting_of_either_file_is_refused(tmp_path):
    """Each setting whose error message once showed the value whole."""
    script = textwrap.dedent(f"""
        from tpsharness.errors import ConfigError
        from tpsharness.exporter.config import load_modules, load_web_config
        bomb = {alias_bomb()!r}
        for key in ("timeout", "auth_code", "payload_size", "strict"):
            open("m.yml", "w").write("modules:\\n  m:\\n    " + key + ": " + bomb + "\\n")
            try:
                load_modules("m.yml", 60)
            except ConfigError as error:
                print(len(str(error)), "are not allowed in a configuration file" in str(error))
        for key in ("min_version", "client_auth_type"):
            open("w.yml", "w").write("tls_server_config:\\n  cert_file: a\\n  key_file: b\\n  "
                                     + key + ": " + bomb + "\\n")
            try:
                load_web_config("w.yml")
            except ConfigError as error:
                print(len(str(error)), "are not allowed in a configuration file" in str(error))
    """)
    result = run_bounded(["-c", script], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line.split() for line in result.stdout.splitlines()]
    assert len(lines) == 6 and all(int(length) < 200 and found == "True" for length, found in lines), lines


@pytest.mark.parametrize("text, key", [
    ("modules:\n  m:\n    timeout: [1, 2, 3]\n", "timeout"),
    ("modules:\n  m:\n    auth_code: {a: b}\n", "auth_code:"),
    ("modules:\n  m:\n    payload_size: [1]\n", "payload_size"),
    ("modules:\n  m:\n    strict: [true]\n", "strict"),
])
def test_a_setting_of_the_wrong_shape_is_named_by_its_type(tmp_path, text, key):
    path = tmp_path / "m.yml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"modules\.m\.{key} .*not a (list|mapping)"):
        load_modules(path, 60)


def test_a_long_value_is_quoted_cut_short(tmp_path):
    path = tmp_path / "m.yml"
    path.write_text(f"modules:\n  m:\n    timeout: '{'9' * 500_000}'\n")
    with pytest.raises(ConfigError) as refused:
        load_modules(path, 60)
    assert len(str(refused.value)) < 300 and "(500000 characters)" in str(refused.value)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    pytest.importorskip("cryptography")
    from certificates import make_pki
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.mark.parametrize("key", ["min_version", "client_auth_type"])
def test_a_tls_setting_that_is_a_list_is_one_line_not_a_traceback(tmp_path, pki, key):
    path = tmp_path / "web.yml"
    path.write_text(f"tls_server_config:\n  cert_file: {pki.server_cert}\n  key_file: {pki.server_key}\n"
                    f"  {key}: [TLS13]\n")
    with pytest.raises(ConfigError, match=rf"{key}.* a list"):
        load_web_config(path)


DOWNGRADE = """\
tls_server_config:
  cert_file: server.pem
  key_file: server.key
basic_auth_users:
  prometheus: {hash}
tls_server_config:
basic_auth_users:
"""


def test_a_web_config_whose_later_empty_keys_would_turn_tls_and_auth_off_is_refused(tmp_path):
    path = tmp_path / "web.yml"
    path.write_text(DOWNGRADE.format(hash=bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode()))
    result = subprocess.run([sys.executable, "-m", "tpsharness", "exporter", "--listen", "127.0.0.1:0",
                             "--web-config", str(path)], capture_output=True, text=True, timeout=20)
    assert (result.returncode, result.stdout) == (3, ""), result.stdout
    assert result.stderr.splitlines() == [f"tpsharness exporter: --web-config {path}: line 6: key "
                                          f"'tls_server_config' is given twice (first at line 1): remove one"]


@pytest.mark.parametrize("text, complaint", [
    ("modules:\n  default:\n    timeout: 1\n  field: {}\n  default:\n    timeout: 9\n",
     "line 5: key 'default' is given twice (first at line 2)"),
    ("modules:\n  m: {timeout: 1, timeout: 2}\n", "line 2: key 'timeout' is given twice (first at line 2)"),
    ("modules:\n  m: {}\nmodules:\n  n: {}\n", "line 3: key 'modules' is given twice (first at line 1)"),
    ("modules:\n  1: {}\n  0x1: {}\n", "line 3: key 1 is given twice (first at line 2)"),
])
def test_a_key_given_twice_in_the_config_is_refused_naming_it_and_both_lines(tmp_path, text, complaint):
    path = tmp_path / "m.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as refused:
        load_modules(path, 60)
    assert str(refused.value) == f"--config {path}: {complaint}: remove one"


def test_a_file_with_no_aliases_and_no_repeated_key_still_loads(tmp_path):
    path = tmp_path / "m.yml"
    path.write_text("modules:\n  a: {timeout: 1}\n  b:\n    timeout: 2\n    auth_code: \"0042\"\n")
    modules = load_modules(path, 60)
    assert (modules["a"].timeout, modules["b"].timeout, modules["b"].auth_code) == (1.0, 2.0, "0042")


@pytest.mark.parametrize("option", ["--config", "--web-config"])
def test_a_fifo_as_a_configuration_file_is_refused_at_once(tmp_path, option):
    fifo = tmp_path / "fifo.yml"
    os.mkfifo(fifo)
    result = subprocess.run([sys.executable, "-m", "tpsharness", "exporter", "--listen", "127.0.0.1:0",
                             option, str(fifo)], capture_output=True, text=True, timeout=20)
    assert result.returncode == 3
    assert result.stderr.splitlines() == [f"tpsharness exporter: {option} {fifo}: cannot read it: "
                                          f"not a regular file (a FIFO)"]


def test_a_fifo_as_a_scenario_is_refused_at_once(tmp_path):
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    script = f"from tpsharness.scenario import load\ntry:\n    load({str(fifo)!r})\nexcept Exception as e:\n    print(e)"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=20)
    assert result.stdout.strip() == f"{fifo}: cannot read: not a regular file (a FIFO)"


def test_the_bounded_read_refuses_what_is_not_a_regular_file_and_reads_no_more_than_asked(tmp_path):
    with pytest.raises(OSError, match=r"not a regular file \(a directory\)"):
        read_bounded(tmp_path, 10)
    with pytest.raises(OSError, match=r"not a regular file \(a character device\)"):
        read_bounded("/dev/zero", 10)
    with pytest.raises(ScenarioError, match="cannot read: not a regular file"):
        load_scenario(tmp_path)
    (tmp_path / "big").write_bytes(b"x" * 100_000)
    assert read_bounded(tmp_path / "big", 70_000) == b"x" * 70_001
    assert read_bounded(tmp_path / "big", 200_000) == b"x" * 100_000


VALID = "$2b$04$QnGnD8DxqLEgQO.tdVTJYe1ztOr2Lopy4b/te/o5eif5HpI3p3OY."      # bcrypt of s3cret, cost 4 (fixed: the parameters name it)


@pytest.mark.parametrize("hashed, problem", [
    ("$2b$99$" + VALID[7:], "its cost 99 is not 04-31"),
    ("$2b$03$" + VALID[7:], "its cost 03 is not 04-31"),
    ("$2b$10$" + "é" * 53, "after the cost it needs 53 characters of ./A-Za-z0-9"),
    ("$2b$10$" + "a" * 52, "after the cost it needs 53 characters of ./A-Za-z0-9"),
    ("$2x$10$" + VALID[7:], "it does not begin with $2b$, $2y$ or $2a$"),
    ("plaintext", "it does not begin with $2b$, $2y$ or $2a$"),
    ("[1, 2]", "it is a list"),
])
def test_a_hash_nobody_could_match_is_refused_at_start_naming_the_user(tmp_path, hashed, problem):
    path = tmp_path / "web.yml"
    path.write_text(f"basic_auth_users:\n  alice: {hashed if hashed.startswith('[') else repr(hashed)}\n")
    with pytest.raises(ConfigError) as refused:
        load_web_config(path)
    message = str(refused.value)
    assert message.startswith(f"--web-config {path}: basic_auth_users.alice is not a bcrypt hash ({problem}): "
                              f"make one with python3 -c ") and "\n" not in message
    assert hashed not in message            # a hash in a log is a password to crack


@pytest.mark.parametrize("prefix", ["$2a$", "$2b$", "$2y$"])
def test_every_bcrypt_variant_of_cost_4_to_31_is_taken(tmp_path, prefix):
    path = tmp_path / "web.yml"
    path.write_text(f"basic_auth_users:\n  a: '{prefix}04${VALID[7:]}'\n  b: '{prefix}31${VALID[7:]}'\n")
    assert load_web_config(path).users == {"a": f"{prefix}04${VALID[7:]}".encode(),
                                           "b": f"{prefix}31${VALID[7:]}".encode()}


def test_the_guide_s_recipes_make_a_hash_and_a_certificate_the_exporter_takes(tmp_path):
    """docs/exporter.md's python3 one-liner is the one the error message gives, its
    example hash is s3cret's, and its openssl recipe makes a server.pem and ca.pem
    the exporter serves TLS with."""
    import re
    import shutil
    from pathlib import Path

    from tpsharness.exporter.config import HASH_RECIPE

    guide = (Path(__file__).resolve().parent.parent / "docs" / "exporter.md").read_text()
    hashing = re.search(r"\$ (python3 -c .*)\nPassword:\n(\$2b\$\S+)\n", guide)
    assert hashing and hashing.group(1) == HASH_RECIPE
    assert bcrypt.checkpw(b"s3cret", hashing.group(2).encode())
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command here")
    recipe = next(block for block in re.findall(r"```sh\n(.*?)```", guide, re.S) if "openssl req" in block)
    made = subprocess.run(["sh", "-e", "-c", recipe], cwd=tmp_path, capture_output=True, text=True, timeout=20)
    assert made.returncode == 0, made.stderr
    (tmp_path / "web.yml").write_text(f"tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n"
                                      f"basic_auth_users:\n  prometheus: {hashing.group(2)}\n")
    config = load_web_config(tmp_path / "web.yml")
    assert config.tls is not None and list(config.users) == ["prometheus"]
    assert (tmp_path / "ca.pem").read_bytes() == (tmp_path / "server.pem").read_bytes()


@pytest.mark.parametrize("value, complaint", [
    ("1" * 5000, "a value it cannot read: Exceeds the limit (4300 digits) for integer string conversion"),
    ("2020-02-30", "a value it cannot read: day is out of range for month"),
])
def test_a_value_yaml_cannot_construct_is_one_line_not_a_traceback(tmp_path, value, complaint):
    path = tmp_path / "m.yml"
    path.write_text(f"modules:\n  m:\n    timeout: {value}\n")
    with pytest.raises(ConfigError) as refused:
        load_modules(path, 60)
    assert str(refused.value) == f"--config {path}: {complaint}"
