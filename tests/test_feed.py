"""Catalog feeds: JSON lines, CSV, JSON arrays and API records, with exact line numbers."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from clothes_search.errors import ClothesSearchError
from ingestion.feed import (
    CatalogRow,
    FeedError,
    FeedFormatError,
    iter_feed,
    parse_feed,
    parse_records,
)


def _write(path: Path, text: str, *, bom: bool = False) -> Path:
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def _jsonl(*items: object) -> str:
    return "".join((item if isinstance(item, str) else json.dumps(item)) + "\n" for item in items)


def _errors(result: object) -> dict[int, str]:
    return {error.line: error.reason for error in result.errors}


GOOD = {"sku": "A1", "image_url": "https://cdn.example.com/a1.jpg"}


def test_jsonl_good_and_bad_rows_keep_order_and_line_numbers(tmp_path: Path) -> None:
    text = _jsonl(
        {**GOOD, "title": "Red dress", "price": "19.99", "currency": "eur", "category": " Evening-Dress "},
        "{not json",  # 2
        "[1, 2]",  # 3
        {"image_url": "https://x.example/1.jpg"},  # 4: no sku
        "",  # 5: blank, skipped
        {"sku": "B2"},  # 6: no image
        {"sku": "B3", "image_url": "https://x.example/3.jpg", "image_path": "/tmp/3.jpg"},  # 7
        {"sku": "B4", "image_path": "images/b4.png", "price": -1, "currency": "EUR"},  # 8
        {"sku": "B5", "image_path": "b5.png", "price": 10, "currency": "EURO"},  # 9
        {"sku": "B6", "image_path": "b6.png", "in_stock": "maybe"},  # 10
        {"sku": "C7", "image_path": "c7.png", "material": "cotton", "fit": 2, "in_stock": "No"},  # 11
        {"sku": "B8", "image_path": "b8.png", "Bad Key": "x"},  # 12
        {**GOOD, "title": "again"},  # 13: duplicate of line 1
        "   ",  # 14: whitespace only, skipped
        {"sku": 9001, "image_url": "file:///data/9001.jpg", "sizes": ["S", "M", 42, "M"]},  # 15
    )
    result = parse_feed(_write(tmp_path / "feed.jsonl", text))

    assert [(line, row.sku) for line, row in result.rows] == [(1, "A1"), (11, "C7"), (15, "9001")]
    errors = _errors(result)
    assert sorted(errors) == [2, 3, 4, 6, 7, 8, 9, 10, 12, 13]
    assert errors[2].startswith("line is not valid JSON")
    assert errors[3] == "record must be a JSON object, got list"
    assert errors[4] == "sku: required"
    assert errors[6] == "image_url: required (or image_path)"
    assert errors[7] == "image_url, image_path: give exactly one, not both"
    assert errors[8] == "price: must be >= 0"
    assert errors[9].startswith("currency: must be a 3-letter ISO 4217 code")
    assert errors[10].startswith("in_stock: must be true/false")
    assert errors[12].startswith("attributes: invalid key 'Bad Key'")
    assert errors[13] == "sku: duplicate sku, first seen on line 1"
    assert result.error_count == 10 and result.errors_dropped == 0 and not result.ok

    skus = {error.line: error.sku for error in result.errors}
    assert skus[4] is None and skus[8] == "B4" and skus[13] == "A1"

    first = result.rows[0][1]
    assert first.price == Decimal("19.99") and first.currency == "EUR"
    assert first.category == "evening_dress" and first.title == "Red dress" and first.in_stock is True
    assert first.image_source == "https://cdn.example.com/a1.jpg" and first.image_path is None
    c7 = result.rows[1][1]
    assert c7.attributes == {"material": "cotton", "fit": 2} and c7.in_stock is False
    assert c7.image_source == "c7.png"
    assert result.rows[2][1].sizes == ["S", "M", "42"]


def test_row_objects_are_frozen() -> None:
    row = CatalogRow.model_validate(GOOD)
    with pytest.raises(ValueError, match="frozen"):
        row.sku = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("price", "expected"),
    [("19.99", Decimal("19.99")), (19.99, Decimal("19.99")), (5, Decimal("5.00")), ("0", Decimal("0.00"))],
)
def test_price_accepted(price: object, expected: Decimal) -> None:
    row = CatalogRow.model_validate({**GOOD, "price": price, "currency": "USD"})
    assert row.price == expected


@pytest.mark.parametrize(
    ("price", "reason"),
    [
        ("19,99", "price: must be a number like '19.99'"),
        ("1e3", "price: must be a number like '19.99'"),
        (float("nan"), "price: must be a finite number"),
        (float("inf"), "price: must be a finite number"),
        ("-0.5", "price: must be >= 0"),
        ("1.999", "price: must have at most 2 decimal places"),
        (1e30, "price: must be at most"),
        (True, "price: must be a number"),
    ],
)
def test_price_rejected(price: object, reason: str) -> None:
    result = parse_records([{**GOOD, "price": price, "currency": "USD"}])
    assert result.errors[0].reason.startswith(reason)


def test_field_rules() -> None:
    result = parse_records(
        [
            {**GOOD, "price": "10.00"},  # 1: no currency
            {**GOOD, "sku": "x\ty"},  # 2
            {**GOOD, "sku": "s" * 129},  # 3
            {**GOOD, "image_url": "ftp://host/a.jpg"},  # 4
            {**GOOD, "title": "t" * 513},  # 5
            {**GOOD, "attributes": {"nested": {"a": 1}}},  # 6
            {**GOOD, "attributes": {f"k{i}": i for i in range(51)}},  # 7
            {**GOOD, "material": "wool", "attributes": {"material": "silk"}},  # 8
            {**GOOD, "sku": "ok", "currency": "gbp", "in_stock": 0, "color": None, "sizes": "S | M|"},  # 9
            "not an object",  # 10
            {**GOOD, "sku": "   "},  # 11
        ]
    )
    errors = _errors(result)
    assert errors[1] == "currency: required when price is given"
    assert errors[2].startswith("sku: must not contain control")
    assert errors[3] == "sku: must be at most 128 characters, got 129"
    assert errors[4].startswith("image_url: must be an http, https or file URL")
    assert errors[5] == "title: must be at most 512 characters, got 513"
    assert errors[6].startswith("attributes: nested: must be a string, number or boolean")
    assert errors[7] == "attributes: at most 50 attributes, got 51"
    assert errors[8].startswith("attributes.material: given as a column and in attributes")
    assert errors[10] == "record must be a JSON object, got str"
    assert errors[11] == "sku: required"
    [(line, row)] = result.rows
    assert line == 9
    assert (row.currency, row.in_stock, row.color, row.sizes) == ("GBP", False, None, ["S", "M"])


def test_csv_feed(tmp_path: Path) -> None:
    text = (
        "sku,image_url,title,price,currency,sizes,in_stock,attributes,material\r\n"
        'A1,https://x.example/a1.jpg,"Dress, red",19.99,EUR,S|M|L,yes,"{""season"": ""summer""}",cotton\r\n'
        "A2,https://x.example/a2.jpg,,,,,,,\r\n"
        "\r\n"
        'A3,https://x.example/a3.jpg,"multi\r\nline title",5,USD,,n,,\r\n'
        "A4,https://x.example/a4.jpg,too,many,columns,here,x,y,z,extra\r\n"
        "A5,https://x.example/a5.jpg,few\r\n"
        "A6,https://x.example/a6.jpg,,-3,EUR,,,,\r\n"
        'A7,https://x.example/a7.jpg,,,,,,"{broken",\r\n'
        "A1,https://x.example/a1b.jpg,,,,,,,\r\n"
    )
    result = parse_feed(_write(tmp_path / "feed.csv", text, bom=True))

    assert [(line, row.sku) for line, row in result.rows] == [(2, "A1"), (3, "A2"), (5, "A3")]
    a1, a2, a3 = (row for _, row in result.rows)
    assert a1.title == "Dress, red" and a1.sizes == ["S", "M", "L"] and a1.in_stock is True
    assert a1.attributes == {"season": "summer", "material": "cotton"}
    assert a1.price == Decimal("19.99")
    assert (a2.title, a2.price, a2.currency, a2.sizes, a2.in_stock, a2.attributes) == (
        "",
        None,
        None,
        [],
        True,
        {},
    )
    assert a3.title == "multi\r\nline title" and a3.in_stock is False
    errors = _errors(result)
    assert sorted(errors) == [7, 8, 9, 10, 11]
    assert errors[7] == "row has 10 columns, the header has 9"
    assert errors[8] == "row has 3 columns, the header has 9"
    assert errors[9] == "price: must be >= 0"
    assert errors[10].startswith("attributes: not valid JSON")
    assert errors[11] == "sku: duplicate sku, first seen on line 2"
    assert result.errors[0].sku == "A4"


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("title,image_url", "header: no 'sku' column"),
        ("sku,title", "header: no 'image_url' or 'image_path' column"),
        ("sku,image_url,SKU", "header: column 'sku' appears twice"),
        ("sku,image_url,Material Type", "header: column 'Material Type' is not a valid attribute name"),
    ],
)
def test_csv_bad_header_is_one_error(tmp_path: Path, header: str, reason: str) -> None:
    path = _write(tmp_path / "feed.csv", f"{header}\nA1,https://x.example/a.jpg,z\n")
    result = parse_feed(path)
    assert result.rows == []
    assert [(e.line, e.reason.startswith(reason)) for e in result.errors] == [(1, True)]


def test_csv_header_names_are_case_insensitive_and_image_path_works(tmp_path: Path) -> None:
    path = _write(tmp_path / "feed.csv", " SKU ,Image_Path,Category\nA1,img/a1.jpg,T-Shirt\n")
    [(line, row)] = parse_feed(path).rows
    assert (line, row.sku, row.image_source, row.category) == (2, "A1", "img/a1.jpg", "t_shirt")


def test_invalid_utf8_line_is_an_error_and_others_survive(tmp_path: Path) -> None:
    path = tmp_path / "feed.jsonl"
    path.write_bytes(
        b'\xef\xbb\xbf{"sku": "A1", "image_path": "a.jpg"}\n'
        b'{"sku": "\xff"}\n'
        b'{"sku": "A3", "image_path": "c.jpg"}\n'
    )
    result = parse_feed(path)
    assert [line for line, _ in result.rows] == [1, 3]
    assert result.errors == [FeedError(2, None, "line is not valid UTF-8 (byte 10)")]


def test_json_array_and_explicit_format(tmp_path: Path) -> None:
    records = [GOOD, {"sku": "B"}, 3, {**GOOD, "sku": "C", "colour": "navy"}]
    path = _write(tmp_path / "feed.json", json.dumps(records, indent=2))
    result = parse_feed(path)
    assert [(line, row.sku) for line, row in result.rows] == [(1, "A1"), (4, "C")]
    assert result.rows[1][1].attributes == {"colour": "navy"}
    assert _errors(result) == {
        2: "image_url: required (or image_path)",
        3: "record must be a JSON object, got int",
    }

    other = _write(tmp_path / "feed.txt", _jsonl(GOOD))
    assert [line for line, _ in parse_feed(other, format="jsonl").rows] == [1]


def test_unknown_extension_missing_file_and_broken_json_raise(tmp_path: Path) -> None:
    with pytest.raises(FeedFormatError, match="unknown feed format") as info:
        parse_feed(_write(tmp_path / "feed.xml", "<x/>"))
    assert isinstance(info.value, ClothesSearchError) and info.value.kind == "feed_format"
    with pytest.raises(FeedFormatError, match="no such feed file"):
        parse_feed(tmp_path / "missing.jsonl")
    with pytest.raises(FeedFormatError, match="not a valid UTF-8 JSON document"):
        parse_feed(_write(tmp_path / "broken.json", "[{"))
    with pytest.raises(FeedFormatError, match="expected a JSON array"):
        parse_feed(_write(tmp_path / "scalar.json", "3"))


def test_parse_records_api_input() -> None:
    result = parse_records([GOOD, {**GOOD, "sku": "B", "price": 12.5, "currency": "EUR"}, {**GOOD}])
    assert [(line, row.sku) for line, row in result.rows] == [(1, "A1"), (2, "B")]
    assert result.errors == [FeedError(3, "A1", "sku: duplicate sku, first seen on line 1")]
    single = parse_records(GOOD)
    assert [line for line, _ in single.rows] == [1]
    with pytest.raises(FeedFormatError):
        parse_records("sku")  # type: ignore[arg-type]


def test_error_cap_counts_the_rest(tmp_path: Path) -> None:
    path = _write(tmp_path / "feed.ndjson", _jsonl(GOOD, *(["nope"] * 25)))
    result = parse_feed(path, max_errors=10)
    assert len(result.rows) == 1 and len(result.errors) == 10
    assert result.error_count == 25 and result.errors_dropped == 15
    assert result.errors[-1].line == 11


def test_iter_feed_streams_in_order(tmp_path: Path) -> None:
    path = _write(tmp_path / "feed.jsonl", _jsonl(GOOD, "{}", {**GOOD, "sku": "B"}))
    items = list(iter_feed(path))
    assert [(line, type(item).__name__) for line, item in items] == [
        (1, "CatalogRow"),
        (2, "FeedError"),
        (3, "CatalogRow"),
    ]


def test_overlong_line_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ingestion.feed.MAX_LINE_BYTES", 200)
    text = _jsonl({**GOOD, "title": "t" * 300}, {**GOOD, "sku": "Z"})
    result = parse_feed(_write(tmp_path / "feed.jsonl", text))
    assert [line for line, _ in result.rows] == [2]
    assert _errors(result) == {1: "line is longer than 200 bytes"}


def test_csv_broken_quoting_is_reported_and_reading_goes_on(tmp_path: Path) -> None:
    text = 'sku,image_path\nA,"a"b.jpg\nB,b.jpg\nC,"c\nd.jpg"\nD,"unterminated\nE,e.jpg\n'
    result = parse_feed(_write(tmp_path / "feed.csv", text))
    assert [(line, row.sku) for line, row in result.rows] == [(3, "B")]
    errors = _errors(result)
    assert sorted(errors) == [2, 4, 6]
    assert errors[2].startswith("CSV: ")
    assert errors[4] == "image_path: must not contain control characters or line breaks"
    assert errors[6] == "CSV: unexpected end of data"
