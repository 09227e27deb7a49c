"""Catalog filters: validation, the expressions they produce, and exact matching of hostile strings."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from clothes_search.settings import MilvusSettings
from db.filters import MAX_STRING_LENGTH, MAX_VALUES, CatalogFilter, InvalidFilterError, string_literal
from db.vectors import CropRecord, ItemFields, VectorStore

HOSTILE = [
    'quo"te',
    "back\\slash",
    "trailing backslash\\",
    'escaped \\" quote',
    "new\nline",
    "tab\tand\rreturn",
    "ünïcødé — 日本語 😀",
    "sq'uote",
    'x" or 1==1 or "',
    '") or ("',
    '"] or [1',
    "a\u2028b",
    "%like_wildcards%",
]


def test_empty_filter_has_no_expression() -> None:
    assert CatalogFilter().to_expression() == ""
    assert CatalogFilter(in_stock=False).to_expression() == "(in_stock == false)"


def test_expression_for_every_field() -> None:
    catalog_filter = CatalogFilter(
        categories=("top", "dress"),
        brands=("acme",),
        price_min=10,
        price_max=99.5,
        in_stock=True,
        attributes={"color": "red", "size": 42, "weight": 0.5, "lined": False},
    )
    assert catalog_filter.to_expression() == (
        '(category in ["top", "dress"]) and (brand in ["acme"]) and (price >= 10.0) and (price <= 99.5)'
        ' and (in_stock == true) and (attributes["color"] == "red") and (attributes["size"] == 42)'
        ' and (attributes["weight"] == 0.5) and (attributes["lined"] == false)'
    )


def test_values_are_normalised() -> None:
    catalog_filter = CatalogFilter(categories=["top", "top", "skirt"], price_min=3)  # type: ignore[arg-type]
    assert catalog_filter.categories == ("top", "skirt")
    assert catalog_filter.price_min == 3.0 and isinstance(catalog_filter.price_min, float)
    assert CatalogFilter(price_min=5, price_max=5).to_expression() == "(price >= 5.0) and (price <= 5.0)"
    assert CatalogFilter(price_min=1e20).to_expression() == "(price >= 1e+20)"


def test_filters_are_immutable_and_hashable() -> None:
    attributes = {"color": "red"}
    catalog_filter = CatalogFilter(attributes=attributes)
    attributes["color"] = "blue"  # the caller's dict is copied
    assert catalog_filter.attributes["color"] == "red"
    with pytest.raises(TypeError):
        catalog_filter.attributes["color"] = "blue"  # type: ignore[index]
    with pytest.raises(AttributeError):
        catalog_filter.in_stock = True  # type: ignore[misc]
    assert hash(catalog_filter) == hash(CatalogFilter(attributes={"color": "red"}))
    assert catalog_filter == CatalogFilter(attributes={"color": "red"})
    assert CatalogFilter(attributes={"on": True}) != CatalogFilter(attributes={"on": 1})


@pytest.mark.parametrize("value", HOSTILE)
def test_string_values_stay_inside_one_literal(value: str) -> None:
    literal = string_literal(value)
    assert literal.startswith('"') and literal.endswith('"')
    body = literal[1:-1]
    # every quote inside the literal is escaped: the literal cannot end early
    unescaped = [
        i for i, c in enumerate(body) if c == '"' and (len(body[:i]) - len(body[:i].rstrip("\\"))) % 2 == 0
    ]
    assert unescaped == []
    assert "\n" not in literal and "\r" not in literal
    assert CatalogFilter(brands=(value,)).to_expression() == f"(brand in [{literal}])"
    assert CatalogFilter(attributes={"a": value}).to_expression() == f'(attributes["a"] == {literal})'


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"categories": "top"}, "categories"),  # a bare string, not a list
        ({"categories": ("top", 3)}, "categories"),
        ({"categories": ("",)}, "categories"),
        ({"categories": ("x" * (MAX_STRING_LENGTH + 1),)}, "categories"),
        ({"categories": tuple(f"c{i}" for i in range(MAX_VALUES + 1))}, "categories"),
        ({"brands": ("ok", "nul\x00byte")}, "brands"),
        ({"brands": ("esc\x1b[0m",)}, "brands"),
        ({"brands": ("bell\x07",)}, "brands"),
        ({"brands": ("lone surrogate \ud800",)}, "brands"),
        ({"price_min": math.nan}, "price_min"),
        ({"price_max": math.inf}, "price_max"),
        ({"price_min": "10"}, "price_min"),
        ({"price_min": True}, "price_min"),
        ({"price_min": 10, "price_max": 5}, "price_min"),
        ({"in_stock": "yes"}, "in_stock"),
        ({"in_stock": 1}, "in_stock"),
        ({"attributes": ["color"]}, "attributes"),
        ({"attributes": {'color"] or [1': "x"}}, "attributes"),
        ({"attributes": {"color\n": "x"}}, "attributes"),
        ({"attributes": {"1color": "x"}}, "attributes"),
        ({"attributes": {"": "x"}}, "attributes"),
        ({"attributes": {"a" * 65: "x"}}, "attributes"),
        ({"attributes": {"col or": "x"}}, "attributes"),
        ({"attributes": {"couleur_é": "x"}}, "attributes"),
        ({"attributes": {f"a{i}": 1 for i in range(33)}}, "attributes"),
        ({"attributes": {"size": math.nan}}, "attributes.size"),
        ({"attributes": {"size": 2**63}}, "attributes.size"),
        ({"attributes": {"size": None}}, "attributes.size"),
        ({"attributes": {"size": [1, 2]}}, "attributes.size"),
        ({"attributes": {"color": "x" * (MAX_STRING_LENGTH + 1)}}, "attributes.color"),
    ],
)
def test_invalid_parameters_are_named(kwargs: dict, parameter: str) -> None:
    with pytest.raises(InvalidFilterError) as caught:
        CatalogFilter(**kwargs)
    assert caught.value.parameter == parameter
    assert caught.value.kind == "invalid_filter"
    assert repr(parameter) in str(caught.value)


def test_limits_are_inclusive() -> None:
    CatalogFilter(brands=tuple(f"b{i}" for i in range(MAX_VALUES)))
    CatalogFilter(brands=("x" * MAX_STRING_LENGTH,), attributes={"a" * 64: 2**63 - 1, "_b": -(2**63)})


# -- against Milvus Lite: each hostile value matches exactly its own row ------------------------


@pytest.fixture
def hostile_store(tmp_path: Path) -> Iterator[VectorStore]:
    with VectorStore(MilvusSettings(uri=str(tmp_path / "filters.db"), index_type="FLAT")) as store:
        store.ensure_collection("crops_filters", 4)
        records = [
            CropRecord(
                i + 1,
                np.array([1.0, 0.1 * i, 0.0, 0.5], dtype=np.float32),
                f"item-{i}",
                "shirt",
                ItemFields(category=value, brand=value, price=float(i), attributes={"tag": value}),
            )
            for i, value in enumerate(HOSTILE)
        ]
        store.upsert("crops_filters", records)
        yield store


@pytest.mark.parametrize(
    "build",
    [
        lambda v: CatalogFilter(categories=(v,)),
        lambda v: CatalogFilter(brands=(v,)),
        lambda v: CatalogFilter(attributes={"tag": v}),
    ],
    ids=["category", "brand", "attribute"],
)
def test_hostile_values_match_exactly_their_row(hostile_store: VectorStore, build: object) -> None:
    query = np.ones((1, 4), dtype=np.float32)
    for i, value in enumerate(HOSTILE):
        hits = hostile_store.search("crops_filters", query, limit=50, filter=build(value))[0]  # type: ignore[operator]
        assert [hit.item_key for hit in hits] == [f"item-{i}"], value
    everything = hostile_store.search("crops_filters", query, limit=50)[0]
    assert len(everything) == len(HOSTILE)
