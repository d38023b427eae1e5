"""Passwords encrypted at rest.

The Fernet key lives outside the database: in ``SYSMAIL_SECRET_KEY`` or in the
workspace's ``secret.key`` (mode 0600). It is the one thing that cannot be
recreated, so it belongs in the backups. A password may instead be a
reference ``env:NAME``, resolved when it is used.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from sysmail_ops.errors import SecretKeyError, ValidationError
from sysmail_ops.mail.credentials import Secret

ENV_KEY = "SYSMAIL_SECRET_KEY"


class SecretBox:
    """Encrypts and decrypts passwords with the workspace key."""

    def __init__(self, key: bytes | None, origin: str, trouble: str | None = None):
        self._fernet = Fernet(key) if key else None
        self._key = key
        self.origin = origin
        self._trouble = trouble  # why a key file that is there cannot be read

    def __repr__(self) -> str:
        return f"SecretBox(origin={self.origin!r})"

    @staticmethod
    def ensure_key(path: Path) -> bool:
        """Create the key file (0600) if it is missing and no key is in the environment.

        A key file that is there but cannot be read (a folder, a dangling or
        looping link, no permission) is a ``SecretKeyError``: it is never replaced.
        """
        if os.environ.get(ENV_KEY):
            return False
        if _read_key(path) is not None:
            return False
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:  # made by another init since we looked: read it as it is
            _read_key(path)
            return False
        with os.fdopen(fd, "wb") as fh:
            fh.write(Fernet.generate_key() + b"\n")
        return True

    @classmethod
    def from_workspace(cls, path: Path) -> SecretBox:
        env = os.environ.get(ENV_KEY)
        if env:
            return cls._checked(env.strip().encode(), f"${ENV_KEY}")
        try:
            key = _read_key(path)
        except _KeyTrouble as exc:  # told when a secret is needed, as a missing key is
            return cls(None, str(path), exc.trouble)
        if key is None:
            return cls(None, str(path))
        return cls._checked(key.strip(), str(path))

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
            raise _KeyTrouble(self.origin, self._trouble)
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


KEY_READ_LIMIT = 4096  # a key is 44 bytes; a file that never ends is not read to its end


class _KeyTrouble(SecretKeyError):
    """The key file is missing, or there and unreadable: one message, with the reason."""

    def __init__(self, origin: str, trouble: str | None = None):
        self.trouble = trouble
        if trouble is None:
            super().__init__(
                f"the secret key {origin} is missing; restore it from your backup "
                "(or run `sysmail-ops init` for a new one and enter the stored passwords again)"
            )
        else:
            super().__init__(
                f"the secret key {origin} is missing ({trouble}); restore it from your backup "
                "(or remove it, run `sysmail-ops init` for a new one and enter the stored "
                "passwords again)"
            )


def _read_key(path: Path) -> bytes | None:
    """The key file's bytes, ``None`` if there is none; ``_KeyTrouble`` if it is there unread."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not hang us
    except FileNotFoundError:
        if os.path.islink(path):
            raise _KeyTrouble(str(path), "it is a link to a file that does not exist") from None
        return None
    except OSError as exc:
        raise _KeyTrouble(str(path), f"it cannot be read: {_reason(exc)}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise _KeyTrouble(str(path), "it is a folder, not a file")
        if not stat.S_ISREG(mode):
            raise _KeyTrouble(str(path), "it is not a regular file")
        return os.read(fd, KEY_READ_LIMIT)
    except OSError as exc:
        raise _KeyTrouble(str(path), f"it cannot be read: {_reason(exc)}") from None
    finally:
        os.close(fd)


def _reason(exc: OSError) -> str:
    return (exc.strerror or type(exc).__name__).lower()


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
