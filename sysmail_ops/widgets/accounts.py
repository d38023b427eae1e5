"""Email Management: bind, edit, test and remove the system emails (at most 10).

The form calls ``config.accounts`` and ``sending.connection_test``; every rule
(limits, defaults, checks) lives there. The password is a ``Password`` widget
that is never filled from the store and is emptied after every Save, so it
cannot end up in a saved notebook.
"""

from __future__ import annotations

import html
import threading
from typing import Any

import ipywidgets as w

from sysmail_ops.config import accounts as api
from sysmail_ops.config import oauth, signing
from sysmail_ops.config import providers as presets
from sysmail_ops.config.workspace import Workspace
from sysmail_ops.errors import LimitError, ValidationError
from sysmail_ops.records import received
from sysmail_ops.sending import connection_test as conntest
from sysmail_ops.widgets.common import error_text, guarded, message, status_line

__all__ = ["NEW", "EmailManagement", "email_management"]

NEW = "(new system email)"
_WIDE = w.Layout(width="34em")
_STYLE = {"description_width": "13em"}
_AUTO = w.Layout(width="auto")
_DEFAULT_IMAP = "(default: ssl)"
_NO_PRESET = "(none: type the server)"


def email_management(home: str | None = None) -> EmailManagement:
    """The Email Management form on the workspace ``home`` (None: $SYSMAIL_HOME)."""
    return EmailManagement(Workspace.open(home))


def _text(label: str, placeholder: str = "") -> w.Text:
    return w.Text(description=label, placeholder=placeholder, layout=_WIDE, style=_STYLE)


def _int(label: str) -> w.BoundedIntText:
    return w.BoundedIntText(
        value=0, min=0, max=65535, description=label, layout=w.Layout(width="22em"), style=_STYLE
    )


def _on_off(value: bool) -> str:
    return "on" if value else "off"


