"""The metadata database: catalog items, their crops, index versions and ingestion jobs.

The database is the source of truth for everything but the vectors; Milvus holds the
vectors and copies of the items' filter fields (see :mod:`db.indexing` for the write order).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class ItemStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    INDEXED = "indexed"
    FAILED = "failed"


class IndexState(StrEnum):
    BUILDING = "building"
    LIVE = "live"
    RETIRED = "retired"


def _enum(cls: type[StrEnum], name: str) -> Enum:
    # stored as strings (VARCHAR + CHECK), portable across SQLite and PostgreSQL
    return Enum(cls, name=name, native_enum=False, values_callable=lambda e: [m.value for m in e], length=16)


class Item(Base):
    """A catalog item (one product), keyed by its stable ``sku``."""

    __tablename__ = "items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sku: Mapped[str] = mapped_column(String(128), unique=True)
    title: Mapped[str] = mapped_column(String(512), default="")
    category: Mapped[str] = mapped_column(String(64), default="", index=True)
    brand: Mapped[str] = mapped_column(String(128), default="", index=True)
    price: Mapped[Decimal | None] = mapped_column(Numeric(12, 2))
    currency: Mapped[str | None] = mapped_column(String(3))
    color: Mapped[str | None] = mapped_column(String(64))
    sizes: Mapped[list[str]] = mapped_column(JSON, default=list)
    in_stock: Mapped[bool] = mapped_column(Boolean, default=True)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    image_url: Mapped[str | None] = mapped_column(Text)
    image_trusted: Mapped[bool] = mapped_column(
        Boolean, default=False, doc="From a trusted feed (local paths allowed) rather than the API."
    )
    image_root: Mapped[str | None] = mapped_column(Text, doc="The folder a trusted local image must be in.")
    image_width: Mapped[int | None] = mapped_column(Integer, doc="The ingested image's size, in pixels.")
    image_height: Mapped[int | None] = mapped_column(Integer)

    status: Mapped[ItemStatus] = mapped_column(_enum(ItemStatus, "item_status"), default=ItemStatus.PENDING)
    last_error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    content_hash: Mapped[str | None] = mapped_column(
        String(64), doc="SHA-256 of the last ingested image bytes."
    )
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), doc="When a worker took it.")
    claim_token: Mapped[str | None] = mapped_column(String(64), doc="The task holding it while 'processing'.")
    claim_source: Mapped[str | None] = mapped_column(
        Text, doc="The image source the claim started from; the write is refused if it changed since."
    )
    fields_pending: Mapped[bool] = mapped_column(
        Boolean, default=False, index=True, doc="Changed filter fields not yet copied to the vector store."
    )
    indexed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_job_id: Mapped[int | None] = mapped_column(
        ForeignKey("ingest_jobs.id", ondelete="SET NULL"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    crops: Mapped[list[Crop]] = relationship(
        back_populates="item", cascade="all, delete-orphan", passive_deletes=True
    )

    __table_args__ = (Index("ix_items_status_claimed_at", "status", "claimed_at"),)

    def filter_fields(self) -> dict[str, Any]:
        """The denormalised fields Milvus keeps a copy of (for filtered ANN search).

        The catalog's ``color`` column is filterable as the attribute ``color`` (``attr.color``).
        """
        colour = {"color": self.color} if self.color else {}
        return {
            "category": self.category or "",
            "brand": self.brand or "",
            "price": float(self.price) if self.price is not None else None,
            "in_stock": bool(self.in_stock),
            "attributes": {**colour, **(self.attributes or {})},
        }


class IndexVersion(Base):
    """One Milvus collection built for one model signature. Exactly one is live.

    A *base* version holds the models' raw vectors. A *post-processed* version
    (``base_version_id`` set) holds the same crops after database-side augmentation and/or PCA
    whitening (``postprocess``: the settings; ``whitening``: the fitted PCA, applied to queries
    too); its crop rows are its base version's (see :mod:`db.postprocessed_versions`).
    """

    __tablename__ = "index_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    collection_name: Mapped[str] = mapped_column(String(255), unique=True)
    signature: Mapped[str] = mapped_column(String(64), index=True)
    signature_description: Mapped[str] = mapped_column(Text, default="")
    signature_spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    dimension: Mapped[int] = mapped_column(Integer)
    index_params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    state: Mapped[IndexState] = mapped_column(_enum(IndexState, "index_state"), default=IndexState.BUILDING)
    item_count: Mapped[int] = mapped_column(Integer, default=0)
    crop_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    activated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    retired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    base_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("index_versions.id", ondelete="CASCADE"), index=True
    )
    postprocess: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, server_default="{}")
    whitening: Mapped[bytes | None] = mapped_column(LargeBinary, doc="The fitted PCA whitening (.npz bytes).")
    models: Mapped[dict[str, Any]] = mapped_column(
        JSON,
        default=dict,
        server_default="{}",
        doc="The model set the version is built with (detectors, fusion, embedders): any process can "
        "load them to serve or fill it (see ingestion.model_sets). Empty for versions made before.",
    )
    activation_requested_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True),
        doc="`index activate` waits for every API process to load this version's models.",
    )

    @property
    def rows_version_id(self) -> int:
        """The version whose crop rows describe this version's vectors (its base, or itself)."""
        return self.base_version_id if self.base_version_id is not None else self.id

    __table_args__ = (
        # at most one live version, enforced by the database itself
        Index(
            "uq_index_versions_one_live",
            "state",
            unique=True,
            postgresql_where=text("state = 'live'"),
            sqlite_where=text("state = 'live'"),
        ),
    )


