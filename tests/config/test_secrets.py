"""Passwords encrypted at rest; the key is the thing to back up."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from sysmail_ops.config import accounts
from sysmail_ops.config.secrets import ENV_KEY
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import SecretKeyError
from sysmail_ops.mail.credentials import Secret

PASSWORD = "Corr3ct-Horse-Battery"


def add(ws: Workspace, name: str = "service", **kw: object) -> accounts.Account:
    return accounts.add_account(
        ws,
        name,
        kind="customer_service",
        from_address="service@example.com",
        smtp_host="smtp.example.com",
        **kw,  # type: ignore[arg-type]
    )


def workspace_bytes(ws: Workspace) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in ws.home.rglob("*") if p.is_file() and p != ws.key_path}


def test_secret_never_shows_itself() -> None:
    s = Secret(PASSWORD)
    assert PASSWORD not in repr(s)
    assert PASSWORD not in str(s)
    assert PASSWORD not in f"{s}"
    assert PASSWORD not in repr([s])
    with pytest.raises(TypeError):
        pickle.dumps(s)


def test_password_is_encrypted_and_round_trips(ws: Workspace) -> None:
    acct = add(ws, password=PASSWORD)
    assert acct.auth_source == "stored"
    assert PASSWORD not in repr(acct)
    assert PASSWORD not in str(acct.to_dict())
    assert accounts.password_for(ws, acct).reveal() == PASSWORD
    for path, data in workspace_bytes(ws).items():
        assert PASSWORD.encode() not in data, path


def test_env_reference_is_resolved_at_use(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    acct = add(ws, password_ref="env:SERVICE_SMTP_PASSWORD")
    assert acct.password_display == "env:SERVICE_SMTP_PASSWORD"
    with pytest.raises(SecretKeyError, match="SERVICE_SMTP_PASSWORD is not set"):
        accounts.password_for(ws, acct)
    monkeypatch.setenv("SERVICE_SMTP_PASSWORD", PASSWORD)
    assert accounts.password_for(ws, acct).reveal() == PASSWORD


def test_key_from_environment_leaves_no_key_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cryptography.fernet import Fernet

    monkeypatch.setenv(ENV_KEY, Fernet.generate_key().decode())
    ws, created = Workspace.init(tmp_path / "ws")
    assert not created and not ws.key_path.exists()
    acct = add(ws, password=PASSWORD)
    assert accounts.password_for(Workspace.open(ws.home), acct).reveal() == PASSWORD


def test_missing_key_says_so_plainly(ws: Workspace) -> None:
    acct = add(ws, password=PASSWORD)
    ws.key_path.unlink()
    fresh = Workspace.open(ws.home)
    with pytest.raises(SecretKeyError, match="missing; restore it from your backup"):
        accounts.password_for(fresh, acct)


def test_wrong_key_says_so_plainly(ws: Workspace) -> None:
    from cryptography.fernet import Fernet

    acct = add(ws, password=PASSWORD)
    ws.key_path.write_bytes(Fernet.generate_key())
    fresh = Workspace.open(ws.home)
    with pytest.raises(SecretKeyError, match="cannot be decrypted") as info:
        accounts.password_for(fresh, acct)
    assert "Token" not in str(info.value)


def test_corrupt_key_file_is_named(ws: Workspace) -> None:
    ws.key_path.write_bytes(b"not a key")
    with pytest.raises(SecretKeyError, match="not a valid key"):
        add(Workspace.open(ws.home), password=PASSWORD)
    assert accounts.list_accounts(Workspace.open(ws.home)) == []
