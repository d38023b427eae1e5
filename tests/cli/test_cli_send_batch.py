"""CLI: send-batch's contract for bad records, and typed columns (--types).

Every record is checked and rendered before the first message goes out: any record
that cannot be sent stops the batch with one line per bad record on stderr (record
number, file line, field, reason) and exit 2, and nothing is sent or logged.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
from smtp_testserver import SMTPTestServer

from sysmail_ops.cli import build_parser, main
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import BadRecordsError, ValidationError
from sysmail_ops.records import sendlog
from sysmail_ops.sending import batch
from sysmail_ops.templates import catalog as templates

INVOICE_HTML = (
    "<p>{{ name }}: {{ count }} item(s), {{ '%.2f'|format(amount * 1.2) }} with VAT"
    "{% if paid %}, paid{% endif %}.</p>"
)


@pytest.fixture
def run(ws: Workspace, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    def _run(*argv: str) -> tuple[int, str, str]:
        code = main(["--home", str(ws.home), *argv])
        out, err = capsys.readouterr()
        return code, out, err

    return _run


@pytest.fixture
def invoice(ws: Workspace, service: object) -> templates.Template:
    return templates.add_template(
        ws, "invoice", object_type="invoice", subject="Invoice for {{ name }}", html=INVOICE_HTML
    )


def csv_file(tmp_path: Path, *rows: str) -> Path:
    path = tmp_path / "invoices.csv"
    path.write_text("email,name,amount,count,paid\n" + "".join(r + "\n" for r in rows))
    return path


def batch_args(path: Path, *extra: str) -> tuple[str, ...]:
    return ("send-batch", "service", "--template", "invoice", "--records", str(path),
            "--no-progress", *extra)  # fmt: skip


def nothing_sent(ws: Workspace, smtp_server: SMTPTestServer) -> bool:
    return smtp_server.messages == [] and sendlog.list_logs(ws, limit=None).empty


def test_csv_text_that_a_template_computes_with_stops_the_batch_before_any_send(
    run, ws: Workspace, smtp_server: SMTPTestServer, invoice: object, tmp_path: Path
) -> None:
    path = csv_file(
        tmp_path,
        "ann@example.com,Ann,10.00,1,true",
        "bob@example.com,Bob,20.50,2,false",
        "cy@example.com,Cy,5,3,yes",
    )
    code, out, err = run(*batch_args(path))
    assert code == 2 and out == ""
    lines = err.splitlines()
    assert len(lines) == 4  # one per bad record, then the verdict
    for n, line in enumerate(lines[:3], 1):
        assert line.startswith(f"sysmail-ops: error: record {n} (line {n + 1}): template ")
        assert "html: TypeError" in line
    assert lines[3] == (f"sysmail-ops: error: 3 bad record(s) in {path}: nothing was sent")
    assert "Traceback" not in err
    assert nothing_sent(ws, smtp_server)


def test_types_make_the_same_file_compute(
    run, ws: Workspace, smtp_server: SMTPTestServer, invoice: object, tmp_path: Path
) -> None:
    path = csv_file(
        tmp_path,
        "ann@example.com,Ann,10.00,1,true",
        "bob@example.com,Bob,20.50,2,false",
    )
    code, out, err = run(*batch_args(path, "--types", "amount=float, count=int,paid=bool"))
    assert code == 0, err
    assert out.startswith("batch ") and "2 sent" in out and err == ""
    bodies = {m.rcpt_tos[0]: m.message.get_body(("html",)).get_content()  # type: ignore[union-attr]
              for m in smtp_server.messages}  # fmt: skip
    assert "Ann: 1 item(s), 12.00 with VAT, paid." in bodies["ann@example.com"]
    assert "Bob: 2 item(s), 24.60 with VAT." in bodies["bob@example.com"]


def test_every_bad_record_is_one_line_with_its_field_and_nothing_is_sent(
    run, ws: Workspace, smtp_server: SMTPTestServer, invoice: object, tmp_path: Path
) -> None:
    path = csv_file(
        tmp_path,
        "ann@example.com,Ann,10.00,1,true",
        'bob@example.com,Bob,"12,5",2,false',
        "not-an-address,Cy,5,3,true",
        "dee@example.com,Dee,5,three,perhaps",
        ",Eve,1,1,true",
        "fay@example.com,Fay,1e999,1,true",
    )
    code, out, err = run(*batch_args(path, "--types", "amount=float,count=int,paid=bool"))
    assert code == 2 and out == ""
    assert err.splitlines() == [
        "sysmail-ops: error: record 2 (line 3): amount: '12,5' is not a number",
        "sysmail-ops: error: record 3 (line 4): email 'not-an-address' is not valid: "
        "An email address must have an @-sign.",
        "sysmail-ops: error: record 4 (line 5): count: 'three' is not a whole number; "
        "paid: 'perhaps' is not true or false",
        "sysmail-ops: error: record 5 (line 6): email: no address",
        "sysmail-ops: error: record 6 (line 7): amount: '1e999' is not a number",
        f"sysmail-ops: error: 5 bad record(s) in {path}: nothing was sent",
    ]
    assert nothing_sent(ws, smtp_server)


def test_a_missing_field_names_the_field(
    run, ws: Workspace, smtp_server: SMTPTestServer, invoice: object, tmp_path: Path
) -> None:
    path = tmp_path / "invoices.jsonl"
    path.write_text(
        json.dumps({"email": "ann@example.com", "name": "Ann", "amount": 1, "count": 1,
                    "paid": True}) + "\n\n"
        + json.dumps({"email": "bob@example.com", "amount": 2, "paid": False}) + "\n"
    )  # fmt: skip
    code, out, err = run(*batch_args(path))
    assert code == 2 and out == ""
    assert err.splitlines()[0] == (
        "sysmail-ops: error: record 2 (line 3): count: missing (the template uses it); "
        "name: missing (the template uses it)"
    )
    assert nothing_sent(ws, smtp_server)


def test_jsonl_values_keep_their_types(
    run, ws: Workspace, smtp_server: SMTPTestServer, invoice: object, tmp_path: Path
) -> None:
    path = tmp_path / "invoices.jsonl"
    path.write_text(
        json.dumps({"email": "ann@example.com", "name": "Ann", "amount": 10, "count": 1,
                    "paid": True}) + "\n"
        + json.dumps({"email": "bob@example.com", "name": "Bob", "amount": "20.5", "count": 2,
                      "paid": False}) + "\n"
    )  # fmt: skip
    code, _, err = run(*batch_args(path))
    assert code == 2 and nothing_sent(ws, smtp_server)
    assert err.splitlines()[0].startswith("sysmail-ops: error: record 2 (line 2): template ")
    # --types converts the text, and keeps a number that is already one
    code, out, err = run(*batch_args(path, "--types", "amount=float"))
    assert code == 0 and "2 sent" in out, err
    body = smtp_server.messages[1].message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "24.60 with VAT" in body


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("amount", "types take NAME=TYPE[,NAME=TYPE...], got 'amount'"),
        ("amount=money", "unknown type 'money' for 'amount': choose one of str, int, float,"),
        ("amount=float,amount=int", "types name 'amount' twice"),
        ("=int", "types take NAME=TYPE[,NAME=TYPE...], got '=int'"),
        ("amout=float", "types name 'amout', which no record has"),
    ],
)
def test_a_bad_types_spec_is_one_line_and_exit_2(
    run,
    ws: Workspace,
    smtp_server: SMTPTestServer,
    invoice: object,
    tmp_path: Path,
    spec: str,
    message: str,
) -> None:
    path = csv_file(tmp_path, "ann@example.com,Ann,10.00,1,true")
    code, out, err = run(*batch_args(path, "--types", spec))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and message in err
    assert nothing_sent(ws, smtp_server)


def test_past_the_listed_lines_bad_records_are_counted(
    run,
    ws: Workspace,
    smtp_server: SMTPTestServer,
    invoice: object,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(batch, "LISTED", 2)
    path = csv_file(tmp_path, *[f"p{i}@example.com,P,x,1,true" for i in range(5)])
    code, _, err = run(*batch_args(path, "--types", "amount=float"))
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 3
    assert lines[2] == (
        f"sysmail-ops: error: 5 bad record(s) in {path} (3 not listed): nothing was sent"
    )
    assert nothing_sent(ws, smtp_server)


def test_the_library_error_lists_the_records_and_pickles(
    ws: Workspace, smtp_server: SMTPTestServer, invoice: object
) -> None:
    records = [
        {"email": "ann@example.com", "name": "Ann", "amount": "1", "count": 1, "paid": True},
        {"email": "bob@example.com", "name": "Bob", "amount": 2, "count": 1, "paid": True},
    ]
    with pytest.raises(BadRecordsError) as info:
        batch.send_batch(ws, "service", "invoice", records)
    exc = info.value
    assert isinstance(exc, ValidationError) and exc.bad == 1
    assert len(exc.problems) == 1 and exc.problems[0].startswith("record 1: template 'invoice'")
    assert str(exc).endswith(": 1 bad record(s), nothing was sent")
    again = pickle.loads(pickle.dumps(exc))  # noqa: S301 - our own bytes
    assert again.problems == exc.problems and again.bad == 1 and str(again) == str(exc)
    assert nothing_sent(ws, smtp_server)
    # the records were read once: an iterator will do
    result = batch.send_batch(ws, "service", "invoice", iter(records[1:]))
    assert result.counts == {"sent": 1}


def test_the_help_states_the_contract() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    text = sub.choices["send-batch"].format_help()  # type: ignore[attr-defined]
    flat = " ".join(text.split())
    assert "nothing is sent, each bad record is one line on stderr" in flat
    assert "the exit status is 2" in flat and "--types" in flat
