"""Object email templates: versioned, sandboxed Jinja2, checked when saved.

A template belongs to an object type (``case``, ``lead``, ``report``, ...) and
has a subject, an HTML body and a text body. Every edit adds a version; the
highest one is current and the old ones stay. The slow or fallible work
happens once, when a version is saved: syntax errors (with part and line),
fields used but not declared, sandbox-forbidden attribute access, CSS
inlining for mail clients (``css_inline``) and, when no text body is given,
deriving one from the HTML (``html2text``). Sending then calls
``compile_template``, which compiles a version once and renders thousands of
records a second.

Rendering runs in Jinja2's immutable sandbox with ``StrictUndefined``: a
missing field is an error naming it, never blank output. The HTML body is
autoescaped; the subject and the text body are not (a separate environment),
and a rendered subject with a line break is refused (header injection).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from dataclasses import fields as dataclass_fields
from datetime import datetime
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sysmail_ops.config.settings import get_setting
from sysmail_ops.errors import InUseError, NotFoundError, TemplateError, ValidationError
from sysmail_ops.mail.headers import check_header
from sysmail_ops.store import audit
from sysmail_ops.store.database import utcnow
from sysmail_ops.store.named import check_name
from sysmail_ops.store.references import users_of
from sysmail_ops.templates.render import (
    ACTIVE,
    BAD_SUBJECT,
    Meter,
    OverBudget,
    analyse,
    derive_text,
    emit,
    environments,
    fields_used,
    inline_once,
    inline_rendered,
    metered,
    one_line,
    shape_of,
)
from sysmail_ops.templates.render import DEFAULT_BUDGET as DEFAULT_BUDGET  # public, re-exported
from sysmail_ops.templates.render import Budget as Budget
from sysmail_ops.templates.render import RenderBudgetError as RenderBudgetError
from sysmail_ops.templates.render import html_to_text as html_to_text
from sysmail_ops.templates.sender import NAME as SENDER
from sysmail_ops.templates.sender import Sender, places_signature

if TYPE_CHECKING:  # Jinja2 loads with the first template (render.environments)
    import duckdb
    import jinja2
    from jinja2 import nodes

    from sysmail_ops.config.workspace import Workspace

_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
MAX_SOURCE = 1_000_000  # characters per part
PARTS = ("subject", "html", "text")

# --- the model ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Template:
    """One version of an object email template, as stored."""

    name: str
    version: int
    object_type: str
    subject: str
    html: str
    text: str
    text_derived: bool
    html_inlined: str | None
    fields: tuple[str, ...] | None
    builtin: bool
    created_at: datetime
    description: str | None = None

    def __post_init__(self) -> None:
        if self.fields is not None and not isinstance(self.fields, tuple):
            object.__setattr__(self, "fields", tuple(self.fields))  # hashable: compile cache key

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view."""
        d = asdict(self)
        d["fields"] = list(self.fields) if self.fields is not None else None
        d["created_at"] = self.created_at.isoformat() + "Z"
        return d


@dataclass(frozen=True, slots=True)
class Rendered:
    """A template rendered for one record: what ``compose`` turns into a message."""

    subject: str
    html: str
    text: str

    def to_dict(self) -> dict[str, str]:
        return {"subject": self.subject, "html": self.html, "text": self.text}


def _check_fields(values: Iterable[str] | str | None) -> tuple[str, ...] | None:
    if values is None:
        return None
    if isinstance(values, str):
        values = values.split(",")
    out: list[str] = []
    for raw in values:
        f = str(raw).strip()
        if not f:
            continue
        if not _FIELD.fullmatch(f):
            raise ValidationError(
                f"field name {f!r} must be a letter or '_', then letters, digits or '_'"
            )
        if f not in out:
            out.append(f)
    return tuple(out) or None


