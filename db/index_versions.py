"""Index versions: one Milvus collection per model signature, one of them live behind an alias.

Activation order: point the alias at the new collection, then commit the database change
(the old live version becomes ``retired``). If the process dies in between, the alias is
already right and re-running ``activate`` makes the database agree; search reads the alias.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import IndexState, IndexVersion, utcnow
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
) -> IndexVersion:
    """The version (and its collection) for a model signature, created in ``building`` state if new.

    ``runtimes`` (embedder name -> 'onnxruntime' / 'torch') is recorded in ``index_params`` for people:
    vectors from either runtime are interchangeable, so it is not part of the signature.
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
        )
        session.add(version)
        session.flush()
    elif version.dimension != dimension:
        raise ValueError(f"index version {collection} has dimension {version.dimension}, not {dimension}")
    return version


def live_version(session: Session) -> IndexVersion | None:
    return session.scalar(select(IndexVersion).where(IndexVersion.state == IndexState.LIVE))


def activate(session: Session, store: VectorStore, version: IndexVersion) -> None:
    """Make ``version`` the live one: swap the alias, then retire the previous live version.

    A retired post-processed version is refused: ingestion stopped writing to it when it was retired.
    """
    if version.base_version_id is not None and version.state == IndexState.RETIRED:
        raise ValueError(
            f"{version.collection_name} is a retired post-processed version and may lack items indexed "
            "since: build a new one with `clothes-search index postprocess`"
        )
    store.point_alias(store.settings.live_alias, version.collection_name)
    previous = live_version(session)
    if previous is not None and previous.id != version.id:
        previous.state = IndexState.RETIRED
        previous.retired_at = utcnow()
        session.flush()  # the partial unique index allows one live row at a time
    version.state = IndexState.LIVE
    version.activated_at = version.activated_at or utcnow()
    session.flush()
