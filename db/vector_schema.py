"""The crops collection's fields, and how an item's filter fields become a row of them.

Fields of a collection made by this version (:data:`SCHEMA_VERSION`):

- ``id`` (INT64 primary key), ``vector``, ``item_key``, ``crop_category``, ``written_at``;
- the item's filter fields: ``category`` (optionally the partition key), ``brand``, ``price`` with
  ``has_price`` (no nullable field: Milvus < 2.5 has none, so an unknown price is stored as 0 with
  ``has_price`` false), ``in_stock``;
- one typed field per attribute declared in ``milvus.attribute_fields`` (``attr_<name>``: VARCHAR,
  ``""`` when absent; INT64 / DOUBLE / BOOL with ``has_attr_<name>``), so that filtering on it is a
  scalar comparison (indexed where the server can) instead of a JSON lookup; ``attributes`` (JSON)
  carries the free rest;
- ``shard`` (``id % SHARDS``): lets a filtered search be split into sub-searches that each select a
  small enough share of the collection for the server's exact path (:mod:`db.filtered_search`).

A collection made by an earlier version (nullable ``price``, no ``shard``, no declared attributes) is
used as it is: :class:`CollectionLayout` is read from the collection itself, and rows and filter
expressions follow it.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from pymilvus import DataType, MilvusClient

from clothes_search.field_limits import ATTRIBUTE_TEXT_BYTES, ATTRIBUTES_JSON_BYTES
from db.filters import ATTRIBUTE_NAME_RE, AttributeType, FilterLayout
from db.vector_records import TEXT_LIMITS, ItemFields, VectorStoreError, check_text

SCHEMA_VERSION = 2
SHARDS = 64
ATTRIBUTE_TEXT_LIMIT = ATTRIBUTE_TEXT_BYTES  # VARCHAR bytes of a declared string attribute
JSON_LIMIT_BYTES = ATTRIBUTES_JSON_BYTES  # Milvus' largest JSON value
_ATTRIBUTE_TYPES: dict[AttributeType, DataType] = {
    "string": DataType.VARCHAR,
    "int": DataType.INT64,
    "float": DataType.DOUBLE,
    "bool": DataType.BOOL,
}
_TYPES_BY_DATA_TYPE = {int(dtype): name for name, dtype in _ATTRIBUTE_TYPES.items()}


def attribute_field(name: str) -> str:
    return f"attr_{name}"


def presence_field(name: str) -> str:
    return f"has_attr_{name}"


@dataclass(frozen=True)
class CollectionLayout(FilterLayout):
    """What a collection holds: its dimension and which optional fields it has."""

    dim: int = 0
    has_shard: bool = True
    partition_key: str | None = None

    @classmethod
    def planned(
        cls, dim: int, attribute_fields: Mapping[str, AttributeType], partition_key: str | None
    ) -> CollectionLayout:
        """The layout of a collection this version creates."""
        for name in attribute_fields:
            if not ATTRIBUTE_NAME_RE.fullmatch(name):
                raise VectorStoreError(f"declared attribute {name!r}: use letters, digits and '_'")
        return cls(
            price_flag=True,
            attribute_fields=MappingProxyType(dict(attribute_fields)),
            dim=dim,
            has_shard=True,
            partition_key=partition_key,
        )

    @classmethod
    def described(cls, description: Mapping[str, Any]) -> CollectionLayout:
        """The layout of an existing collection, from ``describe_collection``."""
        fields = {f["name"]: f for f in description["fields"]}
        attributes: dict[str, AttributeType] = {}
        for name, spec in fields.items():
            if name.startswith("attr_"):
                attributes[name.removeprefix("attr_")] = _TYPES_BY_DATA_TYPE[int(spec["type"])]
        return cls(
            price_flag="has_price" in fields,
            attribute_fields=MappingProxyType(attributes),
            dim=int(fields["vector"]["params"]["dim"]),
            has_shard="shard" in fields,
            partition_key=next((n for n, f in fields.items() if f.get("is_partition_key")), None),
        )

    def output_fields(self) -> list[str]:
        """The scalar fields that :func:`row_fields` reads back."""
        names = ["item_key", "category", "brand", "price", "in_stock", "attributes"]
        if self.price_flag:
            names.append("has_price")
        for name, kind in self.attribute_fields.items():
            names.append(attribute_field(name))
            if kind != "string":
                names.append(presence_field(name))
        return names


def collection_schema(layout: CollectionLayout) -> Any:
    """The pymilvus schema of a new collection with ``layout``."""
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=layout.dim)
    for text in ("item_key", "crop_category", "category", "brand"):
        schema.add_field(
            text,
            DataType.VARCHAR,
            max_length=TEXT_LIMITS[text],
            is_partition_key=text == layout.partition_key,
        )
    schema.add_field("price", DataType.DOUBLE)
    schema.add_field("has_price", DataType.BOOL)
    schema.add_field("in_stock", DataType.BOOL)
    for name, kind in layout.attribute_fields.items():
        extra = {"max_length": ATTRIBUTE_TEXT_LIMIT} if kind == "string" else {}
        schema.add_field(attribute_field(name), _ATTRIBUTE_TYPES[kind], **extra)
        if kind != "string":
            schema.add_field(presence_field(name), DataType.BOOL)
    schema.add_field("attributes", DataType.JSON)
    schema.add_field("shard", DataType.INT64)
    schema.add_field("written_at", DataType.INT64)
    return schema


def scalar_index_fields(layout: CollectionLayout) -> dict[str, str]:
    """Scalar fields worth an index, by kind (``"text"`` or ``"number"``): the filterable ones."""
    fields = {"category": "text", "brand": "text", "price": "number", "shard": "number"}
    for name, kind in layout.attribute_fields.items():
        if kind in ("string", "int", "float"):
            fields[attribute_field(name)] = "text" if kind == "string" else "number"
    return fields


def _attribute_value(name: str, kind: AttributeType, value: object) -> Any:
    """A declared attribute's value in its field's type (a string attribute may be any scalar)."""
    where = f"attributes.{name}"
    if kind == "string":
        text = value if isinstance(value, str) else _scalar_text(value, where)
        if len(text.encode("utf-8", "surrogatepass")) > ATTRIBUTE_TEXT_LIMIT:
            raise VectorStoreError(f"{where} {text[:40]!r}... is longer than {ATTRIBUTE_TEXT_LIMIT} bytes")
        return text
    if kind == "bool":
        if not isinstance(value, bool):
            raise VectorStoreError(f"{where}: declared bool, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise VectorStoreError(f"{where}: declared {kind}, got {value!r}")
    if kind == "int":
        if isinstance(value, float) and not value.is_integer():
            raise VectorStoreError(f"{where}: declared int, got {value!r}")
        return int(value)
    return float(value)


def _scalar_text(value: object, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, numbers.Real):
        return repr(value)
    raise VectorStoreError(f"{where}: expected a string, number or boolean, got {type(value).__name__}")


def fields_row(fields: ItemFields, layout: CollectionLayout) -> dict[str, Any]:
    """The scalar columns of a crop row for ``fields`` in a collection of ``layout``."""
    price = fields.price
    if price is not None and (
        isinstance(price, bool) or not isinstance(price, numbers.Real) or not math.isfinite(price)
    ):
        raise VectorStoreError(f"price must be a finite number or None, got {price!r}")
    if not isinstance(fields.attributes, dict) or not all(isinstance(k, str) for k in fields.attributes):
        raise VectorStoreError("attributes must be a dict with string keys")
    row: dict[str, Any] = {
        "category": check_text(fields.category, "category", empty_ok=True),
        "brand": check_text(fields.brand, "brand", empty_ok=True),
        "in_stock": bool(fields.in_stock),
    }
    if layout.price_flag:
        row["price"] = 0.0 if price is None else float(price)
        row["has_price"] = price is not None
    else:  # an earlier schema's nullable price
        row["price"] = None if price is None else float(price)
    free = dict(fields.attributes)
    for name, kind in layout.attribute_fields.items():
        value = free.pop(name, None)
        if kind == "string":
            row[attribute_field(name)] = "" if value is None else _attribute_value(name, kind, value)
        else:
            present = value is not None
            row[attribute_field(name)] = _attribute_value(name, kind, value) if present else _ZERO[kind]
            row[presence_field(name)] = present
    try:
        size = len(json.dumps(free, ensure_ascii=False, allow_nan=False).encode("utf-8", "surrogatepass"))
    except (TypeError, ValueError) as exc:
        raise VectorStoreError(f"attributes cannot be stored as JSON: {exc}") from None
    if size > JSON_LIMIT_BYTES:
        raise VectorStoreError(f"attributes are {size:,} bytes of JSON, above {JSON_LIMIT_BYTES:,}")
    row["attributes"] = free
    return row


_ZERO: dict[AttributeType, Any] = {"string": "", "int": 0, "float": 0.0, "bool": False}


def row_fields(row: Mapping[str, Any], layout: CollectionLayout) -> ItemFields:
    """The item's filter fields as a collection of ``layout`` stored them."""
    price = row.get("price")
    if layout.price_flag and not row.get("has_price"):
        price = None
    attributes = dict(row.get("attributes") or {})
    for name, kind in layout.attribute_fields.items():
        value = row.get(attribute_field(name))
        present = value != "" if kind == "string" else bool(row.get(presence_field(name)))
        if present and value is not None:
            attributes[name] = value
    return ItemFields(
        category=row["category"],
        brand=row["brand"],
        price=None if price is None else float(price),
        in_stock=bool(row["in_stock"]),
        attributes=attributes,
    )


