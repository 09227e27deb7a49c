"""Catalog filters and their translation into Milvus boolean expressions.

Milvus Lite does not support filter templating (``filter_params``), so expressions are built
here, as text, from validated values only:

* field names are constants of this module, attribute names must match :data:`ATTRIBUTE_NAME_RE`;
* every string value goes through :func:`string_literal` (a JSON string literal: quotes,
  backslashes and newlines are escaped; non-ASCII characters are kept as they are, because
  Milvus Lite's parser rejects ``\\uXXXX`` escapes, so control characters are refused);
* numbers are finite and written with ``repr``; booleans as ``true`` / ``false``.

User text therefore never changes an expression's structure. Invalid input raises
:class:`InvalidFilterError`, which names the offending parameter (the API answers 400).
"""

from __future__ import annotations

import json
import math
import numbers
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import numpy as np

from clothes_search.booleans import parse_boolean
from clothes_search.errors import ClothesSearchError

# The schema fields an expression may use (see db.vectors for the collection schema).
FIELD_CATEGORY = "category"
FIELD_BRAND = "brand"
FIELD_PRICE = "price"
FIELD_HAS_PRICE = "has_price"
FIELD_IN_STOCK = "in_stock"
FIELD_ATTRIBUTES = "attributes"

ATTRIBUTE_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
MAX_STRING_LENGTH = 256
MAX_VALUES = 100
MAX_ATTRIBUTES = 32
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_ALLOWED_CONTROL = frozenset("\t\n\r")

AttributeValue = str | int | float | bool
AttributeType = Literal["string", "int", "float", "bool"]


@dataclass(frozen=True)
class FilterLayout:
    """Which fields a collection filters on (see :mod:`db.vector_schema`).

    ``price_flag``: an unknown price is stored as 0 with ``has_price`` false (else: a nullable
    ``price``, the first schema). ``attribute_fields``: attributes stored as typed scalar fields of
    their own (``attr_<name>``) rather than in the JSON field.
    """

    price_flag: bool = False
    attribute_fields: Mapping[str, AttributeType] = field(default_factory=dict)


class InvalidFilterError(ClothesSearchError):
    """A filter parameter is invalid; :attr:`parameter` names it."""

    kind = "invalid_filter"

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"invalid filter parameter {parameter!r}: {message}")
        self.parameter = parameter


def check_string(value: object, parameter: str) -> str:
    """Validate a filter string: a non-empty ``str`` without control characters, within the length limit."""
    if not isinstance(value, str):
        raise InvalidFilterError(parameter, f"expected a string, got {type(value).__name__}")
    if not value:
        raise InvalidFilterError(parameter, "must not be empty")
    if len(value) > MAX_STRING_LENGTH:
        raise InvalidFilterError(parameter, f"longer than {MAX_STRING_LENGTH} characters")
    bad = forbidden_character(value)
    if bad is not None:
        raise InvalidFilterError(parameter, f"contains the control character U+{ord(bad):04X}")
    return value


def forbidden_character(value: str) -> str | None:
    """The first character a string literal cannot hold: controls (but tab, newlines), surrogates."""
    for char in value:
        category = unicodedata.category(char)
        if (category == "Cc" and char not in _ALLOWED_CONTROL) or category == "Cs":
            return char
    return None


def string_literal(value: str) -> str:
    """The one escaping function: ``value`` as a JSON string literal that Milvus parses back exactly.

    Callers validate ``value`` with :func:`check_string` first (no control characters other
    than tab, newline and carriage return, which JSON writes as ``\\t``, ``\\n``, ``\\r``).
    """
    return json.dumps(value, ensure_ascii=False)


