"""DKIM keys, records and signatures, verified offline by dkimpy against the published record."""

from __future__ import annotations

import pickle
import shutil
import subprocess
from pathlib import Path

import dkim as dkimpy
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from sysmail_ops.errors import ValidationError
from sysmail_ops.mail import dkim
from sysmail_ops.mail.mime import compose


def dns_of(*keys: dkim.DkimKey):  # type: ignore[no-untyped-def]
    """A dnsfunc for dkimpy answering with the records ``dns_record`` says to publish."""
    records = {}
    for key in keys:
        name, value = dkim.dns_record(key)
        records[name.encode() + b"."] = value.encode()
    return lambda name, timeout=5: records.get(name)


def verifies(data: bytes, idx: int, dns: object) -> bool:
    """Whether signature ``idx`` verifies (dkimpy raises for a body hash mismatch)."""
    try:
        return bool(dkimpy.DKIM(data).verify(idx=idx, dnsfunc=dns))
    except dkimpy.DKIMException:
        return False


def message(**extra: object) -> bytes:
    fields: dict[str, object] = {
        "from_addr": "service@example.com",
        "from_name": "Service Désk",
        "to": "eve@example.org",
        "cc": "bob@example.org",
        "subject": "Your case C-1 was updated",
        "text": "Hello Eve,\nyour case was updated.\n",
        "html": "<p>Hello Eve, your case was <b>updated</b>.</p>",
        "extra_headers": {
            "List-Unsubscribe": "<https://example.com/u/abc>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    }
    fields.update(extra)
    return compose(**fields).data  # type: ignore[arg-type]


def rsa_key(selector: str = "mail2026") -> dkim.DkimKey:
    return dkim.DkimKey("rsa", selector, "example.com", dkim.generate_key("rsa"))


def ed_key(selector: str = "ed2026") -> dkim.DkimKey:
    return dkim.DkimKey("ed25519", selector, "example.com", dkim.generate_key("ed25519"))


@pytest.fixture(scope="module")
def keys() -> tuple[dkim.DkimKey, dkim.DkimKey]:
    return rsa_key(), ed_key()


def test_rsa_signature_verifies_against_the_published_record(
    keys: tuple[dkim.DkimKey, ...],
) -> None:
    rsa_k = keys[0]
    signed = dkim.sign(message(), [rsa_k])
    assert signed.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;")
    assert dkimpy.verify(signed, dnsfunc=dns_of(rsa_k))
    d = dkimpy.DKIM(signed)
    assert d.verify(dnsfunc=dns_of(rsa_k))
    h = d.signature_fields[b"h"]
    signed_headers = {x.strip() for x in h.split(b":")}
    assert signed_headers == set(dkim.SIGNED_HEADERS)


def test_both_signatures_verify_and_a_changed_body_fails_both(
    keys: tuple[dkim.DkimKey, ...],
) -> None:
    rsa_k, ed_k = keys
    signed = dkim.sign(message(), [rsa_k, ed_k])
    assert signed.count(b"DKIM-Signature:") == 2
    dns = dns_of(rsa_k, ed_k)
    assert verifies(signed, 0, dns)  # RSA
    assert verifies(signed, 1, dns)  # Ed25519 (RFC 8463)
    assert b"a=ed25519-sha256" in signed

    tampered = signed.replace(b"your case was updated", b"your case was closed")
    assert tampered != signed
    assert not verifies(tampered, 0, dns)
    assert not verifies(tampered, 1, dns)


def test_a_changed_signed_header_fails_and_relaxed_whitespace_passes(
    keys: tuple[dkim.DkimKey, ...],
) -> None:
    rsa_k = keys[0]
    signed = dkim.sign(message(), [rsa_k])
    dns = dns_of(rsa_k)
    assert not dkimpy.verify(signed.replace(b"case C-1", b"case C-2"), dnsfunc=dns)
    # relaxed/relaxed: a relay that re-spaces a header or the body still verifies
    respaced = signed.replace(b"Subject: Your case", b"Subject:  Your   case")
    assert dkimpy.verify(respaced, dnsfunc=dns)
    # a record for another key does not verify it
    assert not dkimpy.verify(signed, dnsfunc=dns_of(rsa_key()))


def test_dns_record_form(keys: tuple[dkim.DkimKey, ...]) -> None:
    rsa_k, ed_k = keys
    name, value = dkim.dns_record(rsa_k)
    assert name == "mail2026._domainkey.example.com"
    assert value.startswith("v=DKIM1; k=rsa; p=MIIB")
    name, value = dkim.dns_record(ed_k)
    assert name == "ed2026._domainkey.example.com"
    assert value.startswith("v=DKIM1; k=ed25519; p=") and len(value.split("p=")[1]) == 44


def test_repr_never_shows_the_key_and_pickles_whole(keys: tuple[dkim.DkimKey, ...]) -> None:
    rsa_k = keys[0]
    assert "PRIVATE" not in repr(rsa_k) and "********" in repr(rsa_k)
    assert rsa_k.private.decode() not in repr([rsa_k])
    assert pickle.loads(pickle.dumps(rsa_k)) == rsa_k  # noqa: S301 - the compose worker signs too


@pytest.mark.parametrize(
    "selector", ["", "bad selector", "-lead", "trail-", "a..b", "sel_1", "x" * 64, "s\n1"]
)
def test_bad_selector_is_refused(selector: str) -> None:
    with pytest.raises(ValidationError, match="DKIM selector"):
        dkim.check_selector(selector)


def test_good_selectors() -> None:
    assert dkim.check_selector(" Mail2026 ") == "mail2026"
    assert dkim.check_selector("s1.eu-west") == "s1.eu-west"


def _pem(key: object, fmt: serialization.PrivateFormat, password: bytes | None = None) -> bytes:
    enc = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, fmt, enc)  # type: ignore[attr-defined]


def test_key_files_import_rsa_pkcs8_pkcs1_and_ed25519(tmp_path: Path) -> None:
    r = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for fmt in (serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL):
        path = tmp_path / "rsa.pem"
        path.write_bytes(_pem(r, fmt))
        algorithm, private = dkim.read_key_file(path)
        key = dkim.DkimKey(algorithm, "imp", "example.com", private)
        assert algorithm == "rsa"
        assert dkimpy.verify(dkim.sign(message(), [key]), dnsfunc=dns_of(key))
    e = ed25519.Ed25519PrivateKey.generate()
    path = tmp_path / "ed.pem"
    path.write_bytes(_pem(e, serialization.PrivateFormat.PKCS8))
    algorithm, private = dkim.read_key_file(path)
    key = dkim.DkimKey(algorithm, "imp", "example.com", private)
    assert algorithm == "ed25519"
    assert dkimpy.verify(dkim.sign(message(), [key]), dnsfunc=dns_of(key))


def test_bad_key_files_are_one_line_each(tmp_path: Path) -> None:
    def refused(path: Path | str, match: str) -> None:
        with pytest.raises(ValidationError, match=match) as info:
            dkim.read_key_file(path)
        assert "\n" not in str(info.value)
        assert "PRIVATE KEY-----" not in str(info.value)

    refused(tmp_path / "missing.pem", "cannot read key file")
    refused(tmp_path, "cannot read key file")  # a folder
    (tmp_path / "junk.pem").write_text("not a key\n")
    refused(tmp_path / "junk.pem", "holds no PEM private key")
    locked = tmp_path / "locked.pem"
    r = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    locked.write_bytes(_pem(r, serialization.PrivateFormat.PKCS8, b"pw"))
    refused(locked, "is encrypted")
    if shutil.which("openssl"):  # cryptography makes no RSA key under 1024 bits; openssl does
        short = tmp_path / "short.pem"
        subprocess.run(
            ["openssl", "genrsa", "-out", str(short), "768"], check=True, capture_output=True
        )
        refused(short, "too short")
    ecfile = tmp_path / "ec.pem"
    ecfile.write_bytes(
        _pem(ec.generate_private_key(ec.SECP256R1()), serialization.PrivateFormat.PKCS8)
    )
    refused(ecfile, "RSA or Ed25519")
    big = tmp_path / "big.pem"
    big.write_bytes(b"x" * (dkim.MAX_KEY_FILE + 10))
    refused(big, "larger than")
