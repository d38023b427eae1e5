"""What every Admin Console form shares: guarded callbacks and a one-line status.

A widget callback that raises in a kernel leaves a traceback in the kernel log
(or in whatever ``Output`` happens to be capturing), and the user sees nothing.
Here every callback runs inside its form's ``Output`` capture and any exception
becomes ONE line in the form; the text is escaped and any password the form
holds is masked before it is shown.

Stable API (the explorer widget uses it too):

``status_line() -> ipywidgets.HTML``
    An empty status line for a form.

``message(target, text, kind="info")``
    Show ``text`` on one line in ``target`` (an ``HTML`` status line, or an
    ``Output``, whose content it replaces). ``kind`` is ``"info"``, ``"ok"``
    or ``"error"``; the text is HTML-escaped, control characters and line
    breaks are shown escaped, so outside text (a server reply, a subject)
    cannot restyle the form.

``guarded(output, status=None, *, secrets=None)``
    A decorator for callbacks (``button.on_click``, ``widget.observe``): the
    call runs inside ``with output:`` (so a ``display()`` in it lands in the
    form); a ``SysmailError`` shows its message, any other exception shows
    ``Type: message``, both through ``message(status or output, ..., "error")``.
    ``secrets`` is a callable returning the strings to mask (e.g. the text
    typed in a Password widget); they never reach the form. The callback's
    return value is passed back, ``None`` when it failed.

``error_text(exc, secrets=()) -> str``
    The one line ``guarded`` shows for ``exc``.
"""

from __future__ import annotations

import functools
import html
import logging
import re
from collections.abc import Callable, Iterable
from typing import Any, Literal, TypeVar

import ipywidgets as w

from sysmail_ops.errors import SysmailError

__all__ = ["error_text", "guarded", "message", "status_line"]

Kind = Literal["info", "ok", "error"]
F = TypeVar("F", bound=Callable[..., Any])

_log = logging.getLogger(__name__)
_MASK = "********"
_COLOURS: dict[str, str] = {"info": "#444", "ok": "#1b7f3b", "error": "#b00020"}
_ICONS: dict[str, str] = {"info": "", "ok": "\u2714 ", "error": "\u2716 "}
# C0/C1 controls, line/paragraph separators and bidi overrides: shown escaped, never obeyed
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]"
)
_NAMED = {"\t": "\\t", "\n": " / ", "\r": "\\r"}


def _escape_controls(text: str) -> str:
    def one(m: re.Match[str]) -> str:
        c = m.group(0)
        n = ord(c)
        return _NAMED.get(c) or (f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}")

    return _UNSAFE.sub(one, text)


def _mask(text: str, secrets: Iterable[str]) -> str:
    # longest first, so a secret that contains another is masked whole
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, _MASK)
    return text


def status_line() -> w.HTML:
    """An empty one-line status for a form."""
    return w.HTML(value="", layout=w.Layout(min_height="1.6em"))


def message(target: w.HTML | w.Output, text: str, kind: Kind = "info") -> None:
    """Show ``text`` on one line in ``target`` (see the module docstring)."""
    shown = _escape_controls(str(text))
    body = (
        f'<span class="sysmail-{kind}" style="color:{_COLOURS[kind]}">'
        f"{_ICONS[kind]}{html.escape(shown)}</span>"
    )
    if isinstance(target, w.Output):
        # set the outputs directly: works with or without a kernel behind the widget
        target.outputs = (
            {
                "output_type": "display_data",
                "data": {"text/plain": _ICONS[kind] + shown, "text/html": body},
                "metadata": {},
            },
        )
    else:
        target.value = body


def error_text(exc: BaseException, secrets: Iterable[str] = ()) -> str:
    """The one line a form shows for ``exc``, with ``secrets`` masked."""
    if isinstance(exc, SysmailError):
        text = str(exc.args[0]) if exc.args else type(exc).__name__
    else:
        detail = str(exc).strip()
        text = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return _mask(first, secrets)


def guarded(
    output: w.Output,
    status: w.HTML | None = None,
    *,
    secrets: Callable[[], Iterable[str]] | None = None,
) -> Callable[[F], F]:
    """Wrap a callback so it runs in ``output`` and a failure is one line in the form."""
    target: w.HTML | w.Output = status if status is not None else output

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            # caught INSIDE the capture: an exception leaving ``with output`` would have
            # ipywidgets print its traceback into the form
            with output:
                try:
                    return fn(*args, **kwargs)
                except Exception as exc:
                    hidden = list(secrets()) if secrets is not None else []
                    line = error_text(exc, hidden)
                    # the kernel log gets the type only: no traceback, no message (it may
                    # hold outside text), never a password
                    _log.debug("form callback %s failed: %s", fn.__name__, type(exc).__name__)
                    message(target, line, "error")
                    return None

        return call  # type: ignore[return-value]

    return decorate
