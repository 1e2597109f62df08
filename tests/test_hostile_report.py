"""Hostile and damaged result files (issue 16, item 9): ``tpsharness report`` checks a
file's shape before it uses it, bounds what a histogram inflates to, refuses NaN and
Infinity, and answers with one line and exit status 3, never a traceback."""

import base64
import json
import os
import struct
import subprocess
import sys
import zlib

import pytest

pytest.importorskip("hdrh")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPORT = ("import resource, sys\n"
          "resource.setrlimit(resource.RLIMIT_AS, (1536 << 20, resource.RLIM_INFINITY))\n"
          "from tpsharness.cli import main\n"
          "code = main(['report', *sys.argv[1:]])\n"
          "peak = [line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM:')]\n"
          "print('maxrss-kb', peak[0], file=sys.stderr)\n"
          "sys.exit(code)\n")


def report(*args):
    """``tpsharness report ARGS`` in a process with 1.5 GB of address space at most:
    (exit code, stdout, stderr without its last line, peak RSS in MB)."""
    done = subprocess.run([sys.executable, "-c", REPORT, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env=dict(os.environ, PYTHONPATH=ROOT))
    lines = done.stderr.splitlines()
    rss = int(lines.pop().split()[1]) / 1024 if lines and lines[-1].startswith("maxrss-kb") else None
    return done.returncode, done.stdout, "\n".join(lines), rss


def valid():
    """A small result document, as --json writes it."""
    from tpsharness.load.histograms import encode, new_histogram
    histogram = new_histogram()
    histogram.record_value(1500, 10)
    return {"format": "tpsharness-load/1", "target": "127.0.0.1:6604",
            "config": {"devices": 2, "clients": 1, "duration": 1.0, "rate": None, "window": 1,
                       "payload_size": 64, "ramp": 0.0, "heartbeat": False, "reply_every": 0,
                       "timeout": 5.0, "drain": 5.0, "auth_code": "0000", "prefix": None, "extra": {},
                       "address": ["127.0.0.1", 6604]},
            "counters": {"sent": 10, "acked": 10, "delivered": 10, "lost": 0},
            "histograms": {"relay": encode(histogram)}, "errors": {},
            "series": [{"t": 1, "span": 1.0, "sent": 10, "delivered": 10, "errors": 0, "cpu": 0.1,
                        "relay": encode(histogram)}],
            "duration": 1.0, "aborted": None, "interrupted": False,
            "workers": [{"name": "local", "cpu_seconds": 0.1, "wall_seconds": 1.0, "devices": 2, "clients": 1,
                         "delivered": 10}], "thresholds": []}


def bomb(megabytes):
    """A histogram whose zlib part inflates to ``megabytes`` MB of zeros: one megabyte
    compressed and flushed to a block boundary, that block repeated (about a kilobyte
    per megabyte; its checksum is wrong, which a reader learns only at the end)."""
    deflater = zlib.compressobj(9)
    chunk = b"\0" * (1 << 20)
    first = deflater.compress(chunk) + deflater.flush(zlib.Z_FULL_FLUSH)
    block = deflater.compress(chunk) + deflater.flush(zlib.Z_FULL_FLUSH)
    packed = first + block * (megabytes - 2) + deflater.compress(chunk) + deflater.flush()
    return base64.b64encode(struct.pack(">II", 0x1C849314, len(packed)) + packed).decode()


def nested(depth):
    return "[" * depth + "]" * depth


def with_(path, value, raw=False):
    """A valid document with ``path`` (keys, separated by '.') replaced by ``value``."""
    document = valid()
    keys = path.split(".")
    target = document
    for key in keys[:-1]:
        target = target[int(key)] if isinstance(target, list) else target[key]
    target[keys[-1]] = value
    return document


CASES = {
    "counters as a list": (with_("counters", [1, 2, 3]), "counters: a mapping was expected, not a list"),
    "errors as a list": (with_("errors", ["refused"]), "errors: a mapping was expected, not a list"),
    "workers as strings": (with_("workers", ["local", "remote"]), "workers[0]: a mapping was expected"),
    "base64 that is not a histogram": (with_("histograms.relay", base64.b64encode(b"hello world").decode()),
                                       "histograms.relay: a histogram without HdrHistogram's header"),
    "bad zlib": (with_("histograms.relay", base64.b64encode(struct.pack(">II", 0x1C849314, 6)
                                                            + b"garbage").decode()),
                 "histograms.relay: a histogram"),
    "a 4,000-digit integer": (with_("counters.sent", int("9" * 4000)), "counters.sent: a count outside"),
    "a negative count": (with_("counters.sent", -5), "counters.sent: a count outside"),
    "a series histogram that is text": (with_("series.0.relay", "not base64 at all!"),
                                        "series[0].relay: a histogram that is not base64"),
    "a duration as text": (with_("duration", "long"), "duration: a number was expected"),
    "a threshold without its fields": (with_("thresholds", [{}]), "thresholds[0].expression"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_damaged_result_file_is_refused_with_one_line_and_exit_3(tmp_path, name):
    document, message = CASES[name]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(document))
    code, out, err, _ = report(str(path), "-o", str(tmp_path / "r.html"))
    assert code == 3, out + err
    assert err.count("\n") == 0 and err.startswith(f"tpsharness report: {path}: "), err
    assert message in err
    assert "Traceback" not in out + err and "internal error" not in out + err
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize("text, message", [
    (nested(1000), "nested too deeply"),
    (json.dumps(valid()).replace('"duration": 1.0', '"duration": NaN'), "NaN is not a number a result can hold"),
    (json.dumps(valid()).replace('"duration": 1.0', '"duration": Infinity'), "Infinity is not a number"),
    (json.dumps(valid()).replace('"cpu": 0.1', '"cpu": -Infinity'), "-Infinity is not a number"),
], ids=["1000-deep", "nan", "infinity", "minus-infinity"])
def test_json_a_result_cannot_hold_is_refused_with_one_line(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    code, out, err, _ = report(str(path), "-o", str(tmp_path / "r.html"))
    assert code == 3 and message in err and err.count("\n") == 0, out + err
    assert "Traceback" not in out + err and "inf delivered" not in out


@pytest.mark.parametrize("megabytes, file_size, message", [
    (1400, (1_400_000, 4_000_000), "characters, over 1,048,576"),     # the 1.4 MB file of the issue
    (700, (500_000, 1_048_576), "inflates past"),                     # under the length bound
])
def test_a_zlib_bomb_histogram_is_refused_without_inflating_it(tmp_path, megabytes, file_size, message):
    path = tmp_path / "bomb.json"
    path.write_text(json.dumps(with_("histograms.relay", bomb(megabytes))))
    assert file_size[0] < path.stat().st_size < file_size[1]
    code, out, err, rss = report(str(path), "-o", str(tmp_path / "r.html"))
    assert code == 3 and message in err and err.count("\n") == 0, out + err
    assert rss is not None and rss < 300, f"{rss} MB"


@pytest.mark.slow
def test_a_valid_file_still_makes_a_report(tmp_path):
    """The control: the checks refuse nothing a real result holds (an older format too)."""
    pytest.importorskip("matplotlib")
    path = tmp_path / "good.json"
    path.write_text(json.dumps(valid()))
    code, out, err, _ = report(str(path), "-o", str(tmp_path / "r.html"))
    assert code == 0, out + err
    assert "1 run (1 passed, 0 failed)" in out


# -- the page's own file, and result files with hostile names ---------------------------------------

def write_valid(path):
    path.write_text(json.dumps(valid()))
    return str(path)


def unsaved(figure):
    """A chart not drawn into a PNG (faster), its figure closed as _png closes it."""
    import matplotlib.pyplot
    matplotlib.pyplot.close(figure)
    return ""


def in_process(*args):
    """``tpsharness report ARGS`` in this process (matplotlib already imported): (exit code, stdout, stderr)."""
    import contextlib
    import io
    from tpsharness.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["report", *args])
    return code, out.getvalue(), err.getvalue()


def test_the_page_is_never_written_over_one_of_its_result_files(tmp_path):
    result = write_valid(tmp_path / "keep.json")
    before = (tmp_path / "keep.json").read_bytes()
    (tmp_path / "link.html").symlink_to("keep.json")
    for output, force in ((result, []), (result, ["--force"]), (str(tmp_path / "link.html"), ["--force"])):
        code, out, err = in_process(result, "-o", output, *force)
        assert code == 3 and err.count("\n") == 1 and "is the result file" in err, out + err
    assert (tmp_path / "keep.json").read_bytes() == before


def test_a_page_that_exists_is_kept_unless_force(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.setattr("tpsharness.load.report._png", unsaved)      # the charts do not matter here
    result = write_valid(tmp_path / "r1.json")
    page = tmp_path / "r.html"
    page.write_text("an older page")
    code, out, err = in_process(result, "-o", str(page))
    assert code == 3 and err == f"tpsharness report: {page} exists; give --force to overwrite it\n", out + err
    assert page.read_text() == "an older page"
    code, out, err = in_process(result, "-o", str(page), "--force")
    assert code == 0, out + err
    assert page.read_text().startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html", "r1.json"]        # no temporary left
    umask = os.umask(0)
    os.umask(umask)
    assert page.stat().st_mode & 0o777 == 0o666 & ~umask                     # as open() would make it


def test_a_symlink_at_the_output_is_never_written_through(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.setattr("tpsharness.load.report._png", unsaved)
    result = write_valid(tmp_path / "r1.json")
    precious = tmp_path / "precious.txt"
    precious.write_text("precious")
    link = tmp_path / "link.html"
    link.symlink_to("precious.txt")
    code, out, err = in_process(result, "-o", str(link))
    assert code == 3 and "give --force to overwrite it" in err, out + err
    code, out, err = in_process(result, "-o", str(link), "--force")
    assert code == 0, out + err
    assert precious.read_text() == "precious"
    assert not link.is_symlink() and link.read_text().startswith("<!DOCTYPE html>")


def test_a_result_file_name_with_dollars_makes_a_report(tmp_path):
    """With two runs each file name is a legend label, which matplotlib parsed as
    mathtext: 'r$\\frac{$.json' was a ValueError, exit 3 and a traceback."""
    pytest.importorskip("matplotlib")
    first, second = write_valid(tmp_path / "r1.json"), write_valid(tmp_path / "r$\\frac{$.json")
    code, out, err = in_process(first, second, "-o", str(tmp_path / "m.html"))
    assert code == 0 and err == "", out + err
    assert f"<li>{second}</li>" in (tmp_path / "m.html").read_text()


@pytest.mark.parametrize("name", ["$x$.json", "_hidden.json"])
def test_a_result_file_name_is_shown_as_it_is_in_the_legend(tmp_path, monkeypatch, name):
    """'$x$' was drawn as an italic x, and a label starting with '_' left out."""
    pytest.importorskip("matplotlib")
    from tpsharness.load import report
    from tpsharness.load.result import LoadResult
    drawn = []
    monkeypatch.setattr(report, "_png", drawn.append)
    run = LoadResult.from_dict(valid())
    report.distribution_chart([("r1.json", run), (name, run)])
    texts = drawn[0].axes[0].get_legend().get_texts()
    unsaved(drawn[0])
    assert [text.get_text().strip() for text in texts] == ["r1.json: relay", f"{name}: relay"]
    assert not any(text.get_parse_math() for text in texts)


def test_a_page_that_cannot_be_written_is_named_by_its_own_name(tmp_path, monkeypatch):
    """Not by the temporary file it is written to first."""
    pytest.importorskip("matplotlib")
    from tpsharness.load import report

    def refused(path, text, *, force):
        raise PermissionError(13, "Permission denied", str(path.parent / ".tpsharness-0123.part"))
    monkeypatch.setattr(report, "_png", unsaved)
    monkeypatch.setattr(report, "write_atomically", refused)
    page = tmp_path / "r.html"
    code, out, err = in_process(write_valid(tmp_path / "r1.json"), "-o", str(page))
    assert code == 3 and err == f"tpsharness report: {page}: Permission denied\n", out + err
