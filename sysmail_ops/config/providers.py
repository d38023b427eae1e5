"""Provider presets: the SMTP/IMAP settings of the mail services companies use.

The presets are one data file shipped in the package (``providers.json``),
each entry naming the provider's published settings page and what could not
be confirmed there. ``accounts add --provider NAME`` fills host, port,
security, IMAP, auth method and message size limit from it; explicit options
still win. A known address domain only *suggests* a preset; an MX lookup
happens only when asked for (``detect_by_mx``), never during validation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from sysmail_ops.errors import ValidationError

MB = 1024 * 1024


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    security: str


@dataclass(frozen=True)
class Provider:
    """One preset, as the data file gives it."""

    name: str
    label: str
    smtp: Server
    imap: Server
    auth: str  # the recommended auth method: password | oauth2 | none
    oauth_provider: str | None
    max_message_mb: int | None
    domains: tuple[str, ...]
    mx_suffixes: tuple[str, ...]
    hint: str
    settings_page: str | None
    sources: tuple[str, ...]
    unconfirmed: tuple[str, ...]

    @property
    def max_message_bytes(self) -> int | None:
        return self.max_message_mb * MB if self.max_message_mb else None

    def account_values(self) -> dict[str, Any]:
        """The account fields this preset fills (host, ports, security, size limit)."""
        values: dict[str, Any] = {
            "smtp_host": self.smtp.host,
            "smtp_port": self.smtp.port,
            "smtp_security": self.smtp.security,
            "imap_host": self.imap.host,
            "imap_port": self.imap.port,
            "imap_security": self.imap.security,
        }
        if self.max_message_bytes:
            values["max_message_bytes"] = self.max_message_bytes
        return values

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "smtp": vars(self.smtp),
            "imap": vars(self.imap),
            "auth": self.auth,
            "oauth_provider": self.oauth_provider,
            "max_message_mb": self.max_message_mb,
            "domains": list(self.domains),
            "hint": self.hint,
            "settings_page": self.settings_page,
            "sources": list(self.sources),
            "unconfirmed": list(self.unconfirmed),
        }


def _server(d: dict[str, Any]) -> Server:
    return Server(str(d["host"]), int(d["port"]), str(d["security"]))


@cache
def providers() -> dict[str, Provider]:
    """Every preset by name, in the data file's order."""
    text = resources.files("sysmail_ops.config").joinpath("providers.json").read_text("utf-8")
    data = json.loads(text)["providers"]
    return {
        name: Provider(
            name=name,
            label=d["label"],
            smtp=_server(d["smtp"]),
            imap=_server(d["imap"]),
            auth=d["auth"],
            oauth_provider=d.get("oauth_provider"),
            max_message_mb=d.get("max_message_mb"),
            domains=tuple(d.get("domains") or ()),
            mx_suffixes=tuple(d.get("mx_suffixes") or ()),
            hint=d.get("hint") or "",
            settings_page=d.get("settings_page"),
            sources=tuple(d.get("sources") or ()),
            unconfirmed=tuple(d.get("unconfirmed") or ()),
        )
        for name, d in data.items()
    }


def get_provider(name: str) -> Provider:
    found = providers().get((name or "").strip().lower())
    if found is None:
        raise ValidationError(
            f"unknown provider {name!r}: choose one of {', '.join(providers())} "
            "(`sysmail-ops accounts providers` lists them)"
        )
    return found


def _domain(address: str) -> str:
    return address.rpartition("@")[2].strip().lower().rstrip(".")


def suggest(address: str) -> Provider | None:
    """The preset whose known domain the address is at (``@gmail.com`` -> google), or None."""
    domain = _domain(address)
    for p in providers().values():
        if domain in p.domains:
            return p
    return None


def detect_by_mx(address: str, *, timeout: float = 5.0) -> tuple[Provider | None, list[str]]:
    """(preset, MX hosts) from a DNS MX lookup of the address's domain.

    Only on request (``accounts add --detect``): a lookup leaves the machine.
    Uses dnspython (installed with dkimpy); a domain without MX or a failed
    lookup is a ``ValidationError`` naming it.
    """
    import dns.exception
    import dns.resolver

    domain = _domain(address)
    if not domain:
        raise ValidationError(f"cannot detect a provider: {address!r} has no domain")
    try:
        answer = dns.resolver.resolve(domain, "MX", lifetime=timeout)
    except dns.resolver.NXDOMAIN:
        raise ValidationError(f"MX lookup: the domain {domain} does not exist") from None
    except dns.resolver.NoAnswer:
        raise ValidationError(f"MX lookup: {domain} has no MX record") from None
    except dns.exception.DNSException as exc:
        raise ValidationError(
            f"MX lookup for {domain} failed: {type(exc).__name__}: {exc}"
        ) from None
    hosts = sorted((r.preference, str(r.exchange).rstrip(".").lower()) for r in answer)
    names = [h for _, h in hosts]
    return match_mx(names), names


def match_mx(hosts: list[str]) -> Provider | None:
    """The preset whose MX suffix one of ``hosts`` ends with (lowest preference first)."""
    for host in hosts:
        host = host.rstrip(".").lower()
        for p in providers().values():
            if any(host.endswith(s) or host == s.lstrip(".") for s in p.mx_suffixes):
                return p
    return None
