"""The presets (`accounts add --provider/--detect`, `accounts providers`), DKIM and signatures."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sysmail_ops.cli import main
from sysmail_ops.config import accounts, providers, signing
from sysmail_ops.config.workspace import Workspace


class CLI:
    def __init__(self, home: Path, capsys: pytest.CaptureFixture[str], mp: pytest.MonkeyPatch):
        self.home, self.capsys, self.mp = home, capsys, mp

    def __call__(self, *argv: str, stdin: str = "") -> tuple[int, str, str]:
        self.mp.setattr(sys, "stdin", io.StringIO(stdin))
        code = main(["--home", str(self.home), *argv])
        out, err = self.capsys.readouterr()
        return code, out, err


@pytest.fixture
def cli(ws: Workspace, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> CLI:
    return CLI(ws.home, capsys, monkeypatch)


def add(cli: CLI, name: str, address: str, *extra: str) -> tuple[int, str, str]:
    return cli("accounts", "add", name, "--address", address, "--no-password", *extra)


# --- presets ------------------------------------------------------------------------------


def test_add_with_a_preset_fills_the_servers_and_explicit_options_win(
    cli: CLI, ws: Workspace
) -> None:
    code, out, err = add(cli, "g", "ops@corp.example", "--provider", "google")
    assert code == 0, err
    assert "app password" in out and "recommends OAuth2 (google)" in out
    a = accounts.get_account(ws, "g")
    assert (a.smtp_host, a.smtp_port, a.smtp_security) == ("smtp.gmail.com", 587, "starttls")
    assert (a.imap_host, a.imap_port, a.imap_security) == ("imap.gmail.com", 993, "ssl")
    assert a.max_message_bytes == 25 * 2**20
    code, _, err = add(
        cli, "m", "ops@corp.example", "--provider", "Microsoft365",
        "--port", "25", "--max-size", "10", "--imap-host", "imap.corp.example",
    )  # fmt: skip
    assert code == 0, err
    a = accounts.get_account(ws, "m")
    assert (a.smtp_host, a.smtp_port, a.imap_host) == (
        "smtp.office365.com",
        25,
        "imap.corp.example",
    )
    assert a.max_message_bytes == 10 * 2**20


def test_a_known_domain_suggests_a_preset_without_applying_it(cli: CLI, ws: Workspace) -> None:
    code, out, err = add(cli, "q", "team@qq.com", "--host", "relay.corp.example")
    assert code == 0, err
    assert "--provider qq would fill" in out
    assert accounts.get_account(ws, "q").smtp_host == "relay.corp.example"
    code, out, err = add(cli, "o", "team@outlook.com")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "--provider outlook" in err
    assert [a.name for a in accounts.list_accounts(ws)] == ["q"]


def test_unknown_provider_is_one_line_and_nothing_is_written(cli: CLI, ws: Workspace) -> None:
    code, out, err = add(cli, "x", "ops@corp.example", "--provider", "yahoo")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "unknown provider 'yahoo'" in err and "microsoft365" in err
    assert accounts.list_accounts(ws) == []


def test_detect_looks_up_mx_only_when_asked(
    cli: CLI, ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dns.resolver

    asked: list[tuple[str, str]] = []

    def resolve(name: str, rdtype: str, **_: Any) -> list[SimpleNamespace]:
        asked.append((name, rdtype))  # no DNS from the test machine: answer as a resolver would
        if name == "corp.example":
            return [
                SimpleNamespace(preference=10, exchange="corp-example.mail.protection.outlook.com.")
            ]
        raise dns.resolver.NXDOMAIN()

    monkeypatch.setattr(dns.resolver, "resolve", resolve)
    add(cli, "plain", "ops@corp.example", "--host", "relay.corp.example")
    assert asked == []  # never during validation or a plain add
    code, out, err = add(cli, "d", "ops@corp.example", "--detect")
    assert code == 0, err
    assert asked == [("corp.example", "MX")]
    assert "-> preset microsoft365" in out
    assert accounts.get_account(ws, "d").smtp_host == "smtp.office365.com"
    code, out, err = add(cli, "n", "ops@nowhere.example", "--detect")
    assert code == 2 and "does not exist" in err and err.count("\n") == 1
    assert "n" not in {a.name for a in accounts.list_accounts(ws)}


def test_providers_lists_and_shows(cli: CLI) -> None:
    code, out, _ = cli("accounts", "providers")
    assert code == 0
    for name in providers.providers():
        assert f"\n{name} " in "\n" + out
    code, out, _ = cli("accounts", "providers", "netease")
    assert "smtp.qiye.163.com:465 (ssl)" in out and "unconfirmed:" in out and "source:" in out
    code, _, err = cli("accounts", "providers", "nope")
    assert code == 2 and "unknown provider" in err


# --- DKIM -----------------------------------------------------------------------------------


def _all_workspace_text(ws: Workspace) -> str:
    """Every file under the workspace (bytes as latin-1) and every stored value, as text."""
    out = [p.read_bytes().decode("latin-1") for p in ws.home.rglob("*") if p.is_file()]
    with ws.store.connect() as con:
        tables = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()]
        for t in tables:
            out += [repr(row) for row in con.execute(f"SELECT * FROM {t}").fetchall()]  # noqa: S608
    return "\n".join(out)


def _secret_lines(private: bytes) -> list[str]:
    """Pieces of a private key that must appear nowhere: an Ed25519 seed, or the PEM lines
    holding RSA's primes and exponents (its first lines hold the public modulus)."""
    lines = [ln for ln in private.decode().splitlines() if ln and not ln.startswith("-----")]
    return lines[-8:-1] if len(lines) > 8 else lines


