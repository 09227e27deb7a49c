"""The catalog images' thumbnails in the database (:class:`~db.models.Thumbnail`)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Item, Thumbnail, utcnow


def save_thumbnail(
    session: Session,
    item: Item,
    jpeg: bytes,
    size: tuple[int, int],
    original_size: tuple[int, int],
    content_hash: str | None,
) -> None:
    """Store (or replace) an item's thumbnail and record its original image's size."""
    row = session.get(Thumbnail, item.id)
    if row is None:
        row = Thumbnail(item_id=item.id)
        session.add(row)
    row.jpeg, (row.width, row.height), row.content_hash, row.created_at = jpeg, size, content_hash, utcnow()
    item.image_width, item.image_height = original_size


def thumbnail_of(session: Session, sku: str) -> Thumbnail | None:
    """An item's thumbnail by sku (None: unknown item, or ingested before thumbnails were kept)."""
    return session.scalar(select(Thumbnail).join(Item, Item.id == Thumbnail.item_id).where(Item.sku == sku))


def with_thumbnails(session: Session, item_ids: list[int]) -> set[int]:
    """Which of these items have a thumbnail."""
    if not item_ids:
        return set()
    return set(session.scalars(select(Thumbnail.item_id).where(Thumbnail.item_id.in_(item_ids))))
