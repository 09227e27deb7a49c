"""The collection schema without nullable fields: typed declared attributes, unknown prices, the
expressions that filter on them, and the versions of Milvus the store accepts."""

from __future__ import annotations

import pytest

from db.filters import CatalogFilter, InvalidFilterError
from db.vector_records import ItemFields, VectorStoreError
from db.vector_schema import CollectionLayout, ServerInfo, fields_row, row_fields

DECLARED = {"color": "string", "size": "int", "weight": "float", "lined": "bool"}
LAYOUT = CollectionLayout.planned(8, DECLARED, None)


def test_unknown_prices_and_absent_attributes_round_trip_without_nulls():
    fields = ItemFields("top", "acme", None, True, {"color": "red", "size": 40, "extra": [1, 2]})
    row = fields_row(fields, LAYOUT)
    assert row["price"] == 0.0 and row["has_price"] is False
    assert row["attr_color"] == "red" and row["attr_size"] == 40 and row["has_attr_size"] is True
    assert row["attr_weight"] == 0.0 and row["has_attr_weight"] is False and row["has_attr_lined"] is False
    assert row["attributes"] == {"extra": [1, 2]}  # the JSON field carries only the free rest
    assert None not in row.values()
    assert row_fields(row, LAYOUT) == fields


def test_a_declared_attribute_of_the_wrong_type_is_refused():
    with pytest.raises(VectorStoreError, match=r"attributes\.size: declared int"):
        fields_row(ItemFields("top", "acme", 1.0, True, {"size": "XL"}), LAYOUT)
    with pytest.raises(VectorStoreError, match="longer than 256 bytes"):
        fields_row(ItemFields("top", "acme", 1.0, True, {"color": "é" * 200}), LAYOUT)


def test_filters_use_the_declared_fields_and_the_price_flag():
    expression = CatalogFilter(
        price_max=50, attributes={"color": "red", "size": "40", "lined": "yes", "origin": "fr"}
    ).to_expression(LAYOUT)
    assert expression == (
        '(has_price == true) and (price <= 50.0) and (attr_color == "red") and (has_attr_size == true)'
        " and (attr_size == 40) and (has_attr_lined == true) and (attr_lined == true)"
        ' and (attributes["origin"] == "fr")'
    )
    with pytest.raises(InvalidFilterError, match=r"attributes\.size"):
        CatalogFilter(attributes={"size": "forty"}).to_expression(LAYOUT)


@pytest.mark.parametrize(
    ("text", "lite", "supported"),
    [
        ("v2.3.5-lite", False, True),  # the PyPI standalone calls itself -lite
        ("v2.5.4", False, True),
        ("v2.2.16", False, False),
        ("milvus_lite-3.2.2", True, True),
        ("milvus_lite-2.4.10", True, False),
    ],
)
def test_server_versions(text, lite, supported):
    info = ServerInfo.parse(text)
    assert info.lite is lite
    if supported:
        info.check_supported()
    else:
        with pytest.raises(VectorStoreError, match="not supported"):
            info.check_supported()