def test_dkim_key_is_generated_stored_encrypted_and_never_shown(cli: CLI, ws: Workspace) -> None:
    add(cli, "svc", "service@example.com", "--host", "127.0.0.1", "--security", "none")
    code, out, err = cli("accounts", "dkim", "svc", "--selector", "Mail2026")
    assert code == 0, err
    assert 'mail2026._domainkey.example.com TXT "v=DKIM1; k=rsa; p=MIIB' in out
    code, out2, err = cli("accounts", "dkim", "svc", "--selector", "ed1", "--algorithm", "ed25519")
    assert code == 0, err
    assert 'ed1._domainkey.example.com TXT "v=DKIM1; k=ed25519; p=' in out2
    a = accounts.get_account(ws, "svc")
    keys = signing.dkim_keys(ws, a)
    assert [k.algorithm for k in keys] == ["rsa", "ed25519"]
    everything = _all_workspace_text(ws)
    printed = out + out2
    for key in keys:
        for piece in _secret_lines(key.private):
            assert piece not in everything and piece not in printed
    code, out3, _ = cli("accounts", "show", "svc", "--json")
    assert code == 0 and "PRIVATE" not in out3 and "_enc" not in out3
    code, listed, _ = cli("accounts", "dkim", "svc")
    assert listed.count(" TXT ") == 2


def test_dkim_bad_input_is_one_line_and_writes_nothing(
    cli: CLI, ws: Workspace, tmp_path: Path
) -> None:
    add(cli, "svc", "service@example.com", "--host", "127.0.0.1", "--security", "none")
    before = accounts.get_account(ws, "svc")
    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN PRIVATE KEY-----\nnot base64!\n-----END PRIVATE KEY-----\n")
    unreadable = tmp_path / "locked.pem"
    unreadable.write_text("x")
    unreadable.chmod(0)
    cases = [
        (["--selector", "bad selector"], "DKIM selector"),
        (["--selector", "s_1"], "DKIM selector"),
        (["--selector", "s1", "--key-file", str(tmp_path / "missing.pem")], "cannot read"),
        (["--selector", "s1", "--key-file", str(tmp_path)], "cannot read"),
        (["--selector", "s1", "--key-file", str(junk)], "no PEM private key"),
        (["--selector", "s1", "--off"], "--off cannot"),
        (["--algorithm", "rsa"], "--selector"),
    ]
    import os

    if os.geteuid() != 0:  # root reads a mode-0 file anyway
        cases.append((["--selector", "s1", "--key-file", str(unreadable)], "Permission denied"))
    for extra, match in cases:
        code, out, err = cli("accounts", "dkim", "svc", *extra)
        assert code == 2, (extra, out, err)
        assert match in err and err.count("\n") == 1 and out == ""
    code, _, err = cli("accounts", "dkim", "nobody", "--selector", "s1")
    assert code == 2 and "no system email named 'nobody'" in err
    assert accounts.get_account(ws, "svc") == before
    assert signing.dkim_keys(ws, before) == ()


