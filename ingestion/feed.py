"""Catalog feed rows for the ingestion queue: JSON lines, CSV and JSON files, and API records.

Every source goes through :class:`CatalogRow`; every problem becomes a :class:`FeedError` naming the
line and the field, and a bad row never stops the others. Decisions:

- Keys are stripped and known fields match case-insensitively; any other key is a free attribute
  (``[A-Za-z_][A-Za-z0-9_]{0,63}``). ``null`` and blank strings (empty CSV cells) mean "not given".
  An explicit ``attributes`` object (CSV: a JSON object string) is merged with the free columns;
  one key with two different values is an error, never a silent choice. CSV values stay strings.
- ``price``: a number or a string like ``"19.99"``; ``.`` is the only decimal separator
  (``"19,99"`` is ambiguous, rejected); more than 2 decimals is an error, never rounded; at most
  :data:`MAX_PRICE`. ``currency`` (3 letters, upper-cased) is required when a price is given.
- ``sizes``: a list, or a ``|``-separated string (``,`` does not split: ``"EU 42,5"`` is one size).
- Duplicate sku: the later row is an error naming the line of the first *accepted* row.
- Line numbers: the physical line (JSON lines), the record's first physical line (CSV, header =
  line 1), the 1-based element index (``.json`` arrays, API input).
- Files are streamed line by line (a ``.json`` array is read whole); a line over
  :data:`MAX_LINE_BYTES` is an error. Only the first ``max_errors`` errors are kept;
  :attr:`FeedParseResult.error_count` counts all. A bad CSV header (no ``sku`` or image column,
  blank, repeated or invalid names) is one error on its line and no rows are read.
"""

from __future__ import annotations

import codecs
import csv
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, BinaryIO, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from clothes_search.booleans import DESCRIPTION as BOOLEAN_WORDS
from clothes_search.booleans import parse_boolean
from clothes_search.errors import ClothesSearchError
from clothes_search.field_limits import (
    ATTRIBUTE_TEXT_BYTES,
    ATTRIBUTES_JSON_BYTES,
    BRAND_BYTES,
    CATEGORY_BYTES,
    SKU_BYTES,
    utf8_length,
)

FeedFormat = Literal["jsonl", "csv", "json"]

MAX_ERRORS = 1000
MAX_LINE_BYTES = 1 << 20
MAX_ATTRIBUTES = 50
MAX_ATTRIBUTE_CHARS = 1024
MAX_SIZES = 100
MAX_SIZE_ENTRIES = 10 * MAX_SIZES  #: entries read before de-duplication
MAX_COLUMNS = 256  #: CSV header columns: the known fields and up to MAX_ATTRIBUTES others fit well
MAX_PRICE = Decimal("9999999999.99")  # items.price is NUMERIC(12, 2)

_EXTENSIONS: dict[str, FeedFormat] = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".json": "json"}
_FIELDS = frozenset(
    {"sku", "image_url", "image_path", "title", "category", "brand", "price", "currency", "color", "sizes"}
    | {"in_stock", "attributes"}
)
_ATTR_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_CONTROL_OR_BREAK = re.compile(r"[\x00-\x1f\x7f]")
_PRICE_TEXT = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_KEY_RULE = "letters, digits and '_', not starting with a digit, at most 64 characters"


class FeedFormatError(ClothesSearchError):
    """The feed as a whole cannot be read: missing file, unknown format, broken JSON array."""

    kind = "feed_format"


def _text(value: object, max_len: int, *, multiline: bool = False, max_bytes: int | None = None) -> str:
    """A stripped string of at most ``max_len`` characters without control characters.

    ``multiline`` allows tab, CR and LF inside (titles, attribute values). ``max_bytes`` also caps
    its UTF-8 length (fields the vector store holds, see :mod:`clothes_search.field_limits`).
    """
    if not isinstance(value, str):
        raise ValueError("must be a string")
    value = value.strip()
    if len(value) > max_len:
        raise ValueError(f"must be at most {max_len} characters, got {len(value)}")
    if max_bytes is not None and (size := utf8_length(value)) > max_bytes:
        raise ValueError(f"must be at most {max_bytes} bytes in UTF-8, got {size}")
    if (_CONTROL if multiline else _CONTROL_OR_BREAK).search(value):
        raise ValueError("must not contain control characters" + ("" if multiline else " or line breaks"))
    return value


