"""How a catalog item is shown in the API's answers (``GET /items/<sku>``, ``/similar`` results)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from db.models import Item


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:  # SQLite drops the zone; every time is stored in UTC
        moment = moment.replace(tzinfo=UTC)
    return moment.isoformat()


def item_view(item: Item) -> dict[str, Any]:
    """An item's public fields (``price`` as an exact decimal string)."""
    return {
        "sku": item.sku,
        "title": item.title,
        "category": item.category,
        "brand": item.brand,
        "price": str(item.price) if item.price is not None else None,
        "currency": item.currency,
        "color": item.color,
        "sizes": list(item.sizes or []),
        "in_stock": bool(item.in_stock),
        "attributes": dict(item.attributes or {}),
        "image_url": item.image_url,
        "status": item.status.value,
        "last_error": item.last_error,
        "attempts": item.attempts,
        "last_job_id": item.last_job_id,
        "indexed_at": _iso(item.indexed_at),
        "updated_at": _iso(item.updated_at),
    }