class Crop(Base):
    """One detected garment crop of an item that has a vector. ``id`` is the Milvus primary key."""

    __tablename__ = "crops"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    index_version_id: Mapped[int] = mapped_column(
        ForeignKey("index_versions.id", ondelete="CASCADE"), index=True
    )
    x1: Mapped[float] = mapped_column(Float)
    y1: Mapped[float] = mapped_column(Float)
    x2: Mapped[float] = mapped_column(Float)
    y2: Mapped[float] = mapped_column(Float)
    category: Mapped[str] = mapped_column(String(64), doc="Detected garment category.")
    score: Mapped[float] = mapped_column(Float)
    detectors: Mapped[list[str]] = mapped_column(JSON, default=list)
    signature: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    item: Mapped[Item] = relationship(back_populates="crops")
    index_version: Mapped[IndexVersion] = relationship()

    @property
    def box(self) -> list[float]:
        return [self.x1, self.y1, self.x2, self.y2]


class VersionItem(Base):
    """An item an index version holds, and the image it was computed from (build progress, resumption).

    Written in the same transaction as the item's crop rows of that version (:mod:`db.indexing`), so a
    version holds the item exactly when this row exists; ``source`` is the item's image source then.
    """

    __tablename__ = "version_items"

    version_id: Mapped[int] = mapped_column(
        ForeignKey("index_versions.id", ondelete="CASCADE"), primary_key=True
    )
    item_id: Mapped[int] = mapped_column(
        ForeignKey("items.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    content_hash: Mapped[str | None] = mapped_column(String(64))
    source: Mapped[str | None] = mapped_column(Text)
    indexed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Thumbnail(Base):
    """A small JPEG of an item's ingested image (at most ``images.thumbnail_size`` pixels a side), so
    that answers can show pictures whatever the original source was (``GET /items/<sku>/image``)."""

    __tablename__ = "thumbnails"

    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), primary_key=True)
    content_hash: Mapped[str | None] = mapped_column(String(64), doc="SHA-256 of the image it was made from.")
    jpeg: Mapped[bytes] = mapped_column(LargeBinary)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ServingProcess(Base):
    """A process that serves or fills index versions, and the model signatures it has loaded (a heartbeat:
    ``seen_at``). ``index activate`` waits until every API process seen lately has the new models."""

    __tablename__ = "serving_processes"

    id: Mapped[str] = mapped_column(String(128), primary_key=True, doc="host:pid")
    role: Mapped[str] = mapped_column(String(16))
    signatures: Mapped[list[str]] = mapped_column(JSON, default=list)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiKey(Base):
    """An API key: its public id, a SHA-256 of its secret (never the secret) and its roles."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key_id: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(128), default="")
    secret_sha256: Mapped[str] = mapped_column(String(64))
    roles: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class IngestJob(Base):
    """A batch of items submitted together (a feed file or an API call)."""

    __tablename__ = "ingest_jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String(512), default="")
    created_by: Mapped[str] = mapped_column(String(128), default="")
    total: Mapped[int] = mapped_column(Integer, default=0)
    done: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    embedded: Mapped[int] = mapped_column(
        Integer, default=0, server_default="0", doc="Images run through the models."
    )
    unchanged: Mapped[int] = mapped_column(
        Integer, default=0, server_default="0", doc="Items whose image bytes had not changed: no model work."
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
