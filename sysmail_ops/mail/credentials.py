"""What a login presents: a password held so that it never shows."""

from __future__ import annotations

__all__ = ["MASK", "Secret"]

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
