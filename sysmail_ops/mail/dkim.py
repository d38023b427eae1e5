"""DKIM (RFC 6376): keys, the DNS record to publish, and signing the final message bytes.

Signing is dkimpy's (relaxed/relaxed canonicalisation); keys are made and
read with ``cryptography``. An Ed25519 key (RFC 8463) is meant as a second
signature beside an RSA one: verifiers that know no Ed25519 still find the
RSA signature. A private key is held as a ``DkimKey``, which never shows it
in a repr; it is stored encrypted by ``config.accounts``.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from pathlib import Path

from sysmail_ops.errors import ValidationError

__all__ = [
    "ALGORITHMS",
    "SIGNED_HEADERS",
    "DkimKey",
    "check_selector",
    "dns_record",
    "generate_key",
    "read_key_file",
    "sign",
]

ALGORITHMS = ("rsa", "ed25519")
# What is signed (RFC 6376 5.4): the headers a reader sees and the list headers that
# one-click unsubscribe (RFC 8058) requires to be covered by the signature.
SIGNED_HEADERS = (
    b"from",
    b"to",
    b"cc",
    b"subject",
    b"date",
    b"message-id",
    b"mime-version",
    b"content-type",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
)
RSA_BITS = 2048
MAX_KEY_FILE = 64 * 1024
# RFC 6376 3.1: a selector is one or more dot-separated sub-domain labels.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_SELECTOR = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_SIGNATURE_ALGORITHM = {"rsa": b"rsa-sha256", "ed25519": b"ed25519-sha256"}


def check_selector(selector: str) -> str:
    """A DKIM selector: letters, digits and hyphens in dot-separated labels."""
    selector = (selector or "").strip()
    if not selector or len(selector) > 253 or not _SELECTOR.fullmatch(selector):
        raise ValidationError(
            f"DKIM selector {selector!r} must be letters, digits and hyphens "
            "(dot-separated labels, e.g. 'mail2026')"
        )
    return selector.lower()


@dataclass(frozen=True)
class DkimKey:
    """One signing key: algorithm, selector, domain and the private key (never shown).

    ``private`` is what dkimpy takes: a PKCS#1 PEM for RSA, the base64 of the
    32-byte seed for Ed25519. It pickles, so that the compose worker (a child
    process fed through a pipe) signs what it builds; nothing else pickles it.
    """

    algorithm: str
    selector: str
    domain: str
    private: bytes = field(repr=False)

    def __repr__(self) -> str:
        return f"DkimKey({self.algorithm}, {self.selector}._domainkey.{self.domain}, ********)"


def generate_key(algorithm: str) -> bytes:
    """A new private key in dkimpy's form: RSA 2048 (PKCS#1 PEM) or Ed25519 (base64 seed)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    if algorithm == "rsa":
        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
        return rsa_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    if algorithm == "ed25519":
        ed_key = ed25519.Ed25519PrivateKey.generate()
        seed = ed_key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return base64.b64encode(seed)
    raise ValidationError(f"unknown DKIM algorithm {algorithm!r}: choose rsa or ed25519")


def read_key_file(path: str | Path) -> tuple[str, bytes]:
    """(algorithm, private key in dkimpy's form) from a PEM file (RSA or Ed25519, any PEM
    form ``cryptography`` reads, unencrypted). Raises ``ValidationError`` naming the file."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    p = Path(path)
    try:
        with p.open("rb") as fh:
            data = fh.read(MAX_KEY_FILE + 1)
    except OSError as exc:
        raise ValidationError(f"cannot read key file {str(p)!r}: {exc.strerror or exc}") from None
    except ValueError:
        raise ValidationError(f"cannot read key file {str(p)!r}: not a file name") from None
    if len(data) > MAX_KEY_FILE:
        raise ValidationError(f"key file {str(p)!r} is larger than {MAX_KEY_FILE // 1024} KiB")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ValidationError(
            f"key file {str(p)!r} is encrypted: give an unencrypted PEM (it is stored "
            "encrypted with the workspace key)"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise ValidationError(
            f"key file {str(p)!r} holds no PEM private key (RSA or Ed25519)"
        ) from None
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 1024:
            raise ValidationError(
                f"key file {str(p)!r}: RSA {key.key_size} bits is too short for DKIM "
                "(RFC 8301: at least 1024, 2048 recommended)"
            )
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        return "rsa", pem
    if isinstance(key, ed25519.Ed25519PrivateKey):
        seed = key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return "ed25519", base64.b64encode(seed)
    raise ValidationError(
        f"key file {str(p)!r} holds a {type(key).__name__}: DKIM signs with RSA or Ed25519"
    )


def public_key(algorithm: str, private: bytes) -> bytes:
    """The ``p=`` value of the DNS record: base64 of the public key (RFC 6376, RFC 8463)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    if algorithm == "rsa":
        rsa_key = serialization.load_pem_private_key(private, password=None)
        der = rsa_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der)
    seed = base64.b64decode(private)
    raw = (
        ed25519.Ed25519PrivateKey.from_private_bytes(seed)
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    return base64.b64encode(raw)


def dns_record(key: DkimKey) -> tuple[str, str]:
    """(name, TXT value) to publish: ``S._domainkey.D`` and ``v=DKIM1; k=...; p=...``."""
    p = public_key(key.algorithm, key.private).decode("ascii")
    return f"{key.selector}._domainkey.{key.domain}", f"v=DKIM1; k={key.algorithm}; p={p}"


def sign(data: bytes, keys: tuple[DkimKey, ...] | list[DkimKey]) -> bytes:
    """``data`` with one DKIM-Signature header per key in front (relaxed/relaxed).

    Each signature covers the message as composed; a second signature does not
    cover the first (``DKIM-Signature`` is not in ``h=``), so both verify.
    """
    import dkim

    headers = b""
    for key in keys:
        try:
            headers += dkim.sign(
                data,
                key.selector.encode("ascii"),
                key.domain.encode("idna"),
                key.private,
                signature_algorithm=_SIGNATURE_ALGORITHM[key.algorithm],
                canonicalize=(b"relaxed", b"relaxed"),
                include_headers=list(SIGNED_HEADERS),
            )
        except dkim.DKIMException as exc:  # a damaged stored key: name it, never show it
            raise ValidationError(
                f"DKIM signing with {key.selector}._domainkey.{key.domain} failed: "
                f"{type(exc).__name__}"
            ) from None
    return headers + data