@dataclass(frozen=True)
class ServerInfo:
    """Which Milvus answers: the embedded Lite or a server, and its version."""

    lite: bool
    version: tuple[int, int, int]
    text: str = field(default="")

    MIN_SERVER = (2, 3, 0)
    MIN_LITE = (3, 0, 0)

    @classmethod
    def parse(cls, text: str) -> ServerInfo:
        import re

        lite = text.startswith("milvus_lite")
        found = re.search(r"(\d+)\.(\d+)\.(\d+)", text)
        if found is None:
            raise VectorStoreError(f"cannot read the Milvus version {text!r}")
        version = tuple(int(part) for part in found.groups())
        return cls(lite=lite, version=version, text=text)  # type: ignore[arg-type]

    def check_supported(self) -> None:
        minimum = self.MIN_LITE if self.lite else self.MIN_SERVER
        if self.version < minimum:
            what = "Milvus Lite" if self.lite else "Milvus"
            raise VectorStoreError(
                f"{what} {self.text} is not supported: clothes-search needs {what} "
                f"{'.'.join(map(str, minimum))} or newer"
            )

    @property
    def scalar_index(self) -> dict[str, str]:
        """The scalar index type per field kind this engine builds (2.3 has only Trie / STL_SORT)."""
        if not self.lite and self.version < (2, 4, 0):
            return {"text": "Trie", "number": "STL_SORT"}
        return {"text": "INVERTED", "number": "INVERTED"}
