"""One exception root, a subclass per concept.

Every error a user can cause or meet is a ``SysmailError``: the CLI prints its
message on one line and exits 2, the forms show it in the form. Messages never
carry a password. Exceptions pickle (they cross process boundaries), so the
structured ones keep their fields in ``args``.
"""

from __future__ import annotations


class SysmailError(Exception):
    """Root of every error sysmail-ops raises on purpose."""


class WorkspaceError(SysmailError):
    """The workspace folder is missing, unreadable or not initialised."""


class StoreBusyError(SysmailError):
    """Another process held the workspace database for longer than the lock wait."""


class SecretKeyError(SysmailError):
    """The secret key is missing or does not decrypt the stored passwords."""


class ValidationError(SysmailError):
    """Input was refused; nothing was written."""


class NotFoundError(SysmailError):
    """A named thing (account, template, ...) does not exist."""


class LimitError(ValidationError):
    """A fixed limit, such as the 10 system emails, would be exceeded."""


class InUseError(ValidationError):
    """A thing cannot be removed while something else still uses it."""


class TemplateError(ValidationError):
    """A template does not parse, uses an undeclared field, or cannot render a record."""


class InsecureAuthError(SysmailError):
    """AUTH would travel over an unencrypted connection to a non-local host."""


class SMTPError(SysmailError):
    """An SMTP step failed; carries the step and the server's reply."""

    def __init__(self, message: str, step: str = "", code: int | None = None, reply: str = ""):
        super().__init__(message, step, code, reply)
        self.step = step
        self.code = code
        self.reply = reply

    def __str__(self) -> str:
        return str(self.args[0])


class OAuthError(SysmailError):
    """An OAuth2 token could not be had: not authorized yet, revoked, or the provider refused."""


class IMAPError(SysmailError):
    """An IMAP step (connect, tls, login, select, fetch) failed; carries the server's reply."""

    def __init__(self, message: str, step: str = "", reply: str = ""):
        super().__init__(message, step, reply)
        self.step = step
        self.reply = reply

    def __str__(self) -> str:
        return str(self.args[0])


class HeaderInjectionError(ValidationError):
    """A header value from data carried a line break (plain or RFC 2047-encoded)."""


class ReportError(SysmailError):
    """A report notebook's executed output cannot be read or rendered."""


class ReadOnlyError(SysmailError):
    """A change or a send refused: this process is read-only (the console's --read-only)."""


class BadRecordsError(ValidationError):
    """Records of a batch cannot be sent (one line each in ``problems``); nothing was sent."""

    def __init__(self, message: str, problems: list[str] | None = None, bad: int = 0):
        super().__init__(message, problems or [], bad)
        self.problems: list[str] = problems or []
        self.bad = bad  # records found bad (``problems`` may list fewer)

    def __str__(self) -> str:
        return str(self.args[0])
