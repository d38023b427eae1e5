"""Event lines from another system: every bad line is its own error, never the batch's end."""

from __future__ import annotations

import io
import json
from pathlib import Path

from conftest import bind
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from smtp_testserver import SMTPTestServer

from sysmail_ops import flows as workflows
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.flows.events import MAX_EVENT_LINE_BYTES, MAX_EVENTS_BYTES, parse_lines
from sysmail_ops.inputs import MAX_JSON_DEPTH
from sysmail_ops.templates import catalog as templates

PROPS = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

GOOD = json.dumps(
    {
        "id": "E-1",
        "flow_type": "approval_flow",
        "flow_name": "travel",
        "event": "approved",
        "object_type": "approval",
        "object_id": "AP-1",
        "record": {"applicant_email": "eve@example.com"},
    }
)
DEEP = "[" * 5000 + "]" * 5000
HUGE = '{"id": ' + "9" * 5000 + "}"


def errors(lines: object, source: str = "events.jsonl") -> list[tuple[str, str | None, bool]]:
    return [(i.source, i.error, i.event is not None) for i in parse_lines(lines, source)]  # type: ignore[arg-type]


def test_a_deep_line_and_a_huge_number_are_each_one_error_and_the_rest_is_read() -> None:
    got = errors([GOOD, DEEP, HUGE, GOOD.replace("E-1", "E-2")])
    assert got[0] == ("events.jsonl line 1", None, True)
    assert got[1][:2] == (
        "events.jsonl line 2",
        f"not valid JSON: nested deeper than {MAX_JSON_DEPTH} levels",
    )
    assert got[2][:2] == (
        "events.jsonl line 3",
        "not valid JSON: a number has more than 4300 digits",
    )
    assert got[3] == ("events.jsonl line 4", None, True)


def test_nesting_just_over_the_depth_cap_is_refused_and_at_the_cap_is_read() -> None:
    def nested(depth: int) -> str:
        record = "1"
        for _ in range(depth - 1):
            record = "[" + record + "]"
        return GOOD.replace('{"applicant_email": "eve@example.com"}', '{"x": ' + record + "}")

    ok, deep = errors([nested(MAX_JSON_DEPTH - 1), nested(MAX_JSON_DEPTH + 1)])
    assert ok[1:] == (None, True)
    assert deep[1:] == (f"not valid JSON: nested deeper than {MAX_JSON_DEPTH} levels", False)


def test_an_overlong_line_is_one_error_and_the_next_line_is_read() -> None:
    big = b'{"id": "' + b"x" * (MAX_EVENT_LINE_BYTES + 10) + b'"}\n'
    got = errors(io.BytesIO(big + GOOD.encode() + b"\n"))
    assert got == [
        (
            "events.jsonl line 1",
            f"a line is longer than {MAX_EVENT_LINE_BYTES // 2**20} MiB",
            False,
        ),
        ("events.jsonl line 2", None, True),
    ]


def test_an_input_that_never_ends_stops_at_the_cap() -> None:
    with Path("/dev/zero").open("rb") as fh:
        got = errors(fh, "zero")
    assert got[-1] == (
        "zero",
        f"stopped reading: the events are larger than {MAX_EVENTS_BYTES // 2**20} MiB",
        False,
    )
    assert all(e for _, e, _ in got)


def test_text_lines_are_read_too() -> None:
    got = errors(io.StringIO(GOOD + "\n" + DEEP + "\n"), "stdin")
    assert [e for _, e, _ in got] == [
        None,
        f"not valid JSON: nested deeper than {MAX_JSON_DEPTH} levels",
    ]


@PROPS
@given(st.lists(st.binary(max_size=300), max_size=5))
def test_any_bytes_make_intakes_never_an_exception(lines: list[bytes]) -> None:
    items = list(parse_lines(io.BytesIO(b"\n".join(lines)), "fuzz"))
    assert all((i.event is None) != (i.error is None) for i in items)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@PROPS
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "id": st.text(max_size=20) | st.integers(),
            "flow_type": st.sampled_from(["workflow", "approval_flow", "nope"]) | json_values,
            "flow_name": st.text(max_size=20),
            "event": st.text(max_size=20) | json_values,
            "object_type": st.text(max_size=20),
            "object_id": st.text(max_size=20) | st.integers(),
            "occurred_at": st.text(max_size=30) | json_values,
            "record": json_values,
        },
    )
)
def test_any_json_event_is_an_event_or_an_error(data: dict[str, object]) -> None:
    (item,) = list(parse_lines([json.dumps(data)], "fuzz"))
    assert (item.event is None) != (item.error is None)


@PROPS
@given(st.text(alphabet='[]{}"0123456789:,.eE-+ tnrufals\\', max_size=200))
def test_json_like_text_is_an_event_or_an_error(text: str) -> None:
    for item in parse_lines([text], "fuzz"):
        assert (item.event is None) != (item.error is None)


def test_odd_values_are_mailed_or_one_error_each(
    ws: Workspace, smtp_server: SMTPTestServer
) -> None:
    """What JSON can hold reaches the store and the mail, or is that line's error."""
    bind(ws, smtp_server, "workflow", kind="workflow_notification")
    templates.add_template(
        ws, "t", object_type="approval", subject="S {{ request }}", html="<p>{{ request }}</p>"
    )
    workflows.add_rule(
        ws, "r", flow_type="approval_flow", flow_name="travel", event="approved",
        account="workflow", template="t", recipients=["field:applicant_email"],
        condition="amount > 3",
    )  # fmt: skip

    def event(eid: str, **record: object) -> str:
        rec = {"applicant_email": "eve@example.com", "request": "x", "amount": 5, **record}
        return GOOD.replace('"E-1"', json.dumps(eid)).replace(
            '{"applicant_email": "eve@example.com"}', json.dumps(rec)
        )

    lines = [
        event("A1", request="\ud800"),
        event("\ud800"),
        event("A2", **{"\udfff": 1}),
        event("A3", request=float("nan"), amount=float("inf")),
        event("A4", request=10**4000, amount=10**4000),
        event("A5", request={"a": [[[[1]]]]}),
        DEEP,
        HUGE,
        event("A6"),
    ]
    results = workflows.notify_jsonl(ws, lines, source="odd")
    got = {r.source: (r.status, r.error) for r in results}
    surrogate = "not valid JSON: '\\ud800' (a lone surrogate) is not a character"
    assert got["odd line 1"] == ("error", surrogate)
    assert got["odd line 2"] == ("error", surrogate)
    assert got["odd line 3"][1] == surrogate.replace("ud800", "udfff")
    assert [(r.event_id, r.status) for r in results if r.ok] == [
        ("A3", "notified"), ("A4", "notified"), ("A5", "notified"), ("A6", "notified"),
    ]  # fmt: skip
    assert got["odd line 7"][1] == f"not valid JSON: nested deeper than {MAX_JSON_DEPTH} levels"
    assert got["odd line 8"][1] == "not valid JSON: a number has more than 4300 digits"
    assert len(smtp_server.messages) == 4
    assert len(workflows.list_events(ws, limit=None)) == 9