def _sku(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    value = _text(value, 128, max_bytes=SKU_BYTES)
    if not value.isprintable():
        raise ValueError("must not contain control or non-printable characters")
    return value


def _category(value: object) -> str:
    value = re.sub(r"[\s\-]+", "_", _text(value, 1024).lower())
    if len(value) > 64:
        raise ValueError(f"must be at most 64 characters, got {len(value)}")
    if (size := utf8_length(value)) > CATEGORY_BYTES:
        raise ValueError(f"must be at most {CATEGORY_BYTES} bytes in UTF-8, got {size}")
    return value


def _image_url(value: object) -> str:
    value = _text(value, 2048)
    parts = urlsplit(value)
    scheme = parts.scheme.lower()
    if re.search(r"\s", value) or scheme not in ("http", "https", "file"):
        raise ValueError("must be an http, https or file URL without spaces")
    if (scheme != "file" and not parts.hostname) or (scheme == "file" and not parts.path):
        raise ValueError("must be a complete URL (http(s)://host/... or file:///path)")
    return value


def _price(value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise ValueError("must be a number")
    if isinstance(value, str):
        value = value.strip()
        if not _PRICE_TEXT.fullmatch(value.removeprefix("-")):
            raise ValueError(f"must be a number like '19.99' ('.' as decimal separator), got {value!r}")
    number = Decimal(repr(value) if isinstance(value, float) else value)
    if not number.is_finite():
        raise ValueError("must be a finite number")
    if number < 0:
        raise ValueError("must be >= 0")
    if number > MAX_PRICE:
        raise ValueError(f"must be at most {MAX_PRICE}")
    rounded = number.quantize(Decimal("0.01"))
    if rounded != number:
        raise ValueError(f"must have at most 2 decimal places, got {value}")
    return rounded if rounded else Decimal("0.00")  # no "-0.00"


def _currency(value: object) -> str:
    value = _text(value, 64).upper()
    if not re.fullmatch(r"[A-Z]{3}", value):
        raise ValueError(f"must be a 3-letter ISO 4217 code such as 'EUR', got {value!r}")
    return value


def _sizes(value: object) -> list[str]:
    items = value.split("|") if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ValueError("must be a list of strings or a '|'-separated string")
    if len(items) > MAX_SIZE_ENTRIES:  # before any work: a huge list costs nothing to refuse
        raise ValueError(f"at most {MAX_SIZES} sizes, got {len(items)} entries")
    sizes: dict[str, None] = {}  # ordered and de-duplicated in linear time
    for item in items:
        if not isinstance(item, str | int) or isinstance(item, bool):
            raise ValueError(f"entries must be strings, got {item!r}")
        size = _text(str(item), 32)
        if size:
            sizes[size] = None
    if len(sizes) > MAX_SIZES:
        raise ValueError(f"at most {MAX_SIZES} sizes, got {len(sizes)}")
    return list(sizes)


def _in_stock(value: object) -> bool:
    if isinstance(value, bool):
        return value
    parsed = parse_boolean(str(value)) if isinstance(value, int | str) else None
    if parsed is None:
        raise ValueError(f"must be {BOOLEAN_WORDS}, got {value!r}")
    return parsed


def _attributes_object(value: object) -> Mapping[Any, Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ValueError("not valid JSON (expected a JSON object)") from None
        except RecursionError:
            raise ValueError("JSON nested too deeply (expected a flat JSON object)") from None
    if not isinstance(value, Mapping):
        raise ValueError("must be a JSON object")
    return value


def _attributes(value: object) -> dict[str, AttributeValue]:
    attributes: dict[str, AttributeValue] = {}
    for key, item in _attributes_object(value).items():
        if not isinstance(key, str) or not _ATTR_KEY.fullmatch(key):
            raise ValueError(f"invalid key {key!r}: use {_KEY_RULE}")
        if item is None:
            continue
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f"{key}: must be a finite number")
        if isinstance(item, str):
            try:
                item = _text(item, MAX_ATTRIBUTE_CHARS, multiline=True, max_bytes=ATTRIBUTE_TEXT_BYTES)
            except ValueError as exc:
                raise ValueError(f"{key}: {exc}") from None
        if not isinstance(item, str | int | float):  # bool is an int
            raise ValueError(f"{key}: must be a string, number or boolean, got {type(item).__name__}")
        attributes[key] = item
    if len(attributes) > MAX_ATTRIBUTES:
        raise ValueError(f"at most {MAX_ATTRIBUTES} attributes, got {len(attributes)}")
    size = utf8_length(json.dumps(attributes, ensure_ascii=False))
    if size > ATTRIBUTES_JSON_BYTES:
        raise ValueError(f"at most {ATTRIBUTES_JSON_BYTES:,} bytes as JSON, got {size:,}")
    return attributes


AttributeValue = str | int | float | bool


class CatalogRow(BaseModel):
    """One validated catalog item of a feed; build it with ``CatalogRow.model_validate(mapping)``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sku: Annotated[str, BeforeValidator(_sku)]
    image_url: Annotated[str, BeforeValidator(_image_url)] | None = None
    image_path: Annotated[str, BeforeValidator(lambda v: _text(v, 1024))] | None = None
    title: Annotated[str, BeforeValidator(lambda v: _text(v, 512, multiline=True))] = ""
    category: Annotated[str, BeforeValidator(_category)] = ""
    brand: Annotated[str, BeforeValidator(lambda v: _text(v, 128, max_bytes=BRAND_BYTES))] = ""
    price: Annotated[Decimal, BeforeValidator(_price)] | None = None
    currency: Annotated[str, BeforeValidator(_currency)] | None = None
    color: Annotated[str, BeforeValidator(lambda v: _text(v, 64))] | None = None
    sizes: Annotated[list[str], BeforeValidator(_sizes)] = Field(default_factory=list)
    in_stock: Annotated[bool, BeforeValidator(_in_stock)] = True
    attributes: Annotated[dict[str, AttributeValue], BeforeValidator(_attributes)] = Field(
        default_factory=dict
    )

    @property
    def image_source(self) -> str:
        """The image URL, or else the local path, as validated."""
        return self.image_url if self.image_url is not None else str(self.image_path)

    @model_validator(mode="before")
    @classmethod
    def _collect(cls, data: Any) -> Any:
        """Normalise keys, drop "not given" values, move unknown keys into ``attributes``."""
        if not isinstance(data, Mapping):
            raise ValueError("record must be a JSON object")
        known: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for raw_key, value in data.items():
            if not isinstance(raw_key, str):
                raise ValueError(f"key {raw_key!r}: keys must be strings")
            name = raw_key.strip().lower() if raw_key.strip().lower() in _FIELDS else raw_key.strip()
            target = known if name in _FIELDS else extra
            if name in target:
                raise ValueError(f"{name}: given twice")
            if value is not None and not (isinstance(value, str) and not value.strip()):
                target[name] = value
        if extra:
            try:
                explicit = _attributes_object(known.get("attributes", {}))
            except ValueError as exc:
                raise ValueError(f"attributes: {exc}") from None
            for key, value in extra.items():
                if key in explicit and explicit[key] != value:
                    raise ValueError(f"attributes.{key}: given as a column and in attributes, differently")
            known["attributes"] = {**extra, **explicit}
        return known

    @model_validator(mode="after")
    def _cross_fields(self) -> CatalogRow:
        if self.image_url is None and self.image_path is None:
            raise ValueError("image_url: required (or image_path)")
        if self.image_url is not None and self.image_path is not None:
            raise ValueError("image_url, image_path: give exactly one, not both")
        if self.price is not None and self.currency is None:
            raise ValueError("currency: required when price is given")
        return self


@dataclass(frozen=True)
class FeedError:
    """One rejected row: its line (see the module doc), its sku if one could be read, and why."""

    line: int
    sku: str | None
    reason: str


_Item = CatalogRow | FeedError


@dataclass
class FeedParseResult:
    """The accepted rows as ``(line, row)`` in feed order, and the first ``max_errors`` errors."""

    rows: list[tuple[int, CatalogRow]] = field(default_factory=list)
    errors: list[FeedError] = field(default_factory=list)
    error_count: int = 0
    max_errors: int = MAX_ERRORS

    @property
    def errors_dropped(self) -> int:
        """How many errors were counted but not kept."""
        return self.error_count - len(self.errors)

    @property
    def ok(self) -> bool:
        """True when no row was rejected."""
        return self.error_count == 0

    def add(self, line: int, item: CatalogRow | FeedError) -> None:
        """Record one result of :func:`iter_feed`."""
        if isinstance(item, CatalogRow):
            self.rows.append((line, item))
            return
        self.error_count += 1
        if len(self.errors) < self.max_errors:
            self.errors.append(item)


def _raw_sku(record: Mapping[Any, Any]) -> str | None:
    for key, value in record.items():
        if isinstance(key, str) and key.strip().lower() == "sku" and isinstance(value, str | int):
            sku = str(value).strip()
            return sku[:128] if sku and not isinstance(value, bool) else None
    return None


def _reason(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        msg = "required" if err["type"] == "missing" else str(err["msg"]).removeprefix("Value error, ")
        loc = ".".join(str(part) for part in err["loc"])
        parts.append(f"{loc}: {msg}" if loc else msg)
    return " ".join("; ".join(parts).split())


def _validate(records: Iterable[tuple[int, object]]) -> Iterator[tuple[int, _Item]]:
    seen: dict[str, int] = {}
    for line, record in records:
        if isinstance(record, FeedError):
            yield line, record
            continue
        if not isinstance(record, Mapping):
            yield line, FeedError(line, None, f"record must be a JSON object, got {type(record).__name__}")
            continue
        try:
            row = CatalogRow.model_validate(record)
        except ValidationError as exc:
            yield line, FeedError(line, _raw_sku(record), _reason(exc))
            continue
        if row.sku in seen:
            yield line, FeedError(line, row.sku, f"sku: duplicate sku, first seen on line {seen[row.sku]}")
            continue
        seen[row.sku] = line
        yield line, row


def _read_lines(fh: BinaryIO) -> Iterator[tuple[int, str, str | None]]:
    """``(line number, text, problem)`` per physical line; a BOM on line 1 is dropped."""
    lineno = 0
    while raw := fh.readline(MAX_LINE_BYTES + 1):
        lineno += 1
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            while raw and not raw.endswith(b"\n"):
                raw = fh.readline(MAX_LINE_BYTES)
            yield lineno, "\n", f"line is longer than {MAX_LINE_BYTES} bytes"
            continue
        if lineno == 1:
            raw = raw.removeprefix(codecs.BOM_UTF8)
        try:
            yield lineno, raw.decode("utf-8"), None
        except UnicodeDecodeError as exc:
            yield lineno, raw.decode("utf-8", "replace"), f"line is not valid UTF-8 (byte {exc.start + 1})"


def _jsonl_records(fh: BinaryIO) -> Iterator[tuple[int, object]]:
    for lineno, text, problem in _read_lines(fh):
        if problem is not None:
            yield lineno, FeedError(lineno, None, problem)
        elif text.strip():
            try:
                record = json.loads(text)
            except ValueError as exc:
                yield lineno, FeedError(lineno, None, f"line is not valid JSON: {exc}")
            except RecursionError:
                yield lineno, FeedError(lineno, None, "line is JSON nested too deeply")
            else:
                yield lineno, record


def _check_header(header: list[str]) -> str | None:
    if len(header) > MAX_COLUMNS:
        return f"header: {len(header):,} columns, at most {MAX_COLUMNS} are read"
    names = [name.lower() if name.lower() in _FIELDS else name for name in header]
    if any(not name for name in names):
        return "header: a column has no name"
    repeated = [name for name, count in Counter(names).items() if count > 1]
    if repeated:
        return f"header: column {repeated[0]!r} appears twice"
    if "sku" not in names:
        return "header: no 'sku' column"
    if "image_url" not in names and "image_path" not in names:
        return "header: no 'image_url' or 'image_path' column"
    bad = [name for name in names if name not in _FIELDS and not _ATTR_KEY.fullmatch(name)]
    return f"header: column {bad[0]!r} is not a valid attribute name: use {_KEY_RULE}" if bad else None


def _csv_records(fh: BinaryIO) -> Iterator[tuple[int, object]]:
    problems: dict[int, str] = {}

    def texts() -> Iterator[str]:
        for lineno, text, problem in _read_lines(fh):
            if problem is not None:
                problems[lineno] = problem
            yield text

    reader = csv.reader(texts(), strict=True)
    header: list[str] | None = None
    last = 0
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield last + 1, FeedError(last + 1, None, f"CSV: {exc}")
            if reader.line_num == last:
                return
            last = reader.line_num
            continue
        start, last = last + 1, reader.line_num
        problem = next((problems.pop(n) for n in range(start, last + 1) if n in problems), None)
        if problem is not None:
            yield start, FeedError(start, None, problem if header is not None else f"header: {problem}")
            if header is None:
                return
        elif not any(cell.strip() for cell in cells):
            continue
        elif header is None:
            header = [cell.strip() for cell in cells]
            header_problem = _check_header(header)
            if header_problem is not None:
                yield start, FeedError(start, None, header_problem)
                return
        elif len(cells) != len(header):
            record = dict(zip(header, cells, strict=False))
            reason = f"row has {len(cells)} columns, the header has {len(header)}"
            yield start, FeedError(start, _raw_sku(record), reason)
        else:
            yield start, dict(zip(header, cells, strict=True))


def _json_records(path: Path) -> Iterator[tuple[int, object]]:
    try:
        data = json.loads(path.read_bytes().decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise FeedFormatError(f"{path}: not a valid UTF-8 JSON document: {exc}") from exc
    except RecursionError:
        raise FeedFormatError(f"{path}: JSON nested too deeply") from None
    if isinstance(data, Mapping):
        data = [data]
    if not isinstance(data, list):
        raise FeedFormatError(f"{path}: expected a JSON array of objects, got {type(data).__name__}")
    return iter(list(enumerate(data, start=1)))


def iter_feed(path: Path, *, format: FeedFormat | None = None) -> Iterator[tuple[int, _Item]]:
    """Yield ``(line, CatalogRow or FeedError)`` in feed order, reading the file as it goes.

    The format comes from ``format`` or the extension (``.jsonl``/``.ndjson``, ``.csv``,
    ``.json``). Raises :class:`FeedFormatError` at once for a missing file, an unknown format or
    a ``.json`` file that is not a JSON array (or object).
    """
    path = Path(path)
    fmt = format or _EXTENSIONS.get(path.suffix.lower())
    if fmt not in ("jsonl", "csv", "json"):
        raise FeedFormatError(f"{path}: unknown feed format; use .jsonl, .ndjson, .csv or .json")
    if not path.is_file():
        raise FeedFormatError(f"{path}: no such feed file")
    if fmt == "json":
        return _validate(_json_records(path))
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise FeedFormatError(f"{path}: cannot open: {exc}") from exc
    return _validate(_closing(fh, _jsonl_records(fh) if fmt == "jsonl" else _csv_records(fh)))


def _closing(fh: BinaryIO, records: Iterator[tuple[int, object]]) -> Iterator[tuple[int, object]]:
    with fh:
        yield from records


def parse_feed(
    path: Path, *, format: FeedFormat | None = None, max_errors: int = MAX_ERRORS
) -> FeedParseResult:
    """Parse a whole feed file; see :func:`iter_feed` and the module doc for the rules."""
    result = FeedParseResult(max_errors=max_errors)
    for line, item in iter_feed(path, format=format):
        result.add(line, item)
    return result


def parse_records(
    records: Sequence[Mapping[str, object]] | Mapping[str, object], *, max_errors: int = MAX_ERRORS
) -> FeedParseResult:
    """Validate API input (a parsed JSON array of objects, or one object); line = index + 1."""
    if isinstance(records, Mapping):
        records = [records]
    if isinstance(records, str | bytes) or not isinstance(records, Sequence):
        raise FeedFormatError("expected a JSON array of objects or one JSON object")
    result = FeedParseResult(max_errors=max_errors)
    for line, item in _validate(enumerate(records, start=1)):
        result.add(line, item)
    return result
