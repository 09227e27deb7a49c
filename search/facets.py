"""``GET /facets``: the values merchandisers can filter on, with how many catalog items have each.

Counted over the indexed items in the database (the truth), the most frequent values first, at most
:data:`MAX_VALUES` per field; kept for :data:`TTL_S` seconds per process (a catalog changes slowly,
a search page asks on every load). Filterable attributes are the catalog's ``color`` and the
attributes declared in ``milvus.attribute_fields`` (stored as typed fields of their own in Milvus).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.api_keys import Role
from db.models import Item, ItemStatus
from search.api_services import ApiServices
from search.auth import requires

MAX_VALUES = 100
TTL_S = 15.0

facets = Blueprint("facets", __name__)


def _values(session: Session, column: Any) -> list[dict[str, Any]]:
    indexed = Item.status == ItemStatus.INDEXED
    rows = session.execute(
        select(column, func.count())
        .where(indexed, column.is_not(None), column != "")
        .group_by(column)
        .order_by(func.count().desc(), column)
        .limit(MAX_VALUES)
    ).all()
    return [{"value": value, "count": count} for value, count in rows]


def catalog_facets(session: Session, attribute_fields: dict[str, str]) -> dict[str, Any]:
    """Values and counts of every filterable field over the indexed items."""
    indexed = Item.status == ItemStatus.INDEXED
    total = session.scalar(select(func.count()).select_from(Item).where(indexed)) or 0
    low, high, priced = session.execute(
        select(func.min(Item.price), func.max(Item.price), func.count(Item.price)).where(indexed)
    ).one()
    stock = dict(
        session.execute(select(Item.in_stock, func.count()).where(indexed).group_by(Item.in_stock)).all()
    )
    attributes = {"color": _values(session, Item.color)}
    for name, kind in attribute_fields.items():
        if name == "color":
            continue
        element = Item.attributes[name]
        attributes[name] = _values(session, element.as_float() if kind == "float" else element.as_string())
    return {
        "total": total,
        "category": _values(session, Item.category),
        "brand": _values(session, Item.brand),
        "price": {
            "min": str(low) if low is not None else None,
            "max": str(high) if high is not None else None,
            "items_with_price": priced,
        },
        "in_stock": {"true": stock.get(True, 0), "false": stock.get(False, 0)},
        "attributes": attributes,
    }


@facets.get("/facets")
@requires(Role.SEARCH, public=lambda settings: settings.public_search)
def get_facets() -> ResponseReturnValue:
    """The filterable values of the catalog with their item counts."""
    api = ApiServices.of(current_app)

    def count() -> dict[str, Any]:
        with api.services.database.session() as session:
            return catalog_facets(session, api.settings.milvus.attribute_fields)

    return jsonify(api.remembered("facets", TTL_S, count))
