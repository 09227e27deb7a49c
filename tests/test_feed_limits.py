"""Feed limits that match the vector store's and parsing that stays linear on hostile rows.

Before: limits counted characters while Milvus counts UTF-8 bytes, so a row could pass validation
and then freeze its batch; sizes were de-duplicated quadratically; a deeply nested ``attributes``
string raised ``RecursionError`` out of the parser; a 10k-column CSV header took seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from db.vector_records import TEXT_LIMITS, ItemFields, VectorStoreError, check_text
from db.vector_schema import ATTRIBUTE_TEXT_LIMIT, JSON_LIMIT_BYTES, CollectionLayout, fields_row
from ingestion.feed import MAX_COLUMNS, MAX_SIZES, parse_feed, parse_records

GOOD = {"sku": "A1", "image_url": "https://cdn.example.com/a1.jpg"}
LAYOUT = CollectionLayout.planned(8, {"color": "string"}, None)


def _one(row: dict) -> tuple[object, str | None]:
    result = parse_records([row])
    if result.rows:
        return result.rows[0][1], None
    return None, result.errors[0].reason


def _stored(row) -> dict:
    """What the vector store would write for an accepted row (raises VectorStoreError if refused)."""
    check_text(row.sku, "item_key")
    fields = ItemFields(category=row.category, brand=row.brand, attributes=dict(row.attributes))
    return fields_row(fields, LAYOUT)


@pytest.mark.parametrize(
    ("field", "at_limit", "over"),
    [
        ("sku", "👕" * 64, "👕" * 65),  # 256 / 260 bytes, 64 / 65 characters
        ("brand", "é" * 64, "é" * 65),  # 128 / 130 bytes
        ("category", "б" * 32, "б" * 33),  # 64 / 66 bytes
    ],
)
def test_text_fields_are_limited_in_the_bytes_the_store_counts(field: str, at_limit: str, over: str) -> None:
    accepted, _ = _one({**GOOD, field: at_limit})
    assert accepted is not None
    _stored(accepted)  # the store takes what validation let through
    refused, reason = _one({**GOOD, field: over})
    assert refused is None and f"{field}: " in reason and "bytes in UTF-8" in reason
    with pytest.raises(VectorStoreError):  # and would have refused it at write time
        if field == "sku":
            check_text(over, "item_key")
        else:
            check_text(over, field)


def test_attribute_values_fit_a_declared_attribute_column() -> None:
    accepted, _ = _one({**GOOD, "attributes": {"color": "é" * 128, "fabric": "ü" * 128}})
    assert _stored(accepted)["attr_color"] == "é" * 128
    refused, reason = _one({**GOOD, "attributes": {"color": "é" * 129}})
    assert refused is None and "color" in reason and "256 bytes" in reason
    # the object the review built (50 attributes of 1,024 two-byte characters: 105,950 bytes of JSON)
    big = {f"a{i:02d}_{'k' * 58}": "é" * 1024 for i in range(50)}
    assert len(json.dumps(big, ensure_ascii=False).encode()) > JSON_LIMIT_BYTES
    assert _one({**GOOD, "attributes": big})[0] is None


def test_the_feed_uses_the_stores_numbers() -> None:
    from clothes_search import field_limits

    assert TEXT_LIMITS["item_key"] == field_limits.SKU_BYTES == 256
    assert TEXT_LIMITS["brand"] == field_limits.BRAND_BYTES == 128
    assert TEXT_LIMITS["category"] == TEXT_LIMITS["crop_category"] == field_limits.CATEGORY_BYTES == 64
    assert ATTRIBUTE_TEXT_LIMIT == field_limits.ATTRIBUTE_TEXT_BYTES == 256
    assert JSON_LIMIT_BYTES == field_limits.ATTRIBUTES_JSON_BYTES == 65_536


def test_free_attributes_above_the_json_limit_are_refused_by_the_store() -> None:
    fields = ItemFields(category="top", brand="", attributes={f"k{i}": "x" * 1000 for i in range(70)})
    with pytest.raises(VectorStoreError, match="bytes of JSON"):
        fields_row(fields, LAYOUT)


def test_a_huge_sizes_list_is_refused_before_any_per_entry_work() -> None:
    row, reason = _one({**GOOD, "sizes": [f"S{i}" for i in range(16_000)]})
    assert row is None and "entries" in reason
    many_repeats, _ = _one({**GOOD, "sizes": ["M", "L"] * 400 + [str(n) for n in range(98)]})
    assert many_repeats.sizes[:2] == ["M", "L"] and len(many_repeats.sizes) == MAX_SIZES
    over, reason = _one({**GOOD, "sizes": [str(n) for n in range(MAX_SIZES + 1)]})
    assert over is None and f"at most {MAX_SIZES} sizes" in reason


def test_deeply_nested_json_is_a_row_error_not_a_crash(tmp_path: Path) -> None:
    nested = "[" * 20_000 + "]" * 20_000  # far past the recursion limit, within a CSV field
    row, reason = _one({**GOOD, "attributes": nested})
    assert row is None and "nested too deeply" in reason

    csv_feed = tmp_path / "feed.csv"
    csv_feed.write_text(
        "sku,image_url,attributes\n"
        f'B1,https://cdn.example.com/b1.jpg,"{nested}"\n'
        "B2,https://cdn.example.com/b2.jpg,\n"
    )
    parsed = parse_feed(csv_feed)
    assert [row.sku for _, row in parsed.rows] == ["B2"]
    assert "nested too deeply" in parsed.errors[0].reason and parsed.errors[0].line == 2

    jsonl_feed = tmp_path / "feed.jsonl"
    jsonl_feed.write_text(nested + "\n" + json.dumps({**GOOD, "sku": "C2"}) + "\n")
    parsed = parse_feed(jsonl_feed)
    assert [row.sku for _, row in parsed.rows] == ["C2"]
    assert parsed.errors[0].line == 1


def test_a_csv_header_with_thousands_of_columns_is_one_error(tmp_path: Path) -> None:
    feed = tmp_path / "wide.csv"
    names = ["sku", "image_url", *(f"c{i}" for i in range(10_000))]
    feed.write_text(",".join(names) + "\n" + "A1,https://cdn.example.com/a.jpg" + "," * 10_000 + "\n")
    parsed = parse_feed(feed)
    assert not parsed.rows and len(parsed.errors) == 1
    assert f"at most {MAX_COLUMNS}" in parsed.errors[0].reason

    fits = tmp_path / "fits.csv"
    names = ["sku", "image_url", *(f"c{i}" for i in range(40))]
    fits.write_text(",".join(names) + "\n" + "A1,https://cdn.example.com/a.jpg" + ",x" * 40 + "\n")
    assert len(parse_feed(fits).rows) == 1
