"""Numbers, money, percentages and times for people, as a report's reader expects them.

``format_frame(df, ...)`` turns a DataFrame into strings column by column,
with Babel (CLDR data: decimal and grouping marks, currency and date
patterns of the locale), so ``1111000`` reads ``1,111,000`` in ``en``,
``1.111.000`` in ``de``. Each column's format comes from its dtype and name,
and a call may set it per column:

- ``integer``: grouped (``1,111,000``); ``number`` (floats): decimals by
  magnitude, one count per column; tiny values in scientific notation;
- ``percent``: a share or rate (``0.8667`` -> ``86.7%``; ``de``: ``86,7 %``),
  chosen for float columns named like ``share``, ``rate``, ``ratio``;
- ``money`` with a currency (``EUR 1,111,000``): a column named
  ``..._eur`` (an ISO 4217 code at the end), or ``money:EUR`` / the call's
  ``currency``;
- ``datetime``: in the report's timezone (naive times are UTC), to the
  minute; ``date``: a day; ``text``: as it is.

Headers become words (``open_opportunities`` -> "Open opportunities") unless
labels are given. Missing values (None, NaN, NaT) show as an en dash.
Babel is imported where it is used.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sysmail_ops.errors import ValidationError

if TYPE_CHECKING:
    import pandas as pd
    from babel import Locale

__all__ = [
    "KINDS",
    "MISSING",
    "Column",
    "check_locale",
    "column_kind",
    "format_datetime",
    "format_frame",
    "format_money",
    "format_number",
    "format_percent",
    "label",
    "text_table",
]

KINDS = ("integer", "number", "percent", "money", "date", "datetime", "text")
MISSING = "\u2013"  # an en dash for None / NaN / NaT
Formatter = Callable[[Any], str]
_RATE = re.compile(r"(^|_)(share|rate|ratio|pct|percent|percentage|conversion|probability)$")
_PLAIN_INT = re.compile(r"(^|_)(id|code|year|port|number|no)$")
_ACRONYMS = {"id", "smtp", "url", "csv", "html", "api", "crm", "imap", "dkim", "utc", "ip"}


def check_locale(value: str | None) -> str:
    """A locale Babel knows (``en``, ``de``, ``zh``, ``en_GB``...), normalised, or an error."""
    from babel import Locale, UnknownLocaleError

    text = (value or "").strip().replace("-", "_")
    if not text:
        raise ValidationError("a locale is needed, e.g. en, de or zh")
    try:
        return str(Locale.parse(text))
    except (UnknownLocaleError, ValueError, TypeError):
        raise ValidationError(
            f"unknown locale {value!r}: use one like en, de, zh or en_GB"
        ) from None


@lru_cache(maxsize=32)
def _locale(name: str) -> Locale:
    from babel import Locale

    return Locale.parse(check_locale(name))


@lru_cache(maxsize=1)
def _currencies() -> frozenset[str]:
    from babel.numbers import list_currencies

    return frozenset(list_currencies())


def _currency_of(name: str) -> str | None:
    """``amount_eur`` -> ``EUR``: a column named after its currency."""
    tail = str(name).rsplit("_", 1)[-1].upper()
    return tail if "_" in str(name) and tail in _currencies() else None


def label(name: Any) -> str:
    """``open_opportunities`` -> "Open opportunities"; ``amount_eur`` -> "Amount" (its cells
    carry the currency)."""
    text = str(name)
    code = _currency_of(text)
    if code:
        text = text[: -len(code) - 1]
    words = [w for w in re.split(r"[_\s]+", text) if w]
    if not words:
        return str(name)
    out = [w.upper() if w.lower() in _ACRONYMS else w.lower() for w in words]
    if out[0].islower():
        out[0] = out[0][0].upper() + out[0][1:]
    return " ".join(out)


def _missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        import pandas as pd

        return bool(pd.isna(value)) if not isinstance(value, list | tuple | dict) else False
    except (TypeError, ValueError):
        return False


def _decimals(values: Sequence[float]) -> int:
    """One count of decimals for a column: whole numbers none, large ones none, small ones more."""
    finite = [abs(v) for v in values if math.isfinite(v)]
    if not finite or all(v == int(v) for v in finite):
        return 0
    top = max(finite)
    if top >= 1000:
        return 0
    if top >= 100:
        return 1
    if top >= 1:
        return 2
    return 3


def _pattern(decimals: int) -> str:
    return "#,##0" + ("." + "0" * decimals if decimals else "")


def format_number(value: Any, locale: str = "en", *, decimals: int | None = None) -> str:
    """A number with the locale's marks: grouped, ``decimals`` fixed (by magnitude when None)."""
    from babel import numbers

    if _missing(value):
        return MISSING
    x = float(value) if not isinstance(value, int | Decimal) else value
    loc = _locale(locale)
    if isinstance(x, float) and not math.isfinite(x):
        return numbers.format_decimal(x, locale=loc)
    if isinstance(x, float) and x != 0 and abs(x) < 0.001 and decimals is None:
        return numbers.format_scientific(x, "0.##E0", locale=loc)
    if decimals is None:
        decimals = 0 if isinstance(x, int) else _decimals([float(x)])
    if isinstance(x, float):
        x = round(x, decimals) + 0.0  # no "-0.00"
    return numbers.format_decimal(x, _pattern(decimals), locale=loc, decimal_quantization=True)


