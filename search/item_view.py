"""How a catalog item is shown in the API's answers (``GET /items/<sku>``, ``/similar`` results)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

from db.models import Item


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:  # SQLite drops the zone; every time is stored in UTC
        moment = moment.replace(tzinfo=UTC)
    return moment.isoformat()


def item_view(item: Item, *, internal: bool = False) -> dict[str, Any]:
    """An item as the API shows it (``price`` as an exact decimal string).

    The public view (``/similar`` for anyone) has the catalogue fields and the image URL only when it
    is a public http(s) one, never a path of this server. ``internal`` (callers with the catalog or
    admin role) adds where the image came from and the ingestion state.
    """
    view: dict[str, Any] = {
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
        "image_url": item.image_url if internal or _is_web_url(item.image_url) else None,
        # the thumbnail the platform serves, and the size of the image the crop boxes are in
        "image": (
            {"url": f"/items/{quote(item.sku, safe='')}/image", "width": item.image_width,
             "height": item.image_height}
            if item.image_width is not None
            else None
        ),
    }  # fmt: skip
    if internal:
        view.update(
            status=item.status.value,
            last_error=item.last_error,
            attempts=item.attempts,
            last_job_id=item.last_job_id,
            indexed_at=_iso(item.indexed_at),
            updated_at=_iso(item.updated_at),
        )
    return view


def _is_web_url(source: str | None) -> bool:
    return bool(source) and urlsplit(source).scheme.lower() in ("http", "https")  # type: ignore[arg-type]
