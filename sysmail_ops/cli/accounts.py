"""`sysmail-ops accounts ...`: bind, list, edit, test system emails."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from sysmail_ops.cli.common import on_off, open_workspace
from sysmail_ops.cli.output import print_fields, print_json, print_table, safe, warn
from sysmail_ops.config import accounts as api
from sysmail_ops.config import oauth, signing
from sysmail_ops.config import providers as presets
from sysmail_ops.errors import ValidationError
from sysmail_ops.mail.credentials import Secret
from sysmail_ops.sending import connection_test as conntest


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("accounts", help="bind, list, edit and test system emails (at most 10)")
    acts = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    add = acts.add_parser("add", help="bind a new system email")
    add.add_argument("name", help="short unique name used on the command line")
    _fields(add, required=True)
    add.add_argument(
        "--provider",
        metavar="P",
        help="fill SMTP/IMAP host, port, security and size limit from a preset "
        "(`accounts providers`); explicit options still win",
    )
    add.add_argument(
        "--detect",
        action="store_true",
        help="look up the address's MX records (DNS) to pick a preset",
    )
    _password_options(add)
    _oauth_options(add)
    add.set_defaults(handler=cmd_add)

    prov = acts.add_parser("providers", help="list the provider presets (or show one)")
    prov.add_argument("provider", nargs="?", help="show this preset in full")
    prov.add_argument("--json", action="store_true", help="print JSON")
    prov.set_defaults(handler=cmd_providers)

    dk = acts.add_parser(
        "dkim",
        help="DKIM signing: make or import a key, print the DNS TXT record; --off stops",
    )
    dk.add_argument("name")
    dk.add_argument("--selector", metavar="S", help="DKIM selector (the DNS name S._domainkey)")
    dk.add_argument(
        "--algorithm",
        choices=("rsa", "ed25519"),
        help="rsa (2048 bits, default) or ed25519 (a second signature beside RSA)",
    )
    dk.add_argument("--key-file", metavar="PEM", help="import this private key instead")
    dk.add_argument("--domain", help="signing domain d= (default: the address's domain)")
    dk.add_argument("--off", action="store_true", help="stop signing and delete the keys")
    dk.set_defaults(handler=cmd_dkim)

    sig = acts.add_parser(
        "signature", help="the signature under each message ({{ sender.signature }})"
    )
    sig.add_argument("name")
    sig.add_argument("--html", metavar="FILE", help="HTML signature (UTF-8 file)")
    sig.add_argument("--text", metavar="FILE", help="plain-text signature (UTF-8 file)")
    sig.add_argument(
        "--auto",
        type=on_off,
        metavar="on|off",
        help="append it where a template does not place {{ sender.signature }} (default on)",
    )
    sig.add_argument("--off", action="store_true", help="remove the signature")
    sig.set_defaults(handler=cmd_signature)

    ls = acts.add_parser("list", help="list the bound system emails")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(handler=cmd_list)

    show = acts.add_parser("show", help="show one system email and its recent tests")
    show.add_argument("name")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=cmd_show)

    edit = acts.add_parser("edit", help="change fields of a system email")
    edit.add_argument("name")
    _fields(edit, required=False)
    _password_options(edit)
    _oauth_options(edit)
    edit.add_argument(
        "--clear-password", action="store_true", help="remove the password (relay without login)"
    )
    edit.set_defaults(handler=cmd_edit)

    auth = acts.add_parser(
        "authorize",
        help="OAuth2: run the account's flow (device code, browser sign-in or app-only)",
    )
    auth.add_argument("name")
    auth.add_argument(
        "--browser", action="store_true", help="open the sign-in page in a browser (installed app)"
    )
    auth.add_argument(
        "--wait", type=float, default=oauth.LOOPBACK_WAIT, metavar="S",
        help="seconds to wait for the browser sign-in (300)",
    )  # fmt: skip
    auth.add_argument(
        "--revoke", action="store_true",
        help="end the authorization: revoke the tokens at the provider, delete them here",
    )  # fmt: skip
    auth.set_defaults(handler=cmd_authorize)

    rm = acts.add_parser("remove", help="unbind a system email")
    rm.add_argument("name")
    rm.set_defaults(handler=cmd_remove)

    arch = acts.add_parser(
        "archiving", help='switch "Sent Email Archiving" / "Received Email Archiving"'
    )
    arch.add_argument("name")
    arch.add_argument("--sent", type=on_off, metavar="on|off", help="Sent Email Archiving")
    arch.add_argument("--received", type=on_off, metavar="on|off", help="Received Email Archiving")
    arch.set_defaults(handler=cmd_archiving)

    test = acts.add_parser(
        "test", help="test the connection (exit 1 when the test fails) and record it"
    )
    test.add_argument("name")
    test.add_argument("--send-to", metavar="ADDR", help="also send a test message to ADDR")
    test.add_argument(
        "--imap",
        action="store_true",
        help="test the IMAP side instead (received archiving): connect, TLS, login, INBOX",
    )
    test.add_argument("--timeout", type=float, default=10.0, help="seconds per step (10)")
    test.add_argument("--json", action="store_true", help="print JSON")
    test.set_defaults(handler=cmd_test)


def _fields(p: argparse.ArgumentParser, *, required: bool) -> None:
    p.add_argument("--address", required=required, help="email account (the From address)")
    p.add_argument("--host", help="SMTP server host (add: or --provider / --detect)")
    p.add_argument("--kind", choices=api.KINDS, help="kind of system email (default: other)")
    p.add_argument("--description", help="optional description")
    p.add_argument("--display-name", help="name shown in From")
    p.add_argument("--login", help="SMTP login (default: the address)")
    p.add_argument("--port", type=int, help="SMTP port (default by security: 587, 465, 25)")
    p.add_argument("--security", choices=api.SECURITIES, help="starttls (default), ssl or none")
    p.add_argument("--ca-bundle", metavar="PEM", help="CA bundle for a private relay")
    p.add_argument(
        "--allow-insecure-auth",
        type=on_off,
        metavar="on|off",
        help="allow AUTH over an unencrypted connection to a non-local host",
    )
    p.add_argument("--imap-host", help="IMAP host for received archiving (default derived)")
    p.add_argument("--imap-port", type=int, help="IMAP port (default 993; 0: the default)")
    p.add_argument("--imap-security", choices=api.SECURITIES, help="IMAP security (default ssl)")
    p.add_argument(
        "--rate-limit", type=int, metavar="N", help="at most N messages per minute (0: no limit)"
    )
    p.add_argument(
        "--max-size",
        type=float,
        metavar="MB",
        help="largest message sent, in MB (default 20, a preset its provider's; 0: the default)",
    )
    p.add_argument("--unsubscribe-mailto", metavar="ADDR", help="List-Unsubscribe mailto")
    p.add_argument("--unsubscribe-url", metavar="URL", help="List-Unsubscribe https URL")
    p.add_argument("--sent-archiving", type=on_off, metavar="on|off", help="default by kind")
    p.add_argument("--received-archiving", type=on_off, metavar="on|off", help="default by kind")


def _oauth_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("login method (OAuth2: README, Microsoft 365 / Google Workspace)")
    g.add_argument(
        "--auth",
        choices=oauth.AUTHS,
        help="password (default with a password), none (a relay without login) or oauth2",
    )
    g.add_argument("--oauth-provider", choices=oauth.PROVIDERS, help="who issues the tokens")
    g.add_argument(
        "--oauth-flow",
        choices=sorted({f for flows in oauth.FLOWS.values() for f in flows}),
        help="microsoft: device (default) | client_credentials; google: service_account "
        "(default) | authorization_code; generic: device | authorization_code | "
        "client_credentials",
    )
    g.add_argument("--oauth-client-id", metavar="ID", help="application (client) ID")
    g.add_argument("--oauth-tenant", metavar="T", help="Microsoft directory (tenant) ID or domain")
    g.add_argument(
        "--oauth-endpoint",
        metavar="URL",
        help="Microsoft authority host (national cloud), or the issuer URL (generic)",
    )
    g.add_argument("--oauth-scopes", metavar="S", help="space-separated; default: the provider's")
    g.add_argument(
        "--oauth-secret-stdin",
        action="store_true",
        help="read the client secret from standard input (stored encrypted)",
    )
    g.add_argument(
        "--oauth-key-file",
        metavar="JSON",
        help="Google service-account key (stored encrypted; the file can be deleted after)",
    )


def _oauth_values(args: argparse.Namespace) -> dict[str, Any]:
    if args.oauth_secret_stdin and getattr(args, "password_stdin", False):
        raise ValidationError("--oauth-secret-stdin and --password-stdin cannot both read stdin")
    values: dict[str, Any] = {
        "auth": args.auth,
        "oauth_provider": args.oauth_provider,
        "oauth_flow": args.oauth_flow,
        "oauth_client_id": args.oauth_client_id,
        "oauth_tenant": args.oauth_tenant,
        "oauth_endpoint": args.oauth_endpoint,
        "oauth_scopes": args.oauth_scopes,
    }
    if args.oauth_secret_stdin:
        secret = sys.stdin.readline().rstrip("\r\n")
        if not secret:
            raise ValidationError("--oauth-secret-stdin read an empty line")
        values["oauth_client_secret"] = Secret(secret)
    if args.oauth_key_file:
        try:
            with open(args.oauth_key_file, encoding="utf-8") as fh:
                values["oauth_key"] = Secret(fh.read(64 * 1024))
        except (OSError, UnicodeDecodeError) as exc:
            why = getattr(exc, "strerror", None) or type(exc).__name__
            raise ValidationError(f"--oauth-key-file {args.oauth_key_file}: {why}") from None
    return values


def _password_options(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    g.add_argument(
        "--password-env", metavar="NAME", help="store a reference env:NAME, read when sending"
    )
    g.add_argument("--no-password", action="store_true", help="the relay needs no login")


def _field_values(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "from_address": args.address,
        "smtp_host": args.host,
        "kind": args.kind,
        "description": args.description,
        "display_name": args.display_name,
        "login": args.login,
        "smtp_port": args.port,
        "smtp_security": args.security,
        "ca_bundle": args.ca_bundle,
        "allow_insecure_auth": args.allow_insecure_auth,
        "imap_host": args.imap_host,
        "imap_port": args.imap_port,
        "imap_security": args.imap_security,
        "sent_archiving": args.sent_archiving,
        "received_archiving": args.received_archiving,
        "rate_limit_per_minute": args.rate_limit,
        "unsubscribe_mailto": args.unsubscribe_mailto,
        "unsubscribe_url": args.unsubscribe_url,
        "max_message_bytes": _bytes(args.max_size),
    }


def _bytes(mb: float | None) -> int | None:
    if mb is None:
        return None
    if mb == 0:
        return 0  # back to the default
    if not mb > 0 or mb > 2048:
        raise ValidationError(
            f"--max-size must be a number of MB from 0.001 to 2048 (0: the default), got {mb:g}"
        )
    return int(mb * presets.MB)


def _read_password(args: argparse.Namespace, *, prompt: bool) -> tuple[Secret | None, str | None]:
    """(password, reference) from the flags; a hidden prompt where a person is typing."""
    if args.password_env:
        return None, f"env:{args.password_env}"
    if args.no_password:
        return Secret(""), None
    if args.password_stdin:
        # An unset $PW in a script gives an empty line: that must not quietly turn AUTH off.
        return _not_empty(sys.stdin.readline().rstrip("\r\n"), "--password-stdin read"), None
    if not prompt:
        return None, None
    if not sys.stdin.isatty():
        raise ValidationError(
            "no password given: use --password-stdin, --password-env NAME or --no-password"
        )
    return _not_empty(getpass.getpass(f"Password for {args.address}: "), "the prompt got"), None


def _not_empty(password: str, source: str) -> Secret:
    if not password:
        raise ValidationError(
            f"{source} an empty password: give the password, or --no-password for a relay "
            "without login"
        )
    return Secret(password)


def _preset(args: argparse.Namespace) -> presets.Provider | None:
    """The preset --provider names, or the one --detect finds (printed); checked first."""
    if args.provider:
        return presets.get_provider(args.provider)
    if not args.detect:
        return None
    found, mx = presets.detect_by_mx(args.address or "")
    where = ", ".join(mx[:3]) + (" ..." if len(mx) > 3 else "")
    if found is None:
        if not args.host:
            raise ValidationError(
                f"--detect: no preset matches the MX hosts ({where}): give --host or --provider"
            )
        print(f"detect: no preset matches the MX hosts ({safe(where)})")
        return None
    print(f"detect: MX {safe(where)} -> preset {found.name} ({found.label})")
    return found


def cmd_add(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    preset = _preset(args)
    if preset is None and not args.host:
        seen = presets.suggest(args.address or "")
        also = f" (the address looks like --provider {seen.name})" if seen else ""
        raise ValidationError(f"give --host, --provider P or --detect{also}")
    oauth_values = _oauth_values(args)
    if preset is not None and preset.auth == "oauth2":
        # The preset's auth method: OAuth2 once its client is given (or asked for).
        given = args.oauth_client_id or args.oauth_key_file or args.oauth_provider
        if args.auth is None and given and not (args.password_stdin or args.password_env):
            oauth_values["auth"] = args.auth = "oauth2"
        if args.auth == "oauth2" and not args.oauth_provider:
            oauth_values["oauth_provider"] = preset.oauth_provider
    password, ref = _read_password(args, prompt=args.auth not in ("oauth2", "none"))
    values = dict(preset.account_values()) if preset else {}
    values.update({k: v for k, v in _field_values(args).items() if v is not None})
    values.setdefault("kind", "other")
    values.setdefault("smtp_security", "starttls")
    values.update({k: v for k, v in oauth_values.items() if v is not None})
    account = api.add_account(ws, args.name, password=password, password_ref=ref, **values)
    for hint in account.hints():
        warn(hint)
    if preset is not None:
        print(f"preset {preset.name}: {safe(preset.hint)}")
        if preset.auth == "oauth2":
            print(
                f"preset {preset.name}: the provider recommends OAuth2 ({preset.oauth_provider}) "
                "rather than a password"
            )
    else:
        seen = presets.suggest(account.from_address)
        if seen is not None:
            print(
                f"hint: {account.from_address.rpartition('@')[2]} is {seen.label}: "
                f"--provider {seen.name} would fill its settings (not applied)"
            )
    used, limit = api.usage(ws)
    print(
        f"bound {account.name} ({api.KIND_LABELS[account.kind]}, {account.from_address}); "
        f"{used} of {limit} used"
    )
    if account.auth == "oauth2":
        print(f"next: `sysmail-ops accounts authorize {account.name}`")
    return 0


def cmd_edit(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    password, ref = _read_password(args, prompt=False)
    account = api.edit_account(
        ws,
        args.name,
        password=password,
        password_ref=ref,
        clear_password=args.clear_password,
        **_oauth_values(args),
        **_field_values(args),
    )
    for hint in account.hints():
        warn(hint)
    print(f"updated {account.name}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    accounts = api.list_accounts(ws)
    if args.json:
        print_json([a.to_dict() for a in accounts])
        return 0
    last = {a.name: conntest.recent_tests(ws, a.name, 1) for a in accounts}
    rows = []
    for a in accounts:
        t = last[a.name][0] if last[a.name] else None
        verdict = ("ok" if t["ok"] else f"FAILED at {t['step']}") if t else "never tested"
        rows.append(
            [
                a.name,
                api.KIND_LABELS[a.kind],
                a.from_address,
                f"{a.smtp_host}:{a.smtp_port} ({a.smtp_security})",
                a.sent_archiving,
                a.received_archiving,
                verdict,
            ]
        )
    print_table(
        rows, ["NAME", "KIND", "ADDRESS", "SMTP SERVER", "SENT ARCH", "RECV ARCH", "LAST TEST"]
    )
    used, limit = api.usage(ws)
    print(f"{used} of {limit} system emails used")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    a = api.get_account(ws, args.name)
    # Here, not at the top: it brings imaplib, which no other command needs (start-up time).
    from sysmail_ops.records import received

    tests = conntest.recent_tests(ws, a.name)
    [fetch] = received.status(ws, a.name)
    if args.json:
        print_json({**a.to_dict(), "hints": a.hints(), "tests": tests, "received": fetch})
        return 0
    print_fields(
        [
            ("name", a.name),
            ("kind", api.KIND_LABELS[a.kind]),
            ("description", a.description),
            ("email account", a.from_address),
            ("display name", a.display_name),
            ("login", a.login),
            ("password", a.password_display or "(none: no login)"),
            ("OAuth2", oauth.status(ws, a.name) if a.auth == "oauth2" else None),
            ("SMTP server", f"{a.smtp_host}:{a.smtp_port} ({a.smtp_security})"),
            ("CA bundle", a.ca_bundle),
            ("insecure auth", a.allow_insecure_auth),
            ("IMAP server", f"{a.imap_host}:{a.imap_port} ({a.imap_security})"),
            ("Sent Email Archiving", a.sent_archiving),
            ("Received Email Archiving", a.received_archiving),
            ("last fetch (IMAP)", _fetch_state(fetch)),
            ("last fetch error", fetch["last_error"]),
            ("rate limit", f"{a.rate_limit_per_minute}/min" if a.rate_limit_per_minute else None),
            ("max message size", _size(a.max_message_bytes)),
            ("signature", _signature_state(a)),
            ("DKIM", _dkim_state(a)),
            (
                "List-Unsubscribe",
                ", ".join(filter(None, [a.unsubscribe_mailto, a.unsubscribe_url])),
            ),
            ("created", a.created_at.isoformat(timespec="seconds") + "Z"),
            ("updated", a.updated_at.isoformat(timespec="seconds") + "Z"),
        ]
    )
    for hint in a.hints():
        print(f"hint: {safe(hint)}")
    print("connection tests:" if tests else "connection tests: none yet")
    for t in tests:
        verdict = "ok" if t["ok"] else f"FAILED at {t['step']}"
        print(f"  {t['tested_at']}  {safe(verdict)}: {safe(t['message'])}")
    return 0


def _fetch_state(st: dict[str, Any]) -> str:
    """When received mail was last fetched, and how much: for `accounts show`."""
    if st["last_fetch_at"] is None:
        return "never (sysmail-ops archive fetch)"
    when = st["last_fetch_at"].isoformat(timespec="seconds") + "Z"
    return f"{when}, {st['last_fetched'] or 0} new; {st['total_fetched']} fetched in all"


def cmd_authorize(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    a = api.get_account(ws, args.name)
    if a.auth != "oauth2":
        raise ValidationError(
            f"{a.name} logs in with {a.auth}, not OAuth2: `sysmail-ops accounts edit {a.name} "
            "--auth oauth2 --oauth-provider ...` first"
        )

    if args.revoke:
        if args.browser:
            raise ValidationError("--revoke cannot be combined with --browser")
        print(safe(oauth.revoke(ws, a.oauth)))
        return 0

    def say(line: str) -> None:
        print(safe(line), flush=True)

    print(oauth.authorize(ws, a.oauth, say=say, open_browser=args.browser, wait=args.wait))
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    api.remove_account(ws, args.name)
    used, limit = api.usage(ws)
    print(f"removed {args.name}; {used} of {limit} used")
    return 0


def cmd_archiving(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    if args.sent is None and args.received is None:
        a = api.get_account(ws, args.name)
    else:
        a = api.set_archiving(ws, args.name, sent=args.sent, received=args.received)
    print(
        f"{a.name}: Sent Email Archiving {'on' if a.sent_archiving else 'off'}, "
        f"Received Email Archiving {'on' if a.received_archiving else 'off'}"
    )
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    if args.imap and args.send_to:
        raise ValidationError("--send-to tests SMTP: it does not go with --imap")
    if args.imap:
        result = conntest.test_imap_account(ws, args.name, timeout=args.timeout)
    else:
        result = conntest.test_account(ws, args.name, send_to=args.send_to, timeout=args.timeout)
    if args.json:
        print_json(result.to_dict())
    elif result.ok:
        print(f"{args.name}: OK ({result.duration_ms:.0f} ms) {safe(result.message)}")
        if result.greeting:
            print(f"  server: {safe(result.greeting)}")
    else:
        print(f"{args.name}: FAILED at {safe(result.message)}")
    return 0 if result.ok else 1


def _size(value: int | None) -> str:
    if value is None:
        return f"{api.DEFAULT_MAX_MESSAGE_BYTES / presets.MB:g} MB (default)"
    return f"{value / presets.MB:g} MB"


def _signature_state(a: api.Account) -> str:
    parts = [p for p, v in (("HTML", a.signature_html), ("text", a.signature_text)) if v]
    if not parts:
        return "none"
    where = "automatically" if a.signature_auto else "only where a template places it"
    return f"{' and '.join(parts)}, appended {where}"


def _dkim_state(a: api.Account) -> str:
    sel = [
        f"{alg} {s}._domainkey.{a.dkim_domain}"
        for alg, s in (("rsa", a.dkim_rsa_selector), ("ed25519", a.dkim_ed25519_selector))
        if s
    ]
    return ", ".join(sel) if sel else "off"


def cmd_providers(args: argparse.Namespace) -> int:
    if args.provider:
        p = presets.get_provider(args.provider)
        if args.json:
            print_json(p.to_dict())
            return 0
        print_fields(
            [
                ("preset", p.name),
                ("provider", p.label),
                ("SMTP server", f"{p.smtp.host}:{p.smtp.port} ({p.smtp.security})"),
                ("IMAP server", f"{p.imap.host}:{p.imap.port} ({p.imap.security})"),
                ("auth", p.auth + (f" ({p.oauth_provider})" if p.oauth_provider else "")),
                ("max message size", f"{p.max_message_mb} MB" if p.max_message_mb else None),
                ("address domains", ", ".join(p.domains)),
                ("settings page", p.settings_page or "(not found: see unconfirmed)"),
            ]
        )
        print(f"hint: {safe(p.hint)}")
        for src in p.sources:
            print(f"source: {safe(src)}")
        for item in p.unconfirmed:
            print(f"unconfirmed: {safe(item)}")
        return 0
    found = list(presets.providers().values())
    if args.json:
        print_json([p.to_dict() for p in found])
        return 0
    rows = [
        [
            p.name,
            p.label,
            f"{p.smtp.host}:{p.smtp.port} ({p.smtp.security})",
            f"{p.imap.host}:{p.imap.port}",
            p.auth + (f" ({p.oauth_provider})" if p.oauth_provider else ""),
            f"{p.max_message_mb} MB" if p.max_message_mb else "default",
        ]
        for p in found
    ]
    print_table(rows, ["NAME", "PROVIDER", "SMTP", "IMAP", "AUTH", "MAX SIZE"])
    print("`sysmail-ops accounts providers NAME` shows a preset's hint and sources")
    return 0


def cmd_dkim(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    if args.off:
        if args.selector or args.algorithm or args.key_file or args.domain:
            raise ValidationError("--off cannot be combined with a selector, algorithm or key")
        signing.dkim_off(ws, args.name)
        print(f"{args.name}: DKIM signing off, keys deleted (remove the DNS records too)")
        return 0
    if not args.selector:
        if args.algorithm or args.key_file or args.domain:
            raise ValidationError("give --selector S to make or import a key")
        records = signing.dkim_records(ws, args.name)
        if not records:
            print(f"{args.name}: DKIM signing off (`accounts dkim {args.name} --selector S`)")
        for name, value in records:
            print(f'{name} TXT "{value}"')
        return 0
    account, key = signing.set_dkim(
        ws,
        args.name,
        selector=args.selector,
        algorithm=args.algorithm,
        key_file=args.key_file,
        domain=args.domain,
    )
    from sysmail_ops.mail import dkim

    name, value = dkim.dns_record(key)
    how = "imported" if args.key_file else "generated"
    print(f"{account.name}: {key.algorithm} key {how}, stored encrypted; signing as d={key.domain}")
    print("publish this DNS TXT record before sending:")
    print(f'{name} TXT "{value}"')
    if key.algorithm == "ed25519" and not account.dkim_rsa_selector:
        warn("many receivers verify only RSA: add an RSA key too (--algorithm rsa)")
    return 0


def cmd_signature(args: argparse.Namespace) -> int:
    ws = open_workspace(args)
    html = signing.read_signature_file(args.html, "HTML signature") if args.html else None
    text = signing.read_signature_file(args.text, "text signature") if args.text else None
    account = signing.set_signature(
        ws, args.name, html=html, text=text, auto=args.auto, off=args.off
    )
    print(f"{account.name}: signature {_signature_state(account)}")
    return 0