def format_percent(value: Any, locale: str = "en", *, decimals: int = 1) -> str:
    """A share as a percentage: ``0.8667`` -> ``86.7%`` (``de``: ``86,7 %``); ``1`` -> ``100%``."""
    from babel import numbers

    if _missing(value):
        return MISSING
    loc = _locale(locale)
    pattern = loc.percent_formats[None].pattern.split(";")[0]  # "#,##0%", de "#,##0 %"
    if decimals:
        pattern = pattern.replace("0", "0." + "#" * decimals, 1)
    return numbers.format_percent(float(value), pattern, locale=loc)


def _money_pattern(loc: Locale, decimals: int) -> str:
    """The locale's currency pattern with the ISO code (``EUR 1,111,000``, ``1.111.000 EUR``)."""
    std = loc.currency_formats["standard"].pattern.split(";")[0]
    number = _pattern(decimals)
    if std.strip().startswith("¤"):
        return f"¤¤\xa0{number}"
    return f"{number}\xa0¤¤"


def format_money(
    value: Any, currency: str, locale: str = "en", *, decimals: int | None = None
) -> str:
    """An amount with its currency code: ``EUR 1,111,000`` (``de``: ``1.111.000 EUR``)."""
    from babel import numbers

    if _missing(value):
        return MISSING
    code = str(currency).upper()
    if code not in _currencies():
        raise ValidationError(f"unknown currency {currency!r}: use an ISO 4217 code such as EUR")
    x = float(value)
    if decimals is None:
        decimals = 0 if x == int(x) or abs(x) >= 1000 else 2
    loc = _locale(locale)
    return numbers.format_currency(
        round(x, decimals) + 0.0,
        code,
        _money_pattern(loc, decimals),
        locale=loc,
        currency_digits=False,
        decimal_quantization=True,
    )


def _as_local(value: Any, tz: ZoneInfo) -> datetime:
    import pandas as pd

    stamp = pd.Timestamp(value).to_pydatetime()
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)  # the store keeps naive UTC
    return stamp.astimezone(tz)


def format_datetime(value: Any, locale: str = "en", timezone: str = "UTC") -> str:
    """A point in time in ``timezone``, to the minute: ``Nov 23, 2026, 2:30 PM``."""
    from babel import dates

    if _missing(value):
        return MISSING
    loc = _locale(locale)
    local = _as_local(value, ZoneInfo(timezone))
    time = dates.format_time(local, "short", locale=loc)
    day = dates.format_date(local, "medium", locale=loc)
    return str(loc.datetime_formats["medium"]).format(time, day)


def format_date(value: Any, locale: str = "en") -> str:
    """A day: ``Nov 30, 2026`` (``de``: ``30.11.2026``)."""
    import pandas as pd
    from babel import dates

    if _missing(value):
        return MISSING
    day = value if isinstance(value, date) and not isinstance(value, datetime) else None
    day = day or pd.Timestamp(value).date()
    return dates.format_date(day, "medium", locale=_locale(locale))


@dataclass(frozen=True)
class Column:
    """One formatted column: its header, its cells, and whether it holds numbers (right-aligned)."""

    name: str
    label: str
    kind: str
    cells: list[str]

    @property
    def numeric(self) -> bool:
        return self.kind in ("integer", "number", "percent", "money")


def column_kind(name: str, series: pd.Series) -> str:
    """The format a column gets from its dtype and name (see the module's doc)."""
    from pandas.api import types

    dtype = series.dtype
    if types.is_bool_dtype(dtype):
        return "text"
    if types.is_datetime64_any_dtype(dtype):
        times = series.dropna()
        midnight = not len(times) or bool((times == times.dt.normalize()).all())
        return "date" if midnight and getattr(dtype, "tz", None) is None else "datetime"
    if types.is_integer_dtype(dtype):
        if _PLAIN_INT.search(str(name).lower()):
            return "text"
        return "money" if _currency_of(name) else "integer"
    if types.is_float_dtype(dtype):
        if _currency_of(name):
            return "money"
        values = series.dropna()
        if _RATE.search(str(name).lower()) and (values.empty or values.abs().max() <= 1.5):
            return "percent"
        return "number"
    sample = series.dropna()
    if len(sample) and all(isinstance(v, date) for v in sample):
        return "datetime" if all(isinstance(v, datetime) for v in sample) else "date"
    return "text"


