"""What a login presents: a password or an OAuth2 access token, held so that it never shows."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["MASK", "Secret", "Token"]

MASK = "********"


class Secret:
    """A clear password in memory: never shown by ``repr``/``str``."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return f"Secret({MASK})"

    __str__ = __repr__

    def __reduce__(self) -> tuple[type, tuple[str]]:
        raise TypeError("a Secret is not pickled")


class Token(Secret):
    """An OAuth2 access token for SASL XOAUTH2, never shown.

    ``renew`` (given by whoever issued it) fetches a fresh token, for the login
    whose server refused this one although it looked valid (revoked, or a
    clock ahead of ours).
    """

    __slots__ = ("_renew",)

    def __init__(self, value: str, renew: Callable[[], Token] | None = None):
        super().__init__(value)
        self._renew = renew

    def renewed(self) -> Token | None:
        """A fresh token from the issuer, or None when there is no way to ask."""
        return self._renew() if self._renew is not None else None

    def __repr__(self) -> str:
        return f"Token({MASK})"

    __str__ = __repr__
