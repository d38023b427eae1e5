"""CLI: a command whose reader goes away (`sysmail-ops logs list | head -1`) ends quietly.

Each command runs as a real process writing into a real pipe. For the long listings the
workspace holds enough rows that the output is larger than the pipe's buffer (64 KiB), so
the command is still writing when the reader, having read a few bytes, closes its end (as
``head -c 1`` does). For the short ones the reader closes its end before the command
prints anything. Either way: no traceback, nothing on stderr, and the status a shell
shows for a command ended by SIGPIPE (141), as git, ls and jq end.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import bind
from smtp_testserver import SMTPTestServer

from sysmail_ops.cli import main
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.templates import catalog as templates

pytestmark = pytest.mark.slow  # some 25 processes, on a workspace of 1,500 sent messages

PIPE_BUFFER = 64 * 1024
ROWS = 1500  # log rows, archived messages, events, suppressed addresses
SIGPIPE_STATUS = 141


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory, _smtp_server_session: SMTPTestServer) -> Path:
    """A workspace with ROWS sent and archived messages, events and suppressed addresses."""
    home = tmp_path_factory.mktemp("pipes") / "ws"
    ws, _ = Workspace.init(home)
    bind(ws, _smtp_server_session)
    templates.add_template(
        ws, "notice", object_type="contact", subject="Notice {{ n }} for {{ name }}",
        html="<p>Hello {{ name }}, notice {{ n }}.</p>",
    )  # fmt: skip
    records = home.parent / "records.csv"
    with records.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["email", "name", "n"])
        w.writerows([f"person{i}@example.com", f"Person {i}", i] for i in range(ROWS))
    events = home.parent / "events.jsonl"
    events.write_text(
        "".join(
            json.dumps(
                {
                    "id": f"ev-{i}",
                    "flow_type": "workflow",
                    "flow_name": "intake",
                    "event": "done",
                    "object_type": "ticket",
                    "object_id": str(i),
                    "record": {"n": i},
                }
            )
            + "\n"
            for i in range(ROWS)
        )
    )
    argv = ["--home", str(home)]
    assert main([*argv, "send-batch", "service", "--template", "notice",
                 "--records", str(records), "--no-progress", "--json"]) == 0  # fmt: skip
    assert main([*argv, "notify", "--events", str(events), "--json"]) == 0
    with ws.store.transaction() as con:
        con.execute(
            "INSERT INTO suppression SELECT 'gone' || i || '@example.com', 'manual', "
            "'a request by phone', now() FROM range(?) t(i)",
            [ROWS],
        )
    return home


def _sysmail(home: Path, *argv: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SYSMAIL_HOME": str(home)}
    return subprocess.Popen(
        [sys.executable, "-m", "sysmail_ops", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )


def _read_then_close(proc: subprocess.Popen[bytes], n: int) -> tuple[int, bytes, bytes]:
    """Read ``n`` bytes of the command's output (0: none), close the pipe, wait for it."""
    with proc:
        assert proc.stdout is not None and proc.stderr is not None
        head = proc.stdout.read(n) if n else b""
        proc.stdout.close()
        err = proc.stderr.read()
        return proc.wait(timeout=120), head, err


LONG = [
    ("logs", "list", "--limit", "10000"),
    ("logs", "list", "--limit", "10000", "--json"),
    ("archive", "list", "--limit", "10000"),
    ("archive", "list", "--limit", "10000", "--json"),
    ("events", "list", "--limit", "10000"),
    ("events", "list", "--limit", "10000", "--json"),
    ("suppress", "list"),
    ("suppress", "list", "--json"),
]


@pytest.mark.parametrize("argv", LONG, ids=" ".join)
def test_a_long_listing_into_a_reader_that_closes_early_ends_quietly(
    full: Path, argv: tuple[str, ...]
) -> None:
    whole = subprocess.run(
        [sys.executable, "-m", "sysmail_ops", "--home", str(full), *argv],
        capture_output=True,
        check=True,
    )
    assert len(whole.stdout) > PIPE_BUFFER  # the command cannot have written it all ahead
    code, head, err = _read_then_close(_sysmail(full, *argv), 1)
    assert err == b""
    assert head == whole.stdout[:1]
    assert code == SIGPIPE_STATUS


SHORT = [
    ("accounts", "list"),
    ("accounts", "list", "--json"),
    ("templates", "list"),
    ("templates", "list", "--json"),
    ("subscriptions", "list"),
    ("subscriptions", "list", "--json"),
    ("logs", "summary"),
    ("logs", "show", "1"),
    ("settings", "list"),
    ("rules", "list"),
    ("cron",),
]


@pytest.mark.parametrize("argv", SHORT, ids=" ".join)
def test_a_command_whose_reader_is_already_gone_ends_quietly(
    full: Path, argv: tuple[str, ...]
) -> None:
    code, _, err = _read_then_close(_sysmail(full, *argv), 0)
    assert err == b""
    assert code == SIGPIPE_STATUS


def test_a_raw_message_into_a_reader_that_closes_early_ends_quietly(full: Path) -> None:
    listed = subprocess.run(
        [sys.executable, "-m", "sysmail_ops", "--home", str(full), "archive", "list", "--json"],
        capture_output=True,
        check=True,
    )
    first = json.loads(listed.stdout)[0]["id"]
    code, _, err = _read_then_close(_sysmail(full, "archive", "show", first, "--raw"), 0)
    assert err == b"" and code == SIGPIPE_STATUS


def test_help_whose_reader_is_gone_ends_quietly(full: Path) -> None:
    code, _, err = _read_then_close(_sysmail(full, "--help"), 0)
    assert err == b""
    assert code in (0, SIGPIPE_STATUS)  # argparse ignores a failed write of its help text


def test_an_error_still_goes_to_stderr_when_the_reader_is_gone(full: Path) -> None:
    code, _, err = _read_then_close(_sysmail(full, "templates", "show", "no-such"), 0)
    assert code == 2
    assert err.decode().startswith("sysmail-ops: error: ") and b"Traceback" not in err


def test_a_reader_that_reads_everything_sees_the_usual_status(full: Path) -> None:
    code, head, err = _read_then_close(_sysmail(full, "accounts", "list"), 1 << 20)
    assert code == 0 and err == b"" and b"service" in head
