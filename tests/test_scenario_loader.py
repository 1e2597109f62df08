"""The scenario loader against hostile files: every problem is a ScenarioError that
names the file (and the step and field where there is one), found at load, before
anything is allocated, waited for or bound."""

import json

import pytest

from tpsharness.errors import ScenarioError
from tpsharness.scenario import (FAKE_OPTIONS, MAX_FILE, MAX_SECONDS, MAX_TIMES, json_schema, load,
                                 validate)


def scenario_with(step, actors=None, **top):
    return {"actors": actors if actors is not None else {"cam": {"kind": "device"}},
            "steps": [{"do": "connect", "actor": "cam"}, step], **top}


def write(tmp_path, content):
    path = tmp_path / "test_case.tps.json"
    path.write_bytes(content if isinstance(content, bytes) else
                     (content if isinstance(content, str) else json.dumps(content)).encode())
    return path


def load_error(tmp_path, content):
    path = write(tmp_path, content)
    with pytest.raises(ScenarioError) as caught:
        load(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: "), message
    assert "\n" not in message and len(message) - len(str(path)) < 320, message    # the path is pytest's
    return message


# -- what the JSON parser raises -----------------------------------------------------------

def test_100000_deep_nesting_is_a_scenario_error_not_a_recursion_error(tmp_path):
    message = load_error(tmp_path, "[" * 100_000 + "]" * 100_000)
    assert "nested too deeply" in message


def test_a_4301_digit_number_is_a_scenario_error_not_a_value_error(tmp_path):
    text = '{"actors": {}, "steps": [{"do": "wait", "seconds": %s}]}' % ("9" * 4301)
    assert "not JSON" in load_error(tmp_path, text)


def test_a_file_that_is_not_utf8_is_a_scenario_error(tmp_path):
    assert "not UTF-8" in load_error(tmp_path, b'{"description": "\xff"}')


def test_a_file_over_the_size_limit_is_refused_before_parsing(tmp_path):
    padding = "x" * MAX_FILE
    assert f"more than {MAX_FILE} bytes" in load_error(tmp_path, {"description": padding})


# -- bounds of the numeric step fields -----------------------------------------------------------

SEND = {"do": "send", "actor": "cam", "to": "x"}


@pytest.mark.parametrize("step, field, says", [
    ({**SEND, "times": 10_000_000}, "times", f"must be at most {MAX_TIMES}, not 10000000"),
    ({**SEND, "times": 0}, "times", "must be at least 1, not 0"),
    ({"do": "register", "actor": "cam", "times": -3}, "times", "must be at least 1"),
    ({**SEND, "split_at": -1}, "split_at", "must be at least 0"),
    ({**SEND, "split_at": 10, "pause": 1e308}, "pause", f"must be at most {MAX_SECONDS}, not 1e+308"),
    ({**SEND, "split_at": 10, "pause": -0.5}, "pause", "must be at least 0"),
    ({"do": "expect_reply", "actor": "cam", "within": 61}, "within", f"must be at most {MAX_SECONDS}"),
    ({"do": "expect_close", "actor": "cam", "within": -1}, "within", "must be at least 0"),
    ({"do": "expect_nothing", "actor": "cam", "for": 3600}, "for", f"must be at most {MAX_SECONDS}"),
])
def test_a_numeric_field_out_of_bounds_names_the_file_step_and_field(tmp_path, step, field, says):
    message = load_error(tmp_path, scenario_with(step))
    assert f": step 2 ({step['do']}): '{field}' {says}" in message


@pytest.mark.parametrize("literal", ["Infinity", "-Infinity", "NaN", "1e999"])
@pytest.mark.parametrize("do, field", [("wait", "seconds"), ("expect_reply", "within"),
                                       ("expect_nothing", "for")])
def test_infinite_or_nan_seconds_are_refused_at_load(tmp_path, literal, do, field):
    step = {"do": do, field: 1} if do == "wait" else {"do": do, "actor": "cam", field: 1}
    text = json.dumps(scenario_with(step)).replace(f'"{field}": 1', f'"{field}": {literal}')
    message = load_error(tmp_path, text)
    assert f": step 2 ({do}): '{field}' must be a finite number" in message


def test_times_a_large_payload_is_bounded_by_the_bytes_it_would_write(tmp_path):
    step = {**SEND, "payload": "p" * 100_000, "times": 1000}
    message = load_error(tmp_path, scenario_with(step))
    assert ": step 2 (send): 'times' x the payload is more than" in message


def test_the_bounds_themselves_are_accepted():
    validate(scenario_with({**SEND, "times": MAX_TIMES, "split_at": 0, "pause": MAX_SECONDS}))
    validate(scenario_with({"do": "expect_nothing", "actor": "cam", "for": 0}))


# -- what the fake object may set --------------------------------------------------------------

WAIT = {"do": "wait", "seconds": 0}


@pytest.mark.parametrize("fake, says", [
    ({"host": "127.0.0.2"}, "unknown option 'host'"),
    ({"port": 16123}, "unknown option 'port'"),
    ({"max_output": 1}, "unknown option 'max_output'"),
    ({"faults": ["no-such-fault"]}, "unknown fault 'no-such-fault'"),
    ({"faults": "silent"}, "'faults' must be a list"),
    ({"faults": [["silent"]]}, "a fault is named by a string, not ['silent']"),
    ({"faults": [{"a": 1}]}, "a fault is named by a string"),
    ({"idle_timeout": -1}, "'idle_timeout' must be at least"),
    ({"reply_delay": 1e308}, f"'reply_delay' must be at most {MAX_SECONDS}"),
    ({"max_body": -5}, "'max_body' must be at least 0"),
    ({"keepalive_interval": "120"}, "'keepalive_interval' must be a number"),
    ({"nul_replies": 1}, "'nul_replies' must be true or false"),
])
def test_the_fake_object_allows_behaviour_options_only(tmp_path, fake, says):
    message = load_error(tmp_path, scenario_with(WAIT, fake=fake))
    assert f": 'fake': {says}" in message


def test_every_behaviour_option_is_accepted():
    fake = {"keepalive_interval": 30, "idle_timeout": 2.5, "bad_request_idle_timeout": 0.3,
            "request_timeout": 1, "reply_delay": 0.01, "max_body": 1024, "nul_replies": True,
            "strict_http": False, "check_auth": "1234", "faults": ["silent", "drop-relays"],
            "profile": "field"}
    assert set(fake) == set(FAKE_OPTIONS)
    validate(scenario_with(WAIT, fake=fake))


# -- malformed shapes that used to raise something else ------------------------------------------

@pytest.mark.parametrize("data, says", [
    (scenario_with({"do": {}}), "step 2: unknown step {}"),
    ({"actors": {"x": {"kind": ["device"]}}, "steps": [WAIT]}, "'kind' must be one of"),
    (scenario_with({**SEND, "payload": "\ud800"}), "'payload' has a character utf-8 cannot encode"),
    (scenario_with({"do": "send_raw", "actor": "cam", "data": "\u20ac"}),
     "'data' has a character latin-1 cannot encode"),
    (scenario_with({"do": "expect_reply", "actor": "cam", "headers": {"X": 1}}), "header 'X' must be a string"),
])
def test_shapes_that_raised_other_exceptions_are_scenario_errors(tmp_path, data, says):
    assert says in load_error(tmp_path, data)


def test_errors_quote_a_short_prefix_of_what_the_file_says(tmp_path):
    message = load_error(tmp_path, scenario_with({"do": "x" * 1_000_000}))
    assert "unknown step 'xxxx" in message and "..." in message


# -- the schema says the same --------------------------------------------------------------------

def test_the_schema_states_the_bounds_and_the_fake_options():
    schema = json_schema()
    steps = {s["properties"]["do"]["const"]: s["properties"] for s in schema["properties"]["steps"]["items"]["oneOf"]}
    assert steps["send"]["times"] == {"type": "integer", "minimum": 1, "maximum": MAX_TIMES}
    assert steps["wait"]["seconds"] == {"type": "number", "minimum": 0, "maximum": MAX_SECONDS}
    for do, field in [("expect_reply", "within"), ("expect_nothing", "for"), ("register", "pause")]:
        assert steps[do][field]["maximum"] == MAX_SECONDS
    fake = schema["properties"]["fake"]
    assert fake["additionalProperties"] is False and set(fake["properties"]) == set(FAKE_OPTIONS)
    assert "host" not in fake["properties"] and "port" not in fake["properties"]


def test_a_placeholder_naming_a_raw_connection_is_an_error_not_an_empty_uuid():
    """A raw connection has no uuid (None, or "" once typed as str): ${raw} must not
    silently become an empty string in what the scenario sends."""
    from tpsharness.scenario import Scenario, play
    data = validate({"actors": {"r": {"kind": "raw"}},
                     "steps": [{"do": "send_raw", "actor": "r", "data": "to ${r}"}]})
    with pytest.raises(ScenarioError, match=r"\$\{r\} names no device or client"):
        play(Scenario("<placeholder>", data), ("127.0.0.1", 9), timeout=1)