def number_literal(value: object, parameter: str) -> str:
    """A finite number (``int`` within int64, or ``float``) as expression text."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise InvalidFilterError(parameter, f"expected a number, got {type(value).__name__}")
    if isinstance(value, numbers.Integral):
        if not INT64_MIN <= int(value) <= INT64_MAX:
            raise InvalidFilterError(parameter, "integer outside the 64-bit range")
        return str(int(value))
    if not math.isfinite(float(value)):
        raise InvalidFilterError(parameter, "must be a finite number")
    return repr(float(value))


def value_literal(value: object, parameter: str) -> str:
    """An attribute value (str, int, float or bool) as expression text."""
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, str):
        return string_literal(check_string(value, parameter))
    return number_literal(value, parameter)


def _string_tuple(values: object, parameter: str) -> tuple[str, ...]:
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise InvalidFilterError(parameter, "expected a list of strings")
    items = list(values)
    if len(items) > MAX_VALUES:
        raise InvalidFilterError(parameter, f"more than {MAX_VALUES} values")
    checked = [check_string(item, parameter) for item in items]
    return tuple(dict.fromkeys(checked))  # unique, order kept


def _optional_number(value: object, parameter: str) -> float | None:
    if value is None:
        return None
    number_literal(value, parameter)  # validates
    return float(value)  # type: ignore[arg-type]  # a finite real


def _in_list(field_name: str, values: tuple[str, ...]) -> str:
    return f"{field_name} in [{', '.join(string_literal(v) for v in values)}]"


@dataclass(frozen=True, eq=False)
class CatalogFilter:
    """Constraints on the item's denormalised fields; every given constraint must hold (AND).

    A list matches any of its values (OR). ``price_min``/``price_max`` are inclusive; items with
    an unknown price never match a price range. ``attributes`` are equalities on the JSON field.
    Construction validates everything and raises :class:`InvalidFilterError`. Filters are equal
    when their expressions are.
    """

    categories: tuple[str, ...] = ()
    brands: tuple[str, ...] = ()
    price_min: float | None = None
    price_max: float | None = None
    in_stock: bool | None = None
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "categories", _string_tuple(self.categories, "categories"))
        object.__setattr__(self, "brands", _string_tuple(self.brands, "brands"))
        price_min = _optional_number(self.price_min, "price_min")
        price_max = _optional_number(self.price_max, "price_max")
        if price_min is not None and price_max is not None and price_min > price_max:
            raise InvalidFilterError("price_min", "greater than price_max")
        object.__setattr__(self, "price_min", price_min)
        object.__setattr__(self, "price_max", price_max)
        if self.in_stock is not None and not isinstance(self.in_stock, bool):
            raise InvalidFilterError(
                "in_stock", f"expected true or false, got {type(self.in_stock).__name__}"
            )
        object.__setattr__(self, "attributes", MappingProxyType(_check_attributes(self.attributes)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CatalogFilter):
            return NotImplemented
        return self.to_expression() == other.to_expression()  # True and 1 differ here, unlike in ==

    def __hash__(self) -> int:
        return hash(self.to_expression())

    def to_expression(self, layout: FilterLayout | None = None) -> str:
        """The Milvus boolean expression for a collection of ``layout`` (default: the first schema's
        fields); an empty string when there is no constraint."""
        layout = layout or FilterLayout()
        parts: list[str] = []
        if self.categories:
            parts.append(_in_list(FIELD_CATEGORY, self.categories))
        if self.brands:
            parts.append(_in_list(FIELD_BRAND, self.brands))
        if layout.price_flag and (self.price_min is not None or self.price_max is not None):
            parts.append(f"{FIELD_HAS_PRICE} == true")  # an unknown price never matches a range
        if self.price_min is not None:
            parts.append(f"{FIELD_PRICE} >= {number_literal(self.price_min, 'price_min')}")
        if self.price_max is not None:
            parts.append(f"{FIELD_PRICE} <= {number_literal(self.price_max, 'price_max')}")
        if self.in_stock is not None:
            parts.append(f"{FIELD_IN_STOCK} == {'true' if self.in_stock else 'false'}")
        for name, value in self.attributes.items():
            declared = layout.attribute_fields.get(name)
            parameter = f"attributes.{name}"
            if declared is None:
                key = string_literal(name)
                parts.append(f"{FIELD_ATTRIBUTES}[{key}] == {value_literal(value, parameter)}")
                continue
            literal = value_literal(_as_declared(value, declared, parameter), parameter)
            if declared != "string":
                parts.append(f"has_attr_{name} == true")
            parts.append(f"attr_{name} == {literal}")
        return " and ".join(f"({part})" for part in parts)


def _as_declared(value: AttributeValue, declared: AttributeType, parameter: str) -> AttributeValue:
    """An attribute filter value in the type of its declared field (query strings give strings)."""
    if declared == "string":
        if isinstance(value, bool):
            return "true" if value else "false"
        return value if isinstance(value, str) else repr(value)
    if declared == "bool":
        parsed = parse_boolean(value) if isinstance(value, str) else value
        if not isinstance(parsed, bool):
            raise InvalidFilterError(parameter, f"expected true or false, got {value!r}")
        return parsed
    if isinstance(value, bool):
        raise InvalidFilterError(parameter, f"expected a number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise InvalidFilterError(parameter, f"expected a number, got {value!r}") from None
    if not math.isfinite(number):
        raise InvalidFilterError(parameter, f"expected a finite number, got {value!r}")
    if declared == "int":
        if isinstance(value, int):
            return value  # exact, however large
        if not number.is_integer():
            raise InvalidFilterError(parameter, f"expected an integer, got {value!r}")
        return int(number)
    return number


def _check_attributes(attributes: object) -> dict[str, AttributeValue]:
    if not isinstance(attributes, Mapping):
        raise InvalidFilterError("attributes", "expected a mapping of attribute name to value")
    if len(attributes) > MAX_ATTRIBUTES:
        raise InvalidFilterError("attributes", f"more than {MAX_ATTRIBUTES} attributes")
    checked: dict[str, Any] = {}
    for name, value in attributes.items():
        if not isinstance(name, str) or not ATTRIBUTE_NAME_RE.fullmatch(name):
            raise InvalidFilterError(
                "attributes",
                "attribute names are 1-64 letters, digits or underscores, not starting with a digit",
            )
        value_literal(value, f"attributes.{name}")  # validates
        checked[name] = value
    return checked
