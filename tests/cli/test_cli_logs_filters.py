"""`logs list` filters (--to, --domain, --template, --use-case, --key) through cli.main."""

from __future__ import annotations

import json

import pytest
from log_fixtures import handmade_log

from sysmail_ops.cli import main
from sysmail_ops.config.workspace import Workspace


@pytest.fixture
def run(ws: Workspace, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    handmade_log(ws)

    def _run(*argv: str) -> tuple[int, str, str]:
        try:
            code = main(["--home", str(ws.home), *argv])
        except SystemExit as exc:  # argparse's own refusals (an unknown choice)
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    return _run


def listed(run, *argv: str) -> list[int]:  # type: ignore[no-untyped-def]
    code, out, err = run("logs", "list", "--json", *argv)
    assert code == 0, err
    return [r["id"] for r in json.loads(out)]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ((), [11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1]),
        (("--to", "Ann@Example.com"), [11, 10, 9, 3, 1]),
        (("--domain", "example.net"), [5, 4]),
        (("--to", "example.org"), [7, 6]),  # a bare domain is a domain
        (("--template", "note"), [4, 3, 2, 1]),
        (("--use-case", "marketing"), [11, 10, 9, 8, 7, 6, 5]),
        (("--key", "k-m1"), [3, 1]),
        (("--to", "ann@example.com", "--status", "failed"), [11]),
        (("--account", "service", "--template", "note", "--limit", "2"), [4, 3]),
        (("--template", "gone"), []),
    ],
)
def test_filters(run, argv: tuple[str, ...], expected: list[int]) -> None:  # type: ignore[no-untyped-def]
    assert listed(run, *argv) == expected


def test_the_table_shows_the_filtered_rows(run) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = run("logs", "list", "--domain", "example.net")
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == 3 and "dan@example.net" in lines[1] and "cat@example.net" in lines[2]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--to", "ann@@example.com"), "--to 'ann@@example.com' is not valid"),
        (("--domain", "not a domain"), "--domain 'not a domain' is not a domain name"),
        (("--to", "example.com", "--domain", "example.org"), "--to takes an address when"),
        (("--use-case", "spam"), "invalid choice: 'spam'"),
        (("--since", "soon"), "--since takes a date"),
        (("--key", "k\x01"), "--key must be one line"),
        (("--limit", "-1"), "--limit must be 0 (all) or more"),
    ],
)
def test_bad_input_exits_2_with_one_line(run, argv: tuple[str, ...], message: str) -> None:  # type: ignore[no-untyped-def]
    code, out, err = run("logs", "list", *argv)
    assert code == 2 and out == ""
    assert message in err, err
    assert len(err.strip().splitlines()) == 1 or argv[0] == "--use-case"  # argparse: usage too
