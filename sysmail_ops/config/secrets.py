"""Passwords encrypted at rest.

The Fernet key lives outside the database: in ``SYSMAIL_SECRET_KEY`` or in the
workspace's ``secret.key`` (mode 0600). It is the one thing that cannot be
recreated, so it belongs in the backups. A password may instead be a
reference ``env:NAME``, resolved when it is used.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from sysmail_ops.errors import SecretKeyError, ValidationError
from sysmail_ops.mail.credentials import Secret

ENV_KEY = "SYSMAIL_SECRET_KEY"


class SecretBox:
    """Encrypts and decrypts passwords with the workspace key."""

    def __init__(self, key: bytes | None, origin: str):
        self._fernet = Fernet(key) if key else None
        self._key = key
        self.origin = origin

    def __repr__(self) -> str:
        return f"SecretBox(origin={self.origin!r})"

    @staticmethod
    def ensure_key(path: Path) -> bool:
        """Create the key file (0600) if it is missing and no key is in the environment."""
        if os.environ.get(ENV_KEY) or path.exists():
            return False
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(Fernet.generate_key() + b"\n")
        return True

    @classmethod
    def from_workspace(cls, path: Path) -> SecretBox:
        env = os.environ.get(ENV_KEY)
        if env:
            return cls._checked(env.strip().encode(), f"${ENV_KEY}")
        if not path.exists():
            return cls(None, str(path))
        return cls._checked(path.read_bytes().strip(), str(path))

    @classmethod
    def _checked(cls, key: bytes, origin: str) -> SecretBox:
        try:
            Fernet(key)
        except (ValueError, TypeError):
            raise SecretKeyError(
                f"the secret key in {origin} is not a valid key; restore it from your backup "
                "(or remove it, run `sysmail-ops init` and enter the stored passwords again)"
            ) from None
        return cls(key, origin)

    def _require(self) -> Fernet:
        if self._fernet is None:
            raise SecretKeyError(
                f"the secret key {self.origin} is missing; restore it from your backup "
                "(or run `sysmail-ops init` for a new one and enter the stored passwords again)"
            )
        return self._fernet

    def derive_key(self, purpose: bytes) -> bytes:
        """A 32-byte key for one purpose (HKDF-SHA256): the workspace key signs nothing itself."""
        self._require()
        assert self._key is not None
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose)
        return hkdf.derive(self._key)

    def encrypt(self, secret: Secret) -> str:
        return self._require().encrypt(secret.reveal().encode()).decode("ascii")

    def decrypt(self, token: str, what: str = "a stored password") -> Secret:
        try:
            return Secret(self._require().decrypt(token.encode("ascii")).decode())
        except InvalidToken:
            raise SecretKeyError(
                f"{what} cannot be decrypted with the key in {self.origin}: the key changed or "
                "is not the one it was stored with; restore the key or enter the password again"
            ) from None


def resolve_reference(ref: str) -> Secret:
    """Resolve an ``env:NAME`` password reference at use time."""
    name = ref.removeprefix("env:")
    value = os.environ.get(name)
    if value is None:
        raise SecretKeyError(f"the password reference env:{name} is not set in the environment")
    return Secret(value)


def check_reference(ref: str) -> str:
    """Validate an ``env:NAME`` reference, returning the variable name."""
    name = ref.removeprefix("env:")
    if not name or not name.replace("_", "a").isalnum() or name[0].isdigit():
        raise ValidationError(f"password reference must look like env:NAME, got env:{name!r}")
    return name
