"""The benchmarks still run: small workloads, checked for their figures, not timed."""

import os
import re
import subprocess
import sys

import pytest

BENCH = os.path.join(os.path.dirname(__file__), "bench")


def run_bench(*args):
    done = subprocess.run([sys.executable, *args], cwd=BENCH, capture_output=True, text=True,
                          timeout=25)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_kernel_benchmark_prints_each_ratio():
    out = run_bench("bench_kernel.py", "--quick")
    assert re.search(r"^switching .* ratio \d+\.\d\dx", out, re.M), out
    assert re.search(r"^echo .* ratio \d+\.\d\dx", out, re.M), out
    assert re.search(r"^scale .* all 10,000 woke \d+\.\d\d s", out, re.M), out


def test_the_relay_benchmark_prints_its_ratio_and_memory():
    out = run_bench("bench_relay.py", "--pairs", "4", "--relays", "25", "--devices", "40")
    assert re.search(r"^relay .* 100 relays: .* ratio \d+\.\d\dx", out, re.M), out
    assert re.search(r"^memory +ours +40 registered devices", out, re.M), out
    assert re.search(r"^memory +asyncio +40 registered devices", out, re.M), out


def test_the_relay_benchmark_runs_with_varied_payload_sizes():
    out = run_bench("bench_relay.py", "--pairs", "4", "--relays", "25", "--varied-sizes",
                    "--skip-memory")
    assert re.search(r"^relay .* 100 relays, payloads of 16-1015 B: .* ratio \d+\.\d\dx", out, re.M), out


def test_the_soak_benchmark_prints_relays_memory_fds_and_tracebacks():
    out = run_bench("bench_soak.py", "--seconds", "2", "--pairs", "10", "--attackers", "10")
    assert re.search(r"^relays +([\d,]+) of \1 payloads arrived .*, 0 errors$", out, re.M), out
    assert re.search(r"^hostile +[\d,]+ connections \(random [\d,]+, mutated [\d,]+, slow [\d,]+\)", out, re.M), out
    assert re.search(r"^memory +fake RSS \d+\.\d MB baseline, \d+\.\d MB peak, \d+\.\d MB after$", out, re.M), out
    assert re.search(r"^fds +fake \d+ baseline, \d+ peak, \d+ after$", out, re.M), out
    assert re.search(r"^tracebacks 0$", out, re.M), out
    assert out.rstrip().endswith("OK"), out


def test_the_record_benchmark_prints_the_proxy_latency_throughput_and_import_rate():
    out = run_bench("bench_record.py", "--quick")
    assert re.search(r"^latency, 50 relays each: direct p50 \d+ us, through the proxy p50 \d+ us: "
                     r"added -?\d+ us", out, re.M), out
    assert re.search(r"^throughput: \d+ relays through the proxy .* relays/s on one core", out, re.M), out
    assert re.search(r"^import: 500 relays of 64 B, \d+ packets, .* MB/s .* dpkt decoding every packet", out, re.M), out
    assert re.search(r"^replay: 50 relays among 6 actors, \d+ steps \(\d+ moves\): exact \d+ ms of CPU, "
                     r"without exact \d+ ms: ratio \d+\.\d\dx", out, re.M), out


@pytest.mark.slow
def test_the_hostile_soak_prints_each_load_scenario_bounded():
    out = run_bench("bench_hostile_soak.py", "--part", "load", "--seconds", "1", "--devices", "8",
                    "--clients", "2")
    for scenario in ("unique 12 kB reasons", "forged payloads", "reset storm"):
        assert re.search(rf"^soak load  {scenario} .* peak RSS +[\d.]+ MB, .*: bounded$", out, re.M), out
    assert out.rstrip().endswith("OK"), out


@pytest.mark.slow
def test_the_hostile_soak_of_the_exporter_prints_its_bounds():
    out = run_bench("bench_hostile_soak.py", "--part", "exporter", "--idle", "60", "--burst", "40",
                    "--request-timeout", "1")
    assert re.search(r"^idle +60 connections held \(30 silent, 30 half-sent\): exporter threads (\d+) -> \1,",
                     out, re.M), out
    assert re.search(r"^burst +40 scrapes at once: .*\d+ 200.* in [\d.]+ s", out, re.M), out
    assert "unanswered" not in out, out
    assert re.search(r"^held +60 of 60 closed by the exporter within [\d.]+ s", out, re.M), out
    assert re.search(r"^memory +exporter RSS [\d.]+ MB baseline, [\d.]+ MB peak \(VmHWM\), [\d.]+ MB after$",
                     out, re.M), out
    assert re.search(r"^files +exporter stdout [\d,]+ bytes, stderr 0 bytes; exit status 0$", out, re.M), out
    assert out.rstrip().endswith("OK"), out
