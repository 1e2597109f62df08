"""The package imports lazily: the kernel alone loads no protocol code, and the
function ``check`` no longer shadows the module that defines it."""

import subprocess
import sys
import types


def _python(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)


def test_importing_the_kernel_does_not_load_h11():
    result = _python("import tpsharness.kernel, sys; assert 'h11' not in sys.modules, 'h11 loaded'; "
                     "assert 'tpsharness.checker' not in sys.modules, 'checker loaded'")
    assert result.returncode == 0, result.stderr


def test_only_strict_http_loads_h11_so_the_hot_paths_do_not_pay_for_it():
    """h11 is the strict reference (docs/protocol.md section 5): a check, a load worker
    and the fake import it only when a StrictReader is made."""
    result = _python("import sys, tpsharness.checker, tpsharness.load.local, fake_tps.server\n"
                     "assert 'h11' not in sys.modules, 'h11 loaded by an import'\n"
                     "from tpsharness.protocol import StrictReader, register_request\n"
                     "reader = StrictReader('server')\n"
                     "reader.feed(register_request('cam'))\n"
                     "assert reader.next().serial == 'cam' and 'h11' in sys.modules")
    assert result.returncode == 0, result.stderr


def test_a_load_worker_does_not_load_openssl_for_a_file_name():
    """hashlib (through secrets) maps OpenSSL's libcrypto: 4 MB of a worker's 40 MB
    budget for 10,000 devices (bench_load's memory row), for a temporary file's name."""
    result = _python("import sys, tpsharness.load.local, tpsharness.load.result, tpsharness.files\n"
                     "assert 'hashlib' not in sys.modules, 'hashlib loaded'")
    assert result.returncode == 0, result.stderr


def test_the_module_and_the_function_have_their_own_names():
    import tpsharness
    import tpsharness.checker as module
    assert isinstance(module, types.ModuleType) and module.__name__ == "tpsharness.checker"
    assert tpsharness.check is module.check and not isinstance(tpsharness.check, types.ModuleType)
    assert tpsharness.CheckResult is module.CheckResult
    assert set(tpsharness.__all__) <= set(dir(tpsharness))


def test_an_unknown_name_is_an_attribute_error():
    import pytest

    import tpsharness
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        tpsharness.nothing


def test_every_name_in_all_resolves_to_what_its_module_defines():
    import importlib

    import tpsharness
    for name in tpsharness.__all__:
        if name == "__version__":
            continue
        value = getattr(tpsharness, name)
        home = importlib.import_module(tpsharness._HOMES[name], "tpsharness")
        if name == "load" and value is home:    # the package, once imported, is callable itself
            assert callable(value)
            continue
        assert value is getattr(home, name), name
