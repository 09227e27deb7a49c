"""Index versions: one Milvus collection per model signature, one of them live behind an alias.

States: ``building`` (being filled beside the live one), ``live`` (searched), ``retired`` (replaced;
it keeps receiving the catalog's writes for ``versions.retention_s``, so it can be made live again).
Ingestion writes every item to each *write target* (:func:`write_targets`): the live version, the
building ones and the retired ones still retained. :class:`VersionItem` rows say which item each
version holds and from which image (:func:`version_progress`).

Activation order: point the alias at the new collection, then commit the database change
(the old live version becomes ``retired``). If the process dies in between, the alias is
already right and re-running ``activate`` makes the database agree; search reads the alias.
(:mod:`db.version_lifecycle` adds the checks and the wait for the API processes around it.)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.interfaces import ORMOption

from db.models import IndexState, IndexVersion, Item, ItemStatus, VersionItem, utcnow
from db.vectors import VectorStore


def index_params(store: VectorStore, collection: str) -> dict[str, Any]:
    """The index parameters recorded with a version (what was used to build its collection)."""
    settings = store.settings
    return {
        "index_type": store.index_type(collection),
        "attribute_fields": dict(store.layout(collection).attribute_fields),
        "metric_type": settings.metric_type,
        "hnsw_m": settings.hnsw_m,
        "hnsw_ef_construction": settings.hnsw_ef_construction,
        "partition_key": settings.partition_key,
    }


def ensure_index_version(
    session: Session,
    store: VectorStore,
    *,
    signature: str,
    dimension: int,
    description: str = "",
    spec: dict[str, Any] | None = None,
    runtimes: dict[str, str] | None = None,
    models: dict[str, Any] | None = None,
) -> IndexVersion:
    """The version (and its collection) for a model signature, created in ``building`` state if new.

    ``runtimes`` (embedder name -> 'onnxruntime' / 'torch') is recorded in ``index_params`` for people:
    vectors from either runtime are interchangeable, so it is not part of the signature. ``models``
    (:class:`ingestion.model_sets.ModelSet` as a record) is recorded so that any process can load the
    version's models; a version made before records had none gets them here.
    """
    collection = store.collection_name(signature)
    store.ensure_collection(collection, dimension)
    version = session.scalar(select(IndexVersion).where(IndexVersion.collection_name == collection))
    if version is None:
        version = IndexVersion(
            collection_name=collection,
            signature=signature,
            signature_description=description,
            signature_spec=spec or {},
            dimension=dimension,
            index_params={**index_params(store, collection), **({"runtimes": runtimes} if runtimes else {})},
            state=IndexState.BUILDING,
            models=models or {},
        )
        session.add(version)
        session.flush()
    elif version.dimension != dimension:
        raise ValueError(f"index version {collection} has dimension {version.dimension}, not {dimension}")
    elif models and not version.models:
        version.models = models
    return version


def live_version(session: Session, *options: ORMOption) -> IndexVersion | None:
    """The live version (``options``: loader options, e.g. columns to defer)."""
    return session.scalar(select(IndexVersion).where(IndexVersion.state == IndexState.LIVE).options(*options))


def retained_since(retention_s: float, now: datetime | None = None) -> datetime:
    """Versions retired after this moment are still retained (written to, re-activatable)."""
    return (now or utcnow()) - timedelta(seconds=retention_s)


def is_retained(version: IndexVersion, retention_s: float) -> bool:
    """Whether a version still receives the catalog's writes: live, building, or retired lately."""
    if version.state != IndexState.RETIRED:
        return True
    retired_at = version.retired_at
    if retired_at is None:
        return False
    if retired_at.tzinfo is None:  # SQLite drops the zone; every time is stored in UTC
        retired_at = retired_at.replace(tzinfo=retained_since(0).tzinfo)
    return retired_at > retained_since(retention_s)


def write_targets(session: Session, retention_s: float) -> list[IndexVersion]:
    """The base versions ingestion writes every item to: live, building, and retired but retained
    (their post-processed versions are written by :func:`db.indexing.index_items` itself)."""
    candidates = session.scalars(
        select(IndexVersion)
        .where(
            IndexVersion.base_version_id.is_(None),
            or_(
                IndexVersion.state != IndexState.RETIRED,
                and_(
                    IndexVersion.retired_at.is_not(None),
                    IndexVersion.retired_at > retained_since(retention_s),
                ),
            ),
        )
        .order_by(IndexVersion.id)
    )
    return list(candidates)


@dataclass(frozen=True)
class VersionProgress:
    """How much of the catalog a version holds: items held from their current image, of those to hold."""

    held: int
    total: int

    @property
    def complete(self) -> bool:
        return self.held >= self.total


def _catalogue_items() -> Any:
    """The items every version should hold: the indexed ones (ingestion writes the pending ones to every
    version when it gets to them; failed ones have no usable image)."""
    return Item.status == ItemStatus.INDEXED


def version_progress(session: Session, version: IndexVersion) -> VersionProgress:
    """Items held by a version (its base's, for a post-processed one) from their current image source."""
    rows_version = version.rows_version_id
    held = session.scalar(
        select(func.count())
        .select_from(VersionItem)
        .join(Item, Item.id == VersionItem.item_id)
        .where(
            VersionItem.version_id == rows_version,
            VersionItem.source.is_not_distinct_from(Item.image_url),
            _catalogue_items(),
        )
    )
    total = session.scalar(select(func.count()).select_from(Item).where(_catalogue_items()))
    return VersionProgress(int(held or 0), int(total or 0))


def items_to_build(session: Session, version_id: int) -> list[str]:
    """The skus a version does not hold from their current image yet (what `index build` embeds)."""
    held = select(VersionItem.item_id).where(
        VersionItem.version_id == version_id, VersionItem.source.is_not_distinct_from(Item.image_url)
    )
    return list(
        session.scalars(select(Item.sku).where(_catalogue_items(), Item.id.not_in(held)).order_by(Item.id))
    )


def activate(session: Session, store: VectorStore, version: IndexVersion) -> None:
    """Make ``version`` the live one: swap the alias, then retire the previous live version."""
    store.point_alias(store.settings.live_alias, version.collection_name)
    previous = live_version(session)
    if previous is not None and previous.id != version.id:
        previous.state = IndexState.RETIRED
        previous.retired_at = utcnow()
        session.flush()  # the partial unique index allows one live row at a time
    version.state = IndexState.LIVE
    version.activated_at = utcnow()
    version.retired_at = None
    version.activation_requested_at = None
    session.flush()