class EmailManagement(w.VBox):
    """The bound system emails, and a form to add, edit, test or remove one."""

    def __init__(self, ws: Workspace):
        self.ws = ws
        self.output = w.Output()
        self.status = status_line()
        self.usage = w.HTML()
        self.table = w.HTML()
        self.pick = w.Dropdown(description="System email", options=[NEW], style=_STYLE)

        self.name = _text("Name", "short unique name, e.g. service")
        self.kind = w.Dropdown(
            description="Kind",
            options=[(label, key) for key, label in api.KIND_LABELS.items()],
            value="customer_service",
            style=_STYLE,
        )
        self.description = _text("Description", "optional")
        self.from_address = _text("Email account", "the From address")
        self.display_name = _text("Display name", "name shown in From (optional)")
        self.login = _text("Login", "default: the email account")
        self.password = w.Password(description="Password", layout=_WIDE, style=_STYLE)
        self.no_password = w.Checkbox(
            description="no login (relay without a password)", indent=False, layout=_AUTO
        )
        self.preset = w.Dropdown(
            description="Provider preset",
            options=[(_NO_PRESET, _NO_PRESET)]
            + [(p.label, p.name) for p in presets.providers().values()],
            value=_NO_PRESET,
            style=_STYLE,
        )
        self.preset_hint = w.HTML()
        self.smtp_host = _text("SMTP server", "smtp.example.com")
        self.smtp_security = w.Dropdown(
            description="Security", options=list(api.SECURITIES), value="starttls", style=_STYLE
        )
        self.smtp_port = _int("SMTP port")
        self.smtp_port.value = api.DEFAULT_PORTS["starttls"]
        self.sent_archiving = w.Checkbox(
            description="Sent Email Archiving", indent=False, layout=_AUTO
        )
        self.received_archiving = w.Checkbox(
            description="Received Email Archiving", indent=False, layout=_AUTO
        )

        # rarely used: in a collapsed section
        self.password_env = _text("Password from env", "NAME of an environment variable")
        self.ca_bundle = _text("CA bundle (PEM)", "for a private relay")
        self.allow_insecure_auth = w.Checkbox(
            description="allow AUTH over an unencrypted connection to a non-local host",
            indent=False,
            layout=_AUTO,
        )
        self.imap_host = _text("IMAP host", "default: derived from the SMTP server")
        self.imap_port = _int("IMAP port (0: default)")
        self.imap_security = w.Dropdown(
            description="IMAP security",
            options=[_DEFAULT_IMAP, *api.SECURITIES],
            value=_DEFAULT_IMAP,
            style=_STYLE,
        )
        self.rate_limit = _int("Messages/minute (0: no limit)")
        self.max_size = w.BoundedFloatText(
            value=0, min=0, max=2048, description="Largest message, MB (0: default)",
            layout=w.Layout(width="22em"), style=_STYLE,
        )  # fmt: skip
        self.unsubscribe_mailto = _text("Unsubscribe mailto", "List-Unsubscribe address")
        self.unsubscribe_url = _text("Unsubscribe URL", "https://...")
        self.advanced = w.Accordion(
            children=[
                w.VBox(
                    [
                        self.password_env,
                        self.ca_bundle,
                        self.allow_insecure_auth,
                        self.imap_host,
                        self.imap_port,
                        self.imap_security,
                        self.rate_limit,
                        self.max_size,
                        self.unsubscribe_mailto,
                        self.unsubscribe_url,
                    ]
                )
            ],
            selected_index=None,
        )
        self.advanced.set_title(0, "More settings: IMAP, CA bundle, insecure AUTH, rate limit, ...")

        # The signature ({{ sender.signature }}) is saved with Save; DKIM acts at once.
        self.signature_html = w.Textarea(
            description="Signature, HTML", placeholder="<p>Kind regards,<br>Customer service</p>",
            rows=4, layout=_WIDE, style=_STYLE,
        )  # fmt: skip
        self.signature_text = w.Textarea(
            description="Signature, text", placeholder="Kind regards,\nCustomer service",
            rows=3, layout=_WIDE, style=_STYLE,
        )  # fmt: skip
        self.signature_auto = w.Checkbox(
            description="add it under each message whose template does not place it",
            value=True, indent=False, layout=_AUTO,
        )  # fmt: skip
        self.dkim_selector = _text("DKIM selector", "e.g. mail2026")
        self.dkim_algorithm = w.Dropdown(
            description="DKIM key", options=[("RSA 2048", "rsa"), ("Ed25519", "ed25519")],
            style=_STYLE,
        )  # fmt: skip
        self.dkim_make = w.Button(description="Make DKIM key", icon="certificate")
        self.dkim_off = w.Button(description="DKIM off", icon="ban")
        self.dkim_state = w.HTML()
        self._dkim_off_armed = False  # the first click asks, the second deletes the keys
        self.signing_box = w.Accordion(
            children=[
                w.VBox(
                    [
                        self.signature_html,
                        self.signature_text,
                        self.signature_auto,
                        self.dkim_selector,
                        self.dkim_algorithm,
                        w.HBox([self.dkim_make, self.dkim_off]),
                        self.dkim_state,
                    ]
                )
            ],
            selected_index=None,
        )
        self.signing_box.set_title(0, "Signature and DKIM")

        # OAuth2 (XOAUTH2) instead of a password: Microsoft 365, Google Workspace, ...
        self.use_oauth = w.Checkbox(
            description="log in with OAuth2 (XOAUTH2) instead of a password",
            indent=False,
            layout=_AUTO,
        )
        self.oauth_provider = w.Dropdown(
            description="Provider", options=list(oauth.PROVIDERS), style=_STYLE
        )
        self.oauth_flow = w.Dropdown(description="Flow", style=_STYLE)
        self.oauth_client_id = _text("Client ID", "application (client) ID")
        self.oauth_tenant = _text("Tenant", "Microsoft directory (tenant) ID or domain")
        self.oauth_endpoint = _text("Endpoint", "authority host or issuer URL (optional)")
        self.oauth_secret = w.Password(description="Client secret", layout=_WIDE, style=_STYLE)
        self.oauth_key_file = _text("Service-account key", "path of the JSON key file")
        self.authorize = w.Button(description="Authorize", icon="key")
        self.oauth_prompt = w.HTML()
        self.oauth_box = w.Accordion(
            children=[
                w.VBox(
                    [
                        self.use_oauth,
                        self.oauth_provider,
                        self.oauth_flow,
                        self.oauth_client_id,
                        self.oauth_tenant,
                        self.oauth_endpoint,
                        self.oauth_secret,
                        self.oauth_key_file,
                        w.HBox([self.authorize]),
                        self.oauth_prompt,
                    ]
                )
            ],
            selected_index=None,
        )
        self.oauth_box.set_title(0, "OAuth2: Microsoft 365, Google Workspace (README)")
        self._flows()

        self.save = w.Button(description="Save", button_style="primary", icon="save")
        self.test = w.Button(description="Test connection", icon="plug")
        self.test_to = w.Text(placeholder="also send a test message to (optional)")
        self.remove = w.Button(description="Remove", button_style="danger", icon="trash")
        self.confirm_remove = w.Button(description="Yes, remove it", button_style="danger")
        self.cancel_remove = w.Button(description="Cancel")
        self.confirm_box = w.HBox([self.confirm_remove, self.cancel_remove])
        self.confirm_box.layout.display = "none"

        def secrets() -> list[str]:
            return [self.password.value, self.oauth_secret.value]

        guard = guarded(self.output, self.status, secrets=secrets)
        self.pick.observe(guard(self._on_pick), names="value")
        self.kind.observe(guard(self._on_kind), names="value")
        self.smtp_security.observe(guard(self._on_security), names="value")
        self.preset.observe(guard(self._on_preset), names="value")
        self.sent_archiving.observe(guard(self._on_archiving), names="value")
        self.received_archiving.observe(guard(self._on_archiving), names="value")
        self.save.on_click(guard(self._on_save))
        self.test.on_click(guard(self._on_test))
        self.remove.on_click(guard(self._on_remove))
        self.confirm_remove.on_click(guard(self._on_confirm_remove))
        self.cancel_remove.on_click(guard(self._on_cancel_remove))
        self.oauth_provider.observe(guard(lambda _c: self._flows()), names="value")
        self.authorize.on_click(guard(self._on_authorize))
        self.dkim_make.on_click(guard(self._on_dkim_make))
        self.dkim_off.on_click(guard(self._on_dkim_off))
        self._authorizing: threading.Thread | None = None
        self._loading = False

        super().__init__(
            [
                w.HTML("<h3>System emails</h3>"),
                self.usage,
                self.table,
                w.HTML("<h3>Add or edit</h3>"),
                self.pick,
                self.name,
                self.kind,
                self.description,
                self.from_address,
                self.display_name,
                self.login,
                self.password,
                self.no_password,
                self.preset,
                self.preset_hint,
                self.smtp_host,
                self.smtp_security,
                self.smtp_port,
                self.sent_archiving,
                self.received_archiving,
                self.advanced,
                self.signing_box,
                self.oauth_box,
                w.HBox([self.save, self.test, self.test_to, self.remove]),
                self.confirm_box,
                self.status,
                self.output,
            ]
        )
        guard(self.refresh)()
        guard(self._load)(None)

    # --- reading the store ----------------------------------------------------------------

    def refresh(self) -> None:
        """Reload the table, the usage line and the picker from the store."""
        found = api.list_accounts(self.ws)
        used, limit = api.usage(self.ws)
        self.usage.value = f"<b>{used} of {limit} used</b>"
        fetched = {r["account"]: r for r in received.status(self.ws)}
        rows = []
        for a in found:
            tests = conntest.recent_tests(self.ws, a.name, 1)
            if not tests:
                verdict = "never tested"
            else:
                t = tests[0]
                when = str(t["tested_at"])[:16].replace("T", " ")
                verdict = f"{'ok' if t['ok'] else 'FAILED at ' + str(t['step'])}, {when} UTC"
            cells = [
                a.name,
                api.KIND_LABELS[a.kind],
                a.from_address,
                f"{a.smtp_host}:{a.smtp_port} ({a.smtp_security})",
                _on_off(a.sent_archiving),
                _on_off(a.received_archiving),
                verdict,
                _fetch_cell(a.received_archiving, fetched.get(a.name)),
            ]
            rows.append(
                "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>"
            )
        head = "".join(
            f"<th>{h}</th>"
            for h in (
                "Name",
                "Kind",
                "Email account",
                "SMTP server",
                "Sent archiving",
                "Received archiving",
                "Last test",
                "Last fetch (IMAP)",
            )
        )
        body = "".join(rows) or '<tr><td colspan="8">no system email bound yet</td></tr>'
        self.table.value = (
            '<table class="sysmail-accounts" style="border-collapse:collapse" border="1" '
            f'cellpadding="4"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
        )
        current = self.pick.value
        names = [a.name for a in found]
        self._loading = True
        try:
            self.pick.options = [NEW, *names]
            self.pick.value = current if current in names else NEW
        finally:
            self._loading = False
        self._limit_note()

    def _limit_note(self) -> None:
        used, limit = api.usage(self.ws)
        full = self.pick.value == NEW and used >= limit
        self.save.disabled = full
        if full:
            message(
                self.status,
                f"{used} of {limit} system emails are bound: remove one before adding another",
                "info",
            )

    def _load(self, _change: Any) -> None:
        """Fill the form from the picked account (never its password), or empty it."""
        self._loading = True
        try:
            self.password.value = ""
            self.test_to.value = ""
            self.confirm_box.layout.display = "none"
            editing = self.pick.value != NEW
            self.name.disabled = editing
            self.test.disabled = self.remove.disabled = not editing
            if not editing:
                texts = (
                    self.name, self.description, self.from_address, self.display_name,
                    self.login, self.smtp_host, self.password_env, self.ca_bundle,
                    self.imap_host, self.unsubscribe_mailto, self.unsubscribe_url,
                )  # fmt: skip
                for t in texts:
                    t.value = ""
                self.kind.value = "customer_service"
                self.smtp_security.value = "starttls"
                self.smtp_port.value = api.DEFAULT_PORTS["starttls"]
                self.no_password.value = self.allow_insecure_auth.value = False
                self.imap_port.value = self.rate_limit.value = 0
                self.max_size.value = 0
                self.preset.value = _NO_PRESET
                self.imap_security.value = _DEFAULT_IMAP
                default = api.ARCHIVING_BY_KIND["customer_service"]
                self.sent_archiving.value = self.received_archiving.value = default
                self.password.placeholder = ""
                self.signature_html.value = self.signature_text.value = ""
                self.signature_auto.value = True
                self._load_oauth(None)
            else:
                a = api.get_account(self.ws, self.pick.value)
                self.name.value = a.name
                self.kind.value = a.kind
                self.description.value = a.description or ""
                self.from_address.value = a.from_address
                self.display_name.value = a.display_name or ""
                self.login.value = a.login
                self.smtp_host.value = a.smtp_host
                self.smtp_security.value = a.smtp_security
                self.smtp_port.value = a.smtp_port
                self.sent_archiving.value = a.sent_archiving
                self.received_archiving.value = a.received_archiving
                self.no_password.value = a.auth_source == "none"
                self.password_env.value = a.password_env or ""
                self.ca_bundle.value = a.ca_bundle or ""
                self.allow_insecure_auth.value = a.allow_insecure_auth
                self.imap_host.value = a.imap_host or ""
                self.imap_port.value = a.imap_port or 0
                self.imap_security.value = a.imap_security or _DEFAULT_IMAP
                self.rate_limit.value = a.rate_limit_per_minute or 0
                self.max_size.value = (a.max_message_bytes or 0) / presets.MB
                self.preset.value = _NO_PRESET
                self.unsubscribe_mailto.value = a.unsubscribe_mailto or ""
                self.unsubscribe_url.value = a.unsubscribe_url or ""
                self.password.placeholder = (
                    "stored: leave empty to keep it" if a.auth_source == "stored" else ""
                )
                self.signature_html.value = a.signature_html or ""
                self.signature_text.value = a.signature_text or ""
                self.signature_auto.value = a.signature_auto
                self._load_oauth(a)
            self._show_dkim()
            self.preset_hint.value = ""
            self._show_default()
        finally:
            self._loading = False

    def _load_oauth(self, a: api.Account | None) -> None:
        """The OAuth2 settings of ``a`` (never its secret, key or tokens), or empty ones."""
        self.oauth_secret.value = self.oauth_key_file.value = ""
        self.use_oauth.value = a is not None and a.auth == "oauth2"
        self.oauth_provider.value = (a.oauth_provider if a else None) or oauth.PROVIDERS[0]
        self._flows()
        if a is not None and a.oauth_flow in self.oauth_flow.options:
            self.oauth_flow.value = a.oauth_flow
        self.oauth_client_id.value = (a.oauth_client_id if a else None) or ""
        self.oauth_tenant.value = (a.oauth_tenant if a else None) or ""
        self.oauth_endpoint.value = (a.oauth_endpoint if a else None) or ""
        self.authorize.disabled = not self.use_oauth.value
        self.oauth_prompt.value = (
            f"<small>{html.escape(oauth.status(self.ws, a.name))}</small>"
            if a is not None and a.auth == "oauth2"
            else ""
        )

    def _flows(self) -> None:
        flows = oauth.FLOWS[self.oauth_provider.value]
        self.oauth_flow.options = list(flows)
        self.oauth_flow.value = oauth.DEFAULT_FLOW[self.oauth_provider.value]

    def _oauth_values(self, was: api.Account | None) -> dict[str, Any]:
        """The auth fields for add/edit: OAuth2 settings and secrets, or back to a password."""
        if not self.use_oauth.value:
            if was is None or was.auth != "oauth2":
                return {}
            typed = self.password.value or self.password_env.value.strip()
            keep = was.auth_source != "none" and not self.no_password.value
            return {"auth": "password" if typed or keep else "none"}
        values: dict[str, Any] = {
            "auth": "oauth2",
            "oauth_provider": self.oauth_provider.value,
            "oauth_flow": self.oauth_flow.value,
            "oauth_client_id": self.oauth_client_id.value,
            "oauth_tenant": self.oauth_tenant.value,
            "oauth_endpoint": self.oauth_endpoint.value,
        }
        if self.oauth_secret.value:
            values["oauth_client_secret"] = self.oauth_secret.value
        path = self.oauth_key_file.value.strip()
        if path:
            try:
                with open(path, encoding="utf-8") as fh:
                    values["oauth_key"] = fh.read(64 * 1024)
            except (OSError, UnicodeDecodeError) as exc:
                why = getattr(exc, "strerror", None) or type(exc).__name__
                raise ValidationError(f"service-account key {path}: {why}") from None
        return values

    def _on_authorize(self, _button: Any) -> None:
        """Run the account's flow beside the kernel: the device code and URL (or the sign-in
        link) show in the form while it waits; the verdict replaces them."""
        if self.pick.value == NEW:
            raise ValidationError("save the system email before authorizing it")
        a = api.get_account(self.ws, self.pick.value)
        if a.auth != "oauth2":
            raise ValidationError(f"{a.name} logs in with {a.auth}: tick OAuth2 and Save first")
        if self._authorizing is not None and self._authorizing.is_alive():
            raise ValidationError("an authorization is already waiting: finish it first")

        def say(line: str) -> None:
            text = html.escape(line)
            for word in line.split():
                if word.startswith("https://") or word.startswith("http://"):
                    link = html.escape(word, quote=True)
                    text = text.replace(
                        html.escape(word),
                        f'<a href="{link}" target="_blank" rel="noopener">{html.escape(word)}</a>',
                    )
            self.oauth_prompt.value = f"<b>{text}</b>"

        def run() -> None:
            try:
                verdict = oauth.authorize(self.ws, a.oauth, say=say)
            except Exception as exc:  # shown in the form, as every callback's error
                self.oauth_prompt.value = ""
                message(self.status, error_text(exc), "error")
                return
            self.oauth_prompt.value = f"<small>{html.escape(oauth.status(self.ws, a.name))}</small>"
            message(self.status, verdict, "ok")

        message(self.status, f"authorizing {a.name}...", "info")
        self._authorizing = threading.Thread(target=run, daemon=True, name="oauth-authorize")
        self._authorizing.start()

    def _show_default(self) -> None:
        """Each archiving switch names the default of the kind chosen."""
        label = api.KIND_LABELS[self.kind.value]
        default = _on_off(api.ARCHIVING_BY_KIND[self.kind.value])
        for box, what in ((self.sent_archiving, "Sent"), (self.received_archiving, "Received")):
            box.description = f"{what} Email Archiving (default for {label}: {default})"

    # --- callbacks --------------------------------------------------------------------------

    def _on_pick(self, change: Any) -> None:
        if self._loading:
            return
        self.status.value = ""
        self._load(change)
        self._limit_note()

    def _on_kind(self, _change: Any) -> None:
        self._show_default()
        if self._loading or self.pick.value != NEW:
            return
        default = api.ARCHIVING_BY_KIND[self.kind.value]  # a new account starts on the default
        self.sent_archiving.value = self.received_archiving.value = default

    def _on_security(self, _change: Any) -> None:
        if not self._loading and self.smtp_port.value in api.DEFAULT_PORTS.values():
            self.smtp_port.value = api.DEFAULT_PORTS[self.smtp_security.value]

    def _on_preset(self, _change: Any) -> None:
        """A provider preset fills the servers and the size limit (the form can still change
        them); its hint says what the provider asks for (app password, OAuth2, ...)."""
        if self._loading or self.preset.value == _NO_PRESET:
            self.preset_hint.value = ""
            return
        p = presets.get_provider(self.preset.value)
        values = p.account_values()
        self._loading = True
        try:
            self.smtp_host.value = values["smtp_host"]
            self.smtp_security.value = values["smtp_security"]
            self.smtp_port.value = values["smtp_port"]
            self.imap_host.value = values["imap_host"]
            self.imap_security.value = values["imap_security"]
            self.imap_port.value = values["imap_port"]
            self.max_size.value = (values.get("max_message_bytes") or 0) / presets.MB
        finally:
            self._loading = False
        self.preset_hint.value = (
            f"<small>{html.escape(p.label)}: recommended login {html.escape(p.auth)}. "
            f"{html.escape(p.hint)}</small>"
        )

    def _on_archiving(self, _change: Any) -> None:
        """For a bound account a switch applies at once, as a switch should."""
        if self._loading or self.pick.value == NEW:
            return
        a = api.set_archiving(
            self.ws,
            self.pick.value,
            sent=self.sent_archiving.value,
            received=self.received_archiving.value,
        )
        self.refresh()
        message(
            self.status,
            f"{a.name}: Sent Email Archiving {_on_off(a.sent_archiving)}, "
            f"Received Email Archiving {_on_off(a.received_archiving)}",
            "ok",
        )

    def _show_dkim(self) -> None:
        """The picked account's DKIM state: the TXT records to publish, or off."""
        self._dkim_off_armed = False
        self.dkim_off.description = "DKIM off"
        editing = self.pick.value != NEW
        self.dkim_make.disabled = self.dkim_off.disabled = not editing
        if not editing:
            self.dkim_state.value = "<small>DKIM: bind the system email first.</small>"
            return
        records = signing.dkim_records(self.ws, self.pick.value)
        if not records:
            self.dkim_state.value = "<small>DKIM signing is off.</small>"
            return
        rows = "".join(
            f"<li><code>{html.escape(name)} TXT &quot;{html.escape(value)}&quot;</code></li>"
            for name, value in records
        )
        self.dkim_state.value = (
            f"<small>DKIM signing on. Publish in DNS before sending:</small><ul>{rows}</ul>"
        )

    def _on_dkim_make(self, _button: Any) -> None:
        if self.pick.value == NEW:
            raise ValidationError("save the system email before making its DKIM key")
        a, key = signing.set_dkim(
            self.ws,
            self.pick.value,
            selector=self.dkim_selector.value.strip(),
            algorithm=self.dkim_algorithm.value,
        )
        self.dkim_selector.value = ""
        self._show_dkim()
        message(
            self.status,
            f"{a.name}: {key.algorithm} key made and stored encrypted (selector {key.selector}, "
            f"d={key.domain}); publish its DNS TXT record before sending",
            "ok",
        )

    def _on_dkim_off(self, _button: Any) -> None:
        if self.pick.value == NEW:
            return
        if not self._dkim_off_armed:
            self._dkim_off_armed = True
            self.dkim_off.description = "Delete the keys?"
            message(self.status, "click again to stop signing and delete the DKIM keys", "info")
            return
        a = signing.dkim_off(self.ws, self.pick.value)
        self._show_dkim()
        message(
            self.status,
            f"{a.name}: DKIM signing off, keys deleted (remove the DNS records too)",
            "ok",
        )

    def _fields(self) -> dict[str, Any]:
        """Every field as the library takes it; empty text clears an optional field."""
        return {
            "kind": self.kind.value,
            "description": self.description.value,
            "from_address": self.from_address.value,
            "display_name": self.display_name.value,
            "login": self.login.value,
            "smtp_host": self.smtp_host.value,
            "smtp_security": self.smtp_security.value,
            "smtp_port": self.smtp_port.value or None,
            "sent_archiving": self.sent_archiving.value,
            "received_archiving": self.received_archiving.value,
            "ca_bundle": self.ca_bundle.value,
            "allow_insecure_auth": self.allow_insecure_auth.value,
            "imap_host": self.imap_host.value,
            # 0 (and the default security) set a bound account back to the default.
            "imap_port": self.imap_port.value,
            "imap_security": "ssl"
            if self.imap_security.value == _DEFAULT_IMAP
            else self.imap_security.value,
            "rate_limit_per_minute": self.rate_limit.value,
            "max_message_bytes": int(self.max_size.value * presets.MB),
            "unsubscribe_mailto": self.unsubscribe_mailto.value,
            "unsubscribe_url": self.unsubscribe_url.value,
            "signature_html": self.signature_html.value,  # empty: no signature part
            "signature_text": self.signature_text.value,
            "signature_auto": self.signature_auto.value,
        }

    def _password(self) -> tuple[str | None, str | None, bool]:
        """(password, reference, clear): what the password widgets ask for."""
        typed = self.password.value
        env = self.password_env.value.strip()
        if self.no_password.value:
            if typed or env:
                raise ValidationError("a password was given and 'no login' is ticked: choose one")
            return None, None, True
        if env:
            if typed:
                raise ValidationError("give either a password or an environment variable, not both")
            return None, f"env:{env}", False
        return (typed or None), None, False

    def _on_save(self, _button: Any) -> None:
        try:
            password, ref, no_login = self._password()
            values = self._fields()
            if self.pick.value == NEW:
                used, limit = api.usage(self.ws)
                if used >= limit:
                    raise LimitError(
                        f"{used} of {limit} system emails are bound: remove one before "
                        "adding another"
                    )
                if password is None and ref is None and not no_login and not self.use_oauth.value:
                    raise ValidationError(
                        "no password given: type it, name an environment variable, "
                        "or tick 'no login' for a relay without a password"
                    )
                values = {k: v for k, v in values.items() if v not in (None, "")}
                values.update({k: v for k, v in self._oauth_values(None).items() if v != ""})
                a = api.add_account(
                    self.ws,
                    self.name.value.strip(),
                    password=password if not no_login else "",
                    password_ref=ref,
                    **values,
                )
                verb = "bound"
            else:
                was = api.get_account(self.ws, self.pick.value)
                clear = no_login and was.auth_source != "none"
                a = api.edit_account(
                    self.ws,
                    self.pick.value,
                    password=password,
                    password_ref=ref if ref != f"env:{was.password_env}" else None,
                    clear_password=clear and not self.use_oauth.value,
                    **{**values, **self._oauth_values(was)},
                )
                verb = "saved"
        finally:
            self.password.value = ""  # never kept in the widget, whatever happened
            self.oauth_secret.value = ""
        self.refresh()
        self._loading = True
        try:
            self.pick.value = a.name
        finally:
            self._loading = False
        self._load(None)
        used, limit = api.usage(self.ws)
        hints = "; ".join(a.hints())
        text = f"{verb} {a.name} ({a.from_address}); {used} of {limit} used"
        message(self.status, f"{text}. Note: {hints}" if hints else text, "ok")

    def _on_test(self, _button: Any) -> None:
        if self.pick.value == NEW:
            raise ValidationError("save the system email before testing it")
        message(self.status, f"testing {self.pick.value}...", "info")
        r = conntest.test_account(self.ws, self.pick.value, send_to=self.test_to.value.strip())
        self.refresh()
        if r.ok:
            greeting = f" (server: {r.greeting})" if r.greeting else ""
            message(self.status, f"{r.account}: OK, {r.message}{greeting}", "ok")
        else:
            code = f" {r.code}" if r.code else ""
            message(
                self.status,
                f"{r.account}: connection test FAILED at step '{r.step}'{code}: {r.message}",
                "error",
            )

    def _on_remove(self, _button: Any) -> None:
        if self.pick.value == NEW:
            return
        self.confirm_box.layout.display = "flex"
        message(self.status, f"remove {self.pick.value}? It cannot be undone.", "info")

    def _on_cancel_remove(self, _button: Any) -> None:
        self.confirm_box.layout.display = "none"
        self.status.value = ""

    def _on_confirm_remove(self, _button: Any) -> None:
        name = self.pick.value
        self.confirm_box.layout.display = "none"
        if name == NEW:
            return
        api.remove_account(self.ws, name)
        self.refresh()
        self._load(None)
        used, limit = api.usage(self.ws)
        message(self.status, f"removed {name}; {used} of {limit} used", "ok")


def _fetch_cell(on: bool, st: dict[str, Any] | None) -> str:
    """Received archiving's last fetch for the table: when and how much, or its error."""
    if not on:
        return "-"
    if st is None or st["last_fetch_at"] is None:
        return "never fetched (sysmail-ops archive fetch)"
    when = str(st["last_fetch_at"])[:16] + " UTC"
    ok_at, err_at = st["last_ok_at"], st["last_error_at"]
    if st["last_error"] and (ok_at is None or (err_at is not None and err_at >= ok_at)):
        return f"FAILED {when}: {str(st['last_error'])[:120]}"
    return f"{when}, {st['last_fetched'] or 0} new, {st['total_fetched']} in all"
