"""What the HTML report shows first and how it draws the series: the verdict and the
integrity counts before anything else, each second's rate over the span it covers,
and no empty chart for a run that has no data."""

import pytest

pytest.importorskip("hdrh")
pytest.importorskip("matplotlib")

from tpsharness.load import report  # noqa: E402
from tpsharness.load.result import LoadResult  # noqa: E402

from test_hostile_report import valid  # noqa: E402


def result(**changes):
    """A result as a file holds it, with ``changes`` to its top-level fields."""
    document = valid()
    document.update(changes)
    return LoadResult.from_dict(document)


def misrouted():
    """A run where most messages reached the wrong device, and no connection error."""
    run = result(counters={"sent": 1000, "acked": 275, "delivered": 275, "misrouted": 725, "lost": 0,
                           "devices": 2},
                 thresholds=[{"expression": "misrouted==0", "held": False, "observed": "measured 725",
                              "default": True}])
    assert not run.passed and run.error_count == 0
    return run


@pytest.fixture(autouse=True)
def closed():
    """Every figure a test kept is closed after it."""
    yield
    import matplotlib.pyplot
    matplotlib.pyplot.close("all")


def figures(monkeypatch):
    """The matplotlib figures the report draws, kept instead of saved as PNG (faster)."""
    drawn = []

    def keep(figure):
        drawn.append(figure)
        return ""
    monkeypatch.setattr(report, "_png", keep)
    return drawn


def test_the_verdict_and_the_integrity_counts_come_before_anything_else(monkeypatch):
    figures(monkeypatch)
    page = report.render([("m.json", misrouted())])
    body = page[page.index("<body>"):]
    first = body.index('class="verdict"')
    assert first < body.index("<ul>") and first < body.index("<h2>") and first < body.index("<pre>")
    assert "FAILED: 725 of 1,000 messages (72.5%) reached the wrong device" in body[first:body.index("<ul>")]
    counts = body[body.index('<table class="integrity">'):body.index("<ul>")]
    assert '<td>misrouted</td><td class="n">725</td><td class="n">72.5%</td><td>messages sent</td>' in counts
    assert '<td>delivered</td><td class="n">275</td>' in counts
    assert '<td>errors</td><td class="n">0</td>' in counts
    assert '<td>unregistered</td><td class="n">0</td><td class="n">0.0%</td><td>devices</td>' in counts
    assert body.count('class="verdict"') == 1               # one run: its verdict is not repeated


def test_several_runs_each_have_their_verdict_at_the_top(monkeypatch):
    figures(monkeypatch)
    page = report.render([("a.json", misrouted()), ("b.json", result())])
    top = page[page.index("<body>"):page.index("<ul>")]
    assert "a.json: <b>FAILED: 725 of 1,000" in top and "b.json: <b>PASSED</b>" in top
    assert page.count('<table class="integrity">') == 2       # in each run's section


def test_each_second_is_drawn_over_the_span_it_covers(monkeypatch):
    """The last second of a run is as long as its span (the drain after the duration):
    drawn from 2.0 to 2.128 s, not as a whole second at x=3."""
    drawn = figures(monkeypatch)
    series = [{"t": 1, "span": 1.0, "sent": 100, "delivered": 100, "errors": 0},
              {"t": 2, "span": 1.0, "sent": 80, "delivered": 80, "errors": 0},
              {"t": 3, "span": 0.128, "sent": 0, "delivered": 16, "errors": 0}]
    run = result(series=[dict(entry, cpu=0.1, relay=valid()["series"][0]["relay"]) for entry in series],
                 config=dict(valid()["config"], duration=2.0))
    report.throughput_chart(run)
    axes = drawn[0].axes[0]
    steps = {patch.get_label(): patch.get_data() for patch in axes.patches if hasattr(patch, "get_data")}
    values, edges = steps["delivered/s"].values, steps["delivered/s"].edges
    assert list(edges) == pytest.approx([0.0, 1.0, 2.0, 2.128])
    assert list(values) == pytest.approx([100.0, 80.0, 16 / 0.128])
    assert axes.get_xlim() == pytest.approx((0.0, 2.128))
    assert "draining: sending stopped" in [text.get_text() for text in axes.get_legend().get_texts()]


def test_errors_per_second_are_drawn_only_when_there_were_some(monkeypatch):
    """A flat 'errors/s' at 0 beside a run whose messages reached the wrong device
    reads as 'nothing went wrong'."""
    drawn = figures(monkeypatch)
    report.throughput_chart(misrouted())
    with_errors = valid()
    with_errors["series"][0]["errors"] = 3
    report.throughput_chart(LoadResult.from_dict(with_errors))
    labels = [[text.get_text() for text in figure.axes[0].get_legend().get_texts()] for figure in drawn]
    assert labels[0] == ["sent/s", "delivered/s"]
    assert labels[1] == ["sent/s", "delivered/s", "connection and status errors/s"]


def test_a_run_that_could_not_be_carried_out_says_there_is_no_data():
    run = result(counters={"sent": 0, "delivered": 0}, histograms={}, series=[], duration=0.0,
                 aborted="no device could register: device cam-0: connect: refused")
    page = report.render([("a.json", run)])
    assert "data:image/png" not in page
    assert ("No data: the run could not be carried out (no device could register: device cam-0: "
            "connect: refused).") in page
    assert "No data: no latency was measured." in page
    assert page.index("FAILED: the run could not be carried out") < page.index("<h2>")