def _parse_kind(spec: str, currency: str | None) -> tuple[str, str | None, int | None]:
    """``money:EUR`` / ``EUR`` / ``number:2`` / ``percent:0`` -> (kind, currency, decimals)."""
    kind, _, arg = str(spec).partition(":")
    kind = kind.strip().lower()
    if kind.upper() in _currencies() and not arg:
        return "money", kind.upper(), None
    if kind not in KINDS:
        raise ValidationError(
            f"unknown column format {spec!r}: use {', '.join(KINDS)}, money:EUR or a currency code"
        )
    if kind == "money":
        code = (arg or currency or "").upper()
        if code not in _currencies():
            raise ValidationError(f"column format {spec!r} needs a currency, e.g. money:EUR")
        return kind, code, None
    if arg:
        if not arg.isdigit() or int(arg) > 12:
            raise ValidationError(f"column format {spec!r}: decimals must be 0 to 12")
        return kind, None, int(arg)
    return kind, None, None


def _cells(
    name: str,
    series: pd.Series,
    spec: str | Formatter | None,
    *,
    locale: str,
    timezone: str,
    currency: str | None,
) -> tuple[str, list[str]]:
    values = list(series)
    if callable(spec):
        return "text", [MISSING if _missing(v) else str(spec(v)) for v in values]
    kind, code, decimals = (
        _parse_kind(spec, currency) if spec else (column_kind(name, series), None, None)
    )
    if kind == "money":
        code = code or _currency_of(name) or currency
        if code is None:
            raise ValidationError(f"column {name!r} is money: give its currency (money:EUR)")
    present = [float(v) for v in values if not _missing(v) and kind in ("number", "money")]
    if kind == "number" and decimals is None:
        decimals = _decimals(present)
    if kind == "money" and decimals is None:
        decimals = 0 if all(v == int(v) for v in present if math.isfinite(v)) else 2
    if kind == "integer":
        return kind, [format_number(int(v), locale, decimals=0) if not _missing(v) else MISSING
                      for v in values]  # fmt: skip
    if kind == "number":
        if present and any(0 < abs(v) < 0.001 for v in present) and max(map(abs, present)) < 0.001:
            return kind, [format_number(v, locale) for v in values]  # scientific, per value
        return kind, [format_number(v, locale, decimals=decimals) for v in values]
    if kind == "percent":
        return kind, [format_percent(v, locale, decimals=1 if decimals is None else decimals)
                      for v in values]  # fmt: skip
    if kind == "money":
        assert code is not None
        return kind, [format_money(v, code, locale, decimals=decimals) for v in values]
    if kind == "datetime":
        return kind, [format_datetime(v, locale, timezone) for v in values]
    if kind == "date":
        return kind, [format_date(v, locale) for v in values]
    return "text", [MISSING if _missing(v) else str(v) for v in values]


def format_frame(
    df: pd.DataFrame,
    *,
    locale: str = "en",
    timezone: str = "UTC",
    formats: Mapping[str, str | Formatter] | None = None,
    labels: Mapping[str, str] | None = None,
    currency: str | None = None,
    index: bool = False,
) -> list[Column]:
    """Every column of ``df`` as strings for people, with its header (see the module's doc).

    ``formats`` sets a column's format (a kind, ``money:EUR``, ``number:2``,
    ``percent:0``, or a function of one value); ``labels`` its header;
    ``currency`` is the currency of columns formatted as ``money`` without one.
    """
    check_locale(locale)
    ZoneInfo(timezone)
    frame = df.reset_index() if index else df
    formats = dict(formats or {})
    labels = dict(labels or {})
    unknown = sorted((set(formats) | set(labels)) - {str(c) for c in frame.columns})
    if unknown:
        raise ValidationError(f"no column named {', '.join(unknown)} in the table")
    out = []
    for col in frame.columns:
        name = str(col)
        kind, cells = _cells(
            name,
            frame[col],
            formats.get(name),
            locale=locale,
            timezone=timezone,
            currency=currency,
        )
        out.append(Column(name, labels.get(name) or label(name), kind, cells))
    return out


def _width(text: str) -> int:
    """Columns a string takes in a monospaced font (CJK characters take two)."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _fit(text: str, limit: int) -> str:
    text = " ".join(text.split())
    if _width(text) <= limit:
        return text
    while _width(text) > limit - 1:
        text = text[:-1]
    return text + "\u2026"


def text_table(columns: Sequence[Column], *, max_cell: int = 40) -> str:
    """The columns as aligned plain text: numbers right-aligned, a rule under the header."""
    heads = [_fit(c.label, max_cell) for c in columns]
    bodies = [[_fit(v, max_cell) for v in c.cells] for c in columns]
    widths = [
        max([_width(h), *(_width(v) for v in body)]) for h, body in zip(heads, bodies, strict=True)
    ]

    def pad(text: str, width: int, right: bool) -> str:
        gap = " " * (width - _width(text))
        return gap + text if right else text + gap

    numeric = [c.numeric for c in columns]
    lines = ["  ".join(pad(h, w, r) for h, w, r in zip(heads, widths, numeric, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    rows = len(columns[0].cells) if columns else 0
    for i in range(rows):
        cells = (pad(b[i], w, r) for b, w, r in zip(bodies, widths, numeric, strict=True))
        lines.append("  ".join(cells))
    return "\n".join(line.rstrip() for line in lines)