def _check_description(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if any(c in value for c in "\r\n\0"):
        raise ValidationError("description must not contain line breaks")
    if len(value) > 500:
        raise ValidationError("description is longer than 500 characters")
    _unicode(value, "description")
    return value or None


def _check_source(part: str, value: Any, *, required: bool) -> str | None:
    """The source of one part; an empty optional part is None."""
    if value is not None and not isinstance(value, str):
        raise ValidationError(f"the {part} must be text, got {type(value).__name__}")
    if not value or not value.strip():
        if required:
            raise ValidationError(f"a template needs a {part}")
        return None
    if len(value) > MAX_SOURCE:
        raise ValidationError(f"the {part} is longer than {MAX_SOURCE:,} characters")
    if "\0" in value:
        raise ValidationError(f"the {part} must not contain NUL characters")
    _unicode(value, f"the {part}")
    return value


def _unicode(value: str, what: str) -> None:
    """Refuse a lone surrogate (``\\ud800``): no mail, file or database can hold one."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValidationError(
                f"{what} is not valid Unicode text "
                f"(a lone surrogate at character {exc.start + 1:,})"
            ) from None


def _build(
    *,
    name: str,
    version: int,
    object_type: str,
    subject: str,
    html: str,
    text: str | None,
    fields: Iterable[str] | str | None,
    description: str | None,
    builtin: bool,
    budget: Budget = DEFAULT_BUDGET,
) -> Template:
    """Check every part of a new version and prepare what is stored; writes nothing."""
    name = check_name(name, "template name")
    object_type = check_name(object_type, "object type")
    subject = (_check_source("subject", subject, required=True) or "").strip()
    if any(c in subject for c in "\r\n"):
        raise ValidationError("the subject must be one line")
    check_header("the subject", subject)  # the rules the send applies, to its literal text too
    html = _check_source("html", html, required=True) or ""
    text = _check_source("text", text, required=False)
    declared = _check_fields(fields)
    description = _check_description(description)
    problems: list[str] = []
    asts: dict[str, nodes.Template] = {}
    for part, source in (("subject", subject), ("html", html), ("text", text)):
        if source is not None:
            ast, errors = analyse(part, source)
            problems += errors
            if ast is not None:
                asts[part] = ast
    if problems:
        raise TemplateError(f"template {name!r}: {'; '.join(problems)}")
    sources = {"subject": subject, "html": html, "text": text}
    _trial(f"template {name!r} v{version}", sources, budget)
    derived = text is None
    if text is None:
        text, asts["text"] = derive_text(html, asts["html"])
        _trial(f"template {name!r} v{version}", {"text": text}, budget)
    if declared is not None:
        undeclared = sorted(fields_used(asts.values()) - set(declared) - {SENDER})
        if undeclared:
            listed = ", ".join(f"`{f}`" for f in undeclared)
            what = f"fields {listed} are" if len(undeclared) > 1 else f"field {listed} is"
            raise TemplateError(
                f"template {name!r}: {what} not defined (declared: {', '.join(declared)}): "
                "declare or fix the name"
            )
    return Template(
        name=name,
        version=version,
        object_type=object_type,
        subject=subject,
        html=html,
        text=text,
        text_derived=derived,
        html_inlined=inline_once(html),
        fields=declared,
        builtin=builtin,
        created_at=utcnow(),
        description=description,
    )


def _trial(label: str, sources: Mapping[str, str | None], budget: Budget) -> None:
    """Render the parts without a record (unknown fields are blank) under the budget.

    A part that goes over the budget whatever the record (a huge format width, nested
    loops over ranges) is refused when saved. Any other failure is left to the checks
    made per record: it may well depend on the record.
    """
    envs = environments()
    with metered(Meter(budget)) as meter:
        for part, source in sources.items():
            if source is None:
                continue
            try:
                emit(envs.lenient.from_string(source), {}, meter)
            except OverBudget as exc:
                raise RenderBudgetError(f"{label} {part}: over the render budget: {exc}") from None
            except Exception:  # noqa: S112 - only the budget is checked here
                continue


# --- the fast path ------------------------------------------------------------------------


class CompiledTemplate:
    """One template version compiled once; ``render`` is the sending pipeline's hot path.

    ``fields_used`` holds the top-level record fields it reads (subject, HTML, text).
    """

    __slots__ = (
        "_html",
        "_inline_after",
        "_shape",
        "_subject",
        "_text",
        "fields_used",
        "name",
        "places_signature",
        "uses_sender",
        "version",
    )

    def __init__(self, t: Template):
        import jinja2

        self.name = t.name
        self.version = t.version
        self._inline_after = t.html_inlined is None
        envs = environments()
        try:
            asts = {
                "subject": envs.text.parse(t.subject),
                "html": envs.html.parse(t.html if t.html_inlined is None else t.html_inlined),
                "text": envs.text.parse(t.text),
            }
            self._subject = envs.text.from_string(asts["subject"])
            self._html = envs.html.from_string(asts["html"])
            self._text = envs.text.from_string(asts["text"])
            for part in (self._subject, self._html, self._text):
                # A template's globals are a ChainMap over its environment's, which
                # Jinja copies key by key (in Python) into each render's context: a
                # third of a render. The environments never change once made, so a
                # flat copy is the same mapping and copies in C.
                part.globals = dict(part.globals)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"{self}: line {exc.lineno}: {one_line(str(exc))}") from None
        used = frozenset(fields_used(asts.values()))
        # ``sender`` is the account's (``templates.sender``), not a record field.
        self.fields_used: frozenset[str] = used - {SENDER}
        self.uses_sender = SENDER in used
        self.places_signature = places_signature(asts.values())  # {{ sender.signature }}
        self._shape = shape_of(asts.values())

    def __repr__(self) -> str:
        return f"<CompiledTemplate {self.name} v{self.version}>"

    def __str__(self) -> str:
        return f"template {self.name!r} v{self.version}"

    def render(
        self,
        record: Mapping[str, Any],
        budget: Budget = DEFAULT_BUDGET,
        *,
        inline: bool = True,
        sender: Sender | None = None,
    ) -> Rendered:
        """Subject (one line, stripped), HTML (autoescaped, CSS inlined) and text for a record.

        The three parts together run under ``budget`` (time, output, loop iterations);
        going over it raises ``RenderBudgetError``. ``inline=False`` leaves the CSS as it
        is (a check that the record renders, not a message). ``sender`` is what
        ``{{ sender... }}`` shows (unless the record has a field of that name).
        """
        r_subject = r_html = r_text = record
        if sender is not None and self.uses_sender and SENDER not in record:
            r_subject = {**record, SENDER: sender.view("subject")}
            r_html = {**record, SENDER: sender.view("html")}
            r_text = {**record, SENDER: sender.view("text")}
        meter = Meter(budget)
        previous = getattr(ACTIVE, "meter", None)
        ACTIVE.meter = meter  # what the sandbox's hooks count against (``metered``, inlined)
        try:
            subject = self._run("subject", self._subject, r_subject, meter).strip()
            if BAD_SUBJECT.search(subject):
                raise TemplateError(
                    f"{self}: the rendered subject contains a line break (header injection refused)"
                )
            html = self._run("html", self._html, r_html, meter)
            text = self._run("text", self._text, r_text, meter)
        finally:
            ACTIVE.meter = previous
        if inline and self._inline_after:
            html = inline_rendered(html)
        return Rendered(subject, html, text)

    def check_budget(
        self,
        record: Mapping[str, Any],
        budget: Budget = DEFAULT_BUDGET,
        sender: Sender | None = None,
    ) -> None:
        """Raise ``RenderBudgetError`` if rendering ``record`` goes over ``budget``; other
        render errors are left to the render that sends. A template that only substitutes
        and loops over record data is not rendered when the record is too small to matter."""
        if self._shape is not None and self._shape.fits(record, budget):
            return
        try:
            self.render(record, budget, inline=False, sender=sender)
        except RenderBudgetError:
            raise
        except TemplateError:
            pass

    def _run(
        self, part: str, template: jinja2.Template, record: Mapping[str, Any], meter: Meter
    ) -> str:
        try:
            return emit(template, record, meter)
        except Exception as exc:
            raise self._error(part, exc) from None

    def _error(self, part: str, exc: Exception) -> TemplateError:
        """What a failed render of ``part`` tells the user."""
        import jinja2
        from jinja2.sandbox import SecurityError

        if isinstance(exc, OverBudget):
            return RenderBudgetError(f"{self} {part}: over the render budget: {exc}")
        if isinstance(exc, SecurityError):
            return TemplateError(f"{self} {part}: refused by the sandbox: {exc}")
        if isinstance(exc, jinja2.UndefinedError):
            m = re.fullmatch(r"'(\w+)' is undefined", str(exc))
            if m:
                return TemplateError(f"{self} {part}: field `{m[1]}` is missing from the record")
            return TemplateError(f"{self} {part}: {one_line(str(exc))}")
        return TemplateError(f"{self} {part}: {type(exc).__name__}: {one_line(str(exc))}")


def render_budget(ws: Workspace, *, con: duckdb.DuckDBPyConnection | None = None) -> Budget:
    """The workspace's render budget: ``render_time_limit``, ``render_output_limit`` and
    ``render_loop_limit`` (``sysmail-ops settings``). ``con`` reuses an open connection."""
    return Budget(
        seconds=get_setting(ws, "render_time_limit", con=con),
        output=get_setting(ws, "render_output_limit", con=con),
        loops=get_setting(ws, "render_loop_limit", con=con),
    )


@lru_cache(maxsize=256)
def _compiled(t: Template) -> CompiledTemplate:
    return CompiledTemplate(t)


def compile_template(t: Template) -> CompiledTemplate:
    """The compiled form of a version, cached per (name, version) and content."""
    return _compiled(t)


# --- the store ----------------------------------------------------------------------------

_COLUMNS = tuple(f.name for f in dataclass_fields(Template))
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM templates"  # noqa: S608 - our column names


def _fetch(con: duckdb.DuckDBPyConnection, where: str, params: list[Any]) -> list[Template]:
    rows = con.execute(f"{_SELECT} {where}", params).fetchall()
    return [Template(**dict(zip(_COLUMNS, row, strict=True))) for row in rows]


def _insert(con: duckdb.DuckDBPyConnection, t: Template) -> None:
    values = [getattr(t, c) for c in _COLUMNS]
    values[_COLUMNS.index("fields")] = list(t.fields) if t.fields is not None else None
    con.execute(
        f"INSERT INTO templates ({', '.join(_COLUMNS)}) "  # noqa: S608 - our column names
        f"VALUES ({', '.join('?' * len(_COLUMNS))})",
        values,
    )


# Derived from the HTML at save: audited through the HTML itself.
_AUDIT_IGNORED = ("html_inlined",)


def _save(ws: Workspace, t: Template, *, after: int) -> None:
    """Store version ``t.version``, provided the current version is still ``after`` (0: none)."""
    with ws.store.transaction() as con:
        row = con.execute("SELECT max(version) FROM templates WHERE name = ?", [t.name]).fetchone()
        current = row[0] if row and row[0] is not None else 0
        if current != after:
            if after == 0:
                raise ValidationError(f"a template named {t.name!r} already exists")
            raise ValidationError(
                f"template {t.name!r} changed meanwhile (now v{current}): look again and retry"
            )
        _insert(con, t)
        audit.record(
            con,
            "template",
            t.name,
            "edit" if after else "add",
            audit.row(con, "templates", name=t.name, version=after) if after else None,
            audit.row(con, "templates", name=t.name, version=t.version),
            ignore=_AUDIT_IGNORED,
        )


def get_template(
    ws: Workspace,
    name: str,
    version: int | None = None,
    *,
    con: duckdb.DuckDBPyConnection | None = None,
) -> Template:
    """The current version of a template, or the version asked for.

    ``con`` reuses an open store connection (else one is opened).
    """
    if con is None:
        with ws.store.connect() as con:
            return get_template(ws, name, version, con=con)
    if version is None:
        found = _fetch(con, "WHERE name = ? ORDER BY version DESC LIMIT 1", [name])
    else:
        found = _fetch(con, "WHERE name = ? AND version = ?", [name, version])
    if found:
        return found[0]
    if version in (None, 1) and name in _builtin_names() and _add_builtin(con):
        return get_template(ws, name, version, con=con)
    if version is not None and list_versions(ws, name):
        raise NotFoundError(f"template {name!r} has no version {version}")
    raise NotFoundError(f"no template named {name!r}")


def list_versions(ws: Workspace, name: str) -> list[int]:
    """Every stored version number of a template, oldest first."""
    with ws.store.connect() as con:
        rows = con.execute(
            "SELECT version FROM templates WHERE name = ? ORDER BY version", [name]
        ).fetchall()
    return [int(r[0]) for r in rows]


def list_templates(ws: Workspace, object_type: str | None = None) -> list[Template]:
    """The current version of every template (of one object type, if given), by name."""
    with ws.store.connect() as con:
        if ws.db_path not in _LISTED:  # an upgraded workspace lists the built-ins it lacked
            _add_builtin(con)
            _LISTED.add(ws.db_path)
        current = _fetch(
            con,
            "QUALIFY row_number() OVER (PARTITION BY name ORDER BY version DESC) = 1 ORDER BY name",
            [],
        )
    return [t for t in current if object_type is None or t.object_type == object_type]


def add_template(
    ws: Workspace,
    name: str,
    *,
    object_type: str,
    subject: str,
    html: str,
    text: str | None = None,
    fields: Iterable[str] | None = None,
    description: str | None = None,
) -> Template:
    """Save version 1 of a new template. Nothing is written when any check fails.

    Without ``text`` a text body is derived from the HTML (and marked so).
    With ``fields``, every field the template uses must be among them.
    """
    t = _build(
        name=name,
        version=1,
        object_type=object_type,
        subject=subject,
        html=html,
        text=text,
        fields=fields,
        description=description,
        builtin=False,
        budget=render_budget(ws),
    )
    _save(ws, t, after=0)
    return t


_EDITABLE = ("object_type", "subject", "html", "text", "fields", "description")


def edit_template(ws: Workspace, name: str, /, **changes: Any) -> Template:
    """Save a new version with ``changes``; ``None`` leaves a field as it is.

    ``text=""`` goes back to a text body derived from the HTML, ``fields=[]``
    drops the declaration. A derived text body is derived again when the HTML
    changes; giving a text body makes it the author's own.
    """
    unknown = set(changes) - set(_EDITABLE)
    if unknown:
        raise ValidationError(
            f"cannot edit template field(s) {', '.join(sorted(unknown))}: "
            f"choose from {', '.join(_EDITABLE)}"
        )
    changes = {k: v for k, v in changes.items() if v is not None}
    if not changes:
        raise ValidationError(f"nothing to change in template {name!r}")
    current = get_template(ws, name)
    values: dict[str, Any] = {k: getattr(current, k) for k in _EDITABLE}
    values.update(changes)
    if "text" not in changes and current.text_derived:
        values["text"] = None  # derived again from the (maybe new) HTML
    t = _build(
        name=name,
        version=current.version + 1,
        builtin=current.builtin,
        budget=render_budget(ws),
        **values,
    )
    if all(getattr(t, k) == getattr(current, k) for k in (*_EDITABLE, "text_derived")):
        return current
    _save(ws, t, after=current.version)
    return t


def remove_template(ws: Workspace, name: str) -> None:
    """Delete a template with all its versions, unless something still uses it."""
    t = get_template(ws, name)
    if t.builtin:
        raise ValidationError(
            f"{name!r} is a built-in template the toolkit sends itself: edit it instead"
        )
    with ws.store.transaction() as con:
        users = users_of(con, "templates", name)
        if users:
            raise InUseError(f"template {name!r} is still used by {', '.join(users)}")
        before = audit.row(con, "templates", name=name, version=t.version)
        con.execute("DELETE FROM templates WHERE name = ?", [name])
        note = f"every version, up to v{t.version}"
        audit.record(
            con, "template", name, "remove", before, None, ignore=_AUDIT_IGNORED, note=note
        )


def preview(
    ws: Workspace,
    name: str,
    record: Mapping[str, Any],
    version: int | None = None,
    sender: Sender | None = None,
) -> Rendered:
    """Render a template (current or given version) for one record, as sending would.

    ``sender`` is the account's (``{{ sender... }}``); without one an example is shown.
    """
    if not isinstance(record, Mapping):
        raise ValidationError(
            f"a record must be a mapping of field names to values, got {type(record).__name__}"
        )
    compiled = compile_template(get_template(ws, name, version))
    return compiled.render(record, render_budget(ws), sender=sender or Sender.example())


def check(ws: Workspace, name: str) -> dict[str, Any]:
    """Fields the current version uses against those it declares."""
    t = get_template(ws, name)
    used = sorted(compile_template(t).fields_used)
    declared = list(t.fields) if t.fields is not None else None
    return {
        "name": t.name,
        "version": t.version,
        "used": used,
        "declared": declared,
        "undeclared_used": [f for f in used if f not in declared] if declared is not None else [],
        "declared_unused": [f for f in declared if f not in used] if declared is not None else [],
    }


# --- built-in templates -------------------------------------------------------------------


@dataclass(frozen=True)
class _Builtin:
    name: str
    object_type: str
    subject: str
    html: str
    text: str | None
    fields: tuple[str, ...]
    description: str | None = None


@lru_cache(maxsize=1)
def builtin_sources() -> tuple[_Builtin, ...]:
    """The toolkit's own templates, from ``sysmail_ops/templates/builtin/``."""
    folder = resources.files("sysmail_ops.templates") / "builtin"
    manifest = tomllib.loads((folder / "builtin.toml").read_text(encoding="utf-8"))
    out = []
    for name, spec in manifest.items():
        text_file = spec.get("text")
        out.append(
            _Builtin(
                name=name,
                object_type=spec["object_type"],
                subject=spec["subject"],
                html=(folder / spec["html"]).read_text(encoding="utf-8"),
                text=(folder / text_file).read_text(encoding="utf-8") if text_file else None,
                fields=tuple(spec["fields"]),
                description=spec.get("description"),
            )
        )
    return tuple(out)


def _builtin_names() -> frozenset[str]:
    return frozenset(b.name for b in builtin_sources())


_LISTED: set[Path] = set()  # workspaces whose built-ins this process has made sure of


def _add_builtin(con: duckdb.DuckDBPyConnection) -> list[str]:
    present = {r[0] for r in con.execute("SELECT DISTINCT name FROM templates").fetchall()}
    added = []
    for b in builtin_sources():
        if b.name not in present:
            _insert(con, _build(version=1, builtin=True, **asdict(b)))
            added.append(b.name)
    return added


def ensure_builtin(ws: Workspace) -> list[str]:
    """Add the built-in templates a workspace lacks; an admin's edits stay. Returns those added.

    ``sysmail-ops init`` calls it; a workspace made or upgraded otherwise gets them
    when the catalog first lists templates or looks up a built-in one.
    """
    with ws.store.transaction() as con:
        return _add_builtin(con)
