"""How a system email signs its mail: DKIM keys and the signature under each message.

DKIM private keys are generated (or imported) here and stored encrypted with
the workspace key, beside the account; only the selector and the domain are
account fields. ``dkim_keys`` decrypts them at the moment a batch starts.
The signature (HTML and text) is an account field; ``sender_of`` gives
templates the ``sender`` they see.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sysmail_ops.config.accounts import Account, _check_host, edit_account, get_account
from sysmail_ops.errors import ValidationError
from sysmail_ops.mail import dkim
from sysmail_ops.mail.credentials import Secret
from sysmail_ops.store import audit
from sysmail_ops.store.database import utcnow

if TYPE_CHECKING:
    from sysmail_ops.config.workspace import Workspace

_KEY_COLUMN = {"rsa": "dkim_rsa_key_enc", "ed25519": "dkim_ed25519_key_enc"}
_SELECTOR_COLUMN = {"rsa": "dkim_rsa_selector", "ed25519": "dkim_ed25519_selector"}
MAX_SIGNATURE_FILE = 256 * 1024


def _update(ws: Workspace, name: str, sets: dict[str, Any]) -> Account:
    sets = {**sets, "updated_at": utcnow()}
    assignments = ", ".join(f"{c} = ?" for c in sets)  # our own column names
    with ws.store.transaction() as con:
        before = audit.row(con, "accounts", name=name)
        con.execute(
            f"UPDATE accounts SET {assignments} WHERE name = ?",  # noqa: S608
            [*sets.values(), name],
        )
        audit.record(con, "account", name, "edit", before, audit.row(con, "accounts", name=name))
    return get_account(ws, name)


# --- DKIM -------------------------------------------------------------------------------------


def set_dkim(
    ws: Workspace,
    name: str,
    *,
    selector: str,
    algorithm: str | None = None,
    key_file: str | Path | None = None,
    domain: str | None = None,
) -> tuple[Account, dkim.DkimKey]:
    """Generate (or import from ``key_file``) the account's RSA or Ed25519 key and store it
    encrypted under ``selector``. Nothing is written when a check fails.

    An RSA and an Ed25519 key may both be set: each message then carries two
    signatures. Returns the account and the key, whose ``dns_record`` is what to publish.
    """
    account = get_account(ws, name)
    selector = dkim.check_selector(selector)
    if algorithm is not None and algorithm not in dkim.ALGORITHMS:
        raise ValidationError(f"unknown DKIM algorithm {algorithm!r}: choose rsa or ed25519")
    if key_file is not None:
        found, private = dkim.read_key_file(key_file)
        if algorithm is not None and algorithm != found:
            raise ValidationError(
                f"key file {str(key_file)!r} holds an {found} key, not {algorithm}"
            )
        algorithm = found
    else:
        algorithm = algorithm or "rsa"
        private = dkim.generate_key(algorithm)
    domain = domain or account.dkim_domain or account.from_address.rpartition("@")[2]
    domain = _check_host(domain, "DKIM domain").lower().rstrip(".")
    other = "ed25519" if algorithm == "rsa" else "rsa"
    if getattr(account, _SELECTOR_COLUMN[other]) == selector:
        raise ValidationError(
            f"selector {selector!r} already names {name!r}'s {other} key: each key needs "
            "its own selector (its own DNS record)"
        )
    key = dkim.DkimKey(algorithm, selector, domain, private)
    encrypted = ws.secrets.encrypt(Secret(private.decode("ascii")))
    updated = _update(
        ws,
        name,
        {
            _SELECTOR_COLUMN[algorithm]: selector,
            _KEY_COLUMN[algorithm]: encrypted,
            "dkim_domain": domain,
        },
    )
    return updated, key


def dkim_off(ws: Workspace, name: str) -> Account:
    """Stop signing: forget the selectors and delete the stored keys."""
    get_account(ws, name)
    return _update(
        ws,
        name,
        {
            "dkim_domain": None,
            "dkim_rsa_selector": None,
            "dkim_rsa_key_enc": None,
            "dkim_ed25519_selector": None,
            "dkim_ed25519_key_enc": None,
        },
    )


def dkim_keys(ws: Workspace, account: Account, *, con: Any = None) -> tuple[dkim.DkimKey, ...]:
    """The account's signing keys, decrypted (RSA first); empty when DKIM is off."""
    if not (account.dkim_rsa_selector or account.dkim_ed25519_selector):
        return ()
    if con is None:
        with ws.store.connect() as con:
            return dkim_keys(ws, account, con=con)
    row = con.execute(
        "SELECT dkim_rsa_key_enc, dkim_ed25519_key_enc FROM accounts WHERE name = ?",
        [account.name],
    ).fetchone()
    keys = []
    for algorithm, token in zip(dkim.ALGORITHMS, row or (None, None), strict=True):
        selector = getattr(account, _SELECTOR_COLUMN[algorithm])
        if selector and token:
            what = f"the DKIM {algorithm} key of {account.name!r}"
            private = ws.secrets.decrypt(token, what).reveal().encode("ascii")
            keys.append(dkim.DkimKey(algorithm, selector, account.dkim_domain or "", private))
    return tuple(keys)


def dkim_records(ws: Workspace, name: str) -> list[tuple[str, str]]:
    """The DNS TXT records (name, value) to publish for the account's keys."""
    return [dkim.dns_record(k) for k in dkim_keys(ws, get_account(ws, name))]


# --- signatures -------------------------------------------------------------------------------


def read_signature_file(path: str | Path, what: str) -> str:
    """A signature file's text (UTF-8), or one ``ValidationError`` line."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            data = fh.read(MAX_SIGNATURE_FILE + 1)
    except OSError as exc:
        raise ValidationError(f"cannot read {what} {str(p)!r}: {exc.strerror or exc}") from None
    except ValueError:
        raise ValidationError(f"cannot read {what} {str(p)!r}: not a file name") from None
    if len(data) > MAX_SIGNATURE_FILE:
        raise ValidationError(f"{what} {str(p)!r} is larger than {MAX_SIGNATURE_FILE // 1024} KiB")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValidationError(f"{what} {str(p)!r} is not UTF-8 text") from None


def set_signature(
    ws: Workspace,
    name: str,
    *,
    html: str | None = None,
    text: str | None = None,
    auto: bool | None = None,
    off: bool = False,
) -> Account:
    """Set the signature parts given (``None`` keeps a part), the auto-append switch,
    or with ``off`` remove both parts."""
    if off:
        if html is not None or text is not None:
            raise ValidationError("--off cannot be combined with a new signature")
        get_account(ws, name)
        return _update(ws, name, {"signature_html": None, "signature_text": None})
    if html is None and text is None and auto is None:
        raise ValidationError("give --html FILE, --text FILE, --auto on|off or --off")
    return edit_account(ws, name, signature_html=html, signature_text=text, signature_auto=auto)