def test_dkim_key_file_import_and_off(cli: CLI, ws: Workspace, tmp_path: Path) -> None:
    add(cli, "svc", "service@example.com", "--host", "127.0.0.1", "--security", "none")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path = tmp_path / "dkim.pem"
    path.write_bytes(pem)
    code, out, err = cli(
        "accounts", "dkim", "svc", "--selector", "old", "--key-file", str(path),
        "--domain", "mail.example.com",
    )  # fmt: skip
    assert code == 0, err
    assert "rsa key imported" in out and "old._domainkey.mail.example.com" in out
    code, _, err = cli(
        "accounts", "dkim", "svc", "--selector", "x", "--key-file", str(path), "--algorithm",
        "ed25519",
    )  # fmt: skip
    assert code == 2 and "holds an rsa key" in err
    code, out, _ = cli("accounts", "dkim", "svc", "--off")
    assert code == 0 and "off" in out
    assert accounts.get_account(ws, "svc").dkim_rsa_selector is None
    code, out, _ = cli("accounts", "dkim", "svc")
    assert "DKIM signing off" in out


# --- signatures -----------------------------------------------------------------------------


def test_signature_from_files_and_bad_files(cli: CLI, ws: Workspace, tmp_path: Path) -> None:
    add(cli, "svc", "service@example.com", "--host", "127.0.0.1", "--security", "none")
    html, text = tmp_path / "sig.html", tmp_path / "sig.txt"
    html.write_text("<p>Bob</p>", encoding="utf-8")
    text.write_text("Bob\n", encoding="utf-8")
    code, out, err = cli("accounts", "signature", "svc", "--html", str(html), "--text", str(text))
    assert code == 0, err
    assert "HTML and text, appended automatically" in out
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("Grüße".encode("latin-1"))
    for extra, match in [
        (["--text", str(bad)], "not UTF-8"),
        (["--html", str(tmp_path / "missing.html")], "cannot read"),
        ([], "give --html"),
    ]:
        code, out, err = cli("accounts", "signature", "svc", *extra)
        assert code == 2 and match in err and err.count("\n") == 1 and out == ""
    a = accounts.get_account(ws, "svc")
    assert (a.signature_html, a.signature_text) == ("<p>Bob</p>", "Bob\n")
    code, out, _ = cli("accounts", "signature", "svc", "--auto", "off")
    assert "only where a template places it" in out
    code, out, _ = cli("accounts", "signature", "svc", "--off")
    assert code == 0 and "signature none" in out


# --- size limits ----------------------------------------------------------------------------


def test_send_over_the_accounts_maximum_is_one_line_exit_1_and_logged(
    cli: CLI, ws: Workspace, tmp_path: Path
) -> None:
    add(cli, "svc", "service@example.com", "--host", "127.0.0.1", "--security", "none")
    code, _, err = cli("accounts", "edit", "svc", "--max-size", "0.05")
    assert code == 0, err
    html = tmp_path / "note.html"
    html.write_text("<p>Hello</p>")
    code, _, err = cli("templates", "add", "note", "--object", "case", "--subject", "Hi",
                       "--html", str(html))  # fmt: skip
    assert code == 0, err
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(80_000))
    code, out, err = cli(
        "send", "svc", "--template", "note", "--to", "eve@example.org", "--attach", str(big)
    )
    assert code == 1
    (line,) = [ln for ln in (out + err).splitlines() if "error:" in ln]
    assert "over the limit of 0.0 MB" in line or "over the limit of 0.1 MB" in line
    assert "bytes)" in line and "account maximum" in line
    code, out, _ = cli("logs", "list", "--json")
    assert '"smtp_phase": "size"' in out and '"status": "failed"' in out
    for bad in ("-1", "5000", "0.0001"):
        code, _, err = cli("accounts", "edit", "svc", "--max-size", bad)
        assert code == 2 and "max" in err and err.count("\n") == 1, err
    assert accounts.get_account(ws, "svc").max_message_bytes == int(0.05 * 2**20)
    assert cli("accounts", "edit", "svc", "--max-size", "0", "--rate-limit", "0")[0] == 0
    assert accounts.get_account(ws, "svc").max_message_bytes is None  # back to the default
