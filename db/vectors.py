"""The vector store: crop embeddings in Milvus (Milvus Lite on a local ``.db`` path, or a server).

A small adapter returning ids and scores (and, when asked, the hits' vectors); it knows nothing of
HTTP or of the SQL database (the source of truth). One collection per model signature
(``{prefix}_{hash}``), searched through an alias (``settings.live_alias``) that a re-index swaps
atomically, or by name. The collection's fields: :mod:`db.vector_schema`; how a filtered search stays
exact: :mod:`db.filtered_search`; the connection and its errors: :mod:`db.milvus_connection`.

Scores are similarities, higher is better: for COSINE and IP Milvus' distance already is one;
for L2 (Milvus reports the squared distance) the score is ``-distance``. Reads that writes depend on
(what to delete, what to update) are ``Strong``; searches use ``milvus.consistency``.

Supported: Milvus Lite ≥ 3 and Milvus servers ≥ 2.3 (the schema uses no nullable field); an older
server is refused when the store connects.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from pymilvus import MilvusClient

from clothes_search.settings import MilvusSettings
from db.filtered_search import (
    MAX_TOP_K,
    SearchPlan,
    exact_scores,
    index_build_params,
    merge_hits,
    needs_count,
    plan_search,
    resolved_index_type,
)
from db.filters import CatalogFilter, string_literal
from db.milvus_answers import answer_hits
from db.milvus_connection import LOAD_TIMEOUT_S, MilvusConnection
from db.vector_records import (
    CollectionInfo,
    CropRecord,
    ItemFields,
    VectorHit,
    VectorStoreError,
    VectorStoreUnavailableError,
    check_text,
    check_vectors,
    chunks,
    ids_literal,
    keys_literal,
)
from db.vector_schema import (
    SHARDS,
    CollectionLayout,
    ServerInfo,
    collection_schema,
    fields_row,
    row_fields,
    scalar_index_fields,
)

__all__ = [
    "CollectionInfo",
    "CropRecord",
    "ItemFields",
    "VectorHit",
    "VectorStore",
    "VectorStoreError",
    "VectorStoreUnavailableError",
]

log = logging.getLogger(__name__)

MAX_DIM = 32768
WRITE_BATCH = 1000  # rows per upsert request (2560-d float32: ~10 MB)
ID_BATCH = 1000  # ids per `id in [...]` expression
KEY_BATCH = 100  # item keys per `item_key in [...]` expression
COUNT_TTL_S = 60.0  # how long a row count (a collection's, a filter's) serves to plan filtered searches
COUNT_CACHE_SIZE = 4096
COLLECTION_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")
STRONG = "Strong"


class VectorStore:
    """Crop vectors in Milvus. Connects lazily on first use; thread-safe; close it (or use ``with``)."""

    def __init__(self, settings: MilvusSettings) -> None:
        self.settings = settings
        self._milvus = MilvusConnection(settings)
        self._lock = threading.Lock()
        self._layouts: dict[str, CollectionLayout] = {}  # collection -> layout (fixed at creation)
        self._index_types: dict[str, str] = {}
        self._counts: OrderedDict[tuple[str, str], tuple[float, int]] = OrderedDict()  # planning counts
        self._pool: ThreadPoolExecutor | None = None  # the sub-searches of a split filter

    @property
    def uri(self) -> str:
        """The configured URI, without credentials."""
        return self._milvus.uri

    @property
    def is_local(self) -> bool:
        """True for an embedded Milvus Lite file (usable by one process at a time)."""
        return self._milvus.is_local

    @property
    def server(self) -> ServerInfo:
        """What answers (Milvus Lite or a server) and its version."""
        return self._milvus.server

    def __enter__(self) -> VectorStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (and stop this process' Milvus Lite when no other store uses it)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        self._milvus.close()

    # -- what a collection is --------------------------------------------------------------------

    def _describe(self, collection: str) -> dict[str, Any]:
        return self._milvus.rpc(f"describing {collection!r}", "describe_collection", collection)

    def layout(self, collection: str) -> CollectionLayout:
        """The fields of a collection (or of the one an alias points to: read each time)."""
        return self._target(collection)[1]

    def _target(self, name: str) -> tuple[str, CollectionLayout]:
        """The collection ``name`` is (itself, or an alias's target now) and its layout."""
        cached = self._layouts.get(name)
        if cached is not None:
            return name, cached
        description = self._describe(name)
        target = str(description.get("collection_name") or name)
        layout = CollectionLayout.described(description)
        if target == name:  # a collection, not an alias (whose target may change): cache it
            self._layouts[name] = layout
        return target, layout

    def index_type(self, collection: str) -> str:
        """The vector index of a collection (or of an alias's target): HNSW, IVF_FLAT, IVF_SQ8, FLAT..."""
        return self._index_type(self._target(collection)[0])

    def _index_type(self, target: str) -> str:
        if target not in self._index_types:
            index = self._milvus.rpc("describing the index", "describe_index", target, "vector") or {}
            self._index_types[target] = str(index.get("index_type", "FLAT"))
        return self._index_types[target]

    # -- collections and aliases ----------------------------------------------------------------

    def collection_name(self, signature_hash: str) -> str:
        """The collection of a model signature: ``{prefix}_{hash}``."""
        name = f"{self.settings.collection_prefix}_{signature_hash}"
        if not COLLECTION_NAME_RE.fullmatch(name):
            raise VectorStoreError(f"invalid collection name {name!r}: use letters, digits and underscores")
        return name

    def list_collections(self) -> list[str]:
        """Names of all collections, sorted."""
        return sorted(self._milvus.rpc("listing collections", "list_collections"))

    def has_collection(self, name: str) -> bool:
        """Whether the collection exists."""
        return bool(self._milvus.rpc(f"checking {name!r}", "has_collection", name))

    def ensure_collection(self, name: str, dim: int) -> bool:
        """Create the collection (schema, indexes, loaded) unless it exists; True when created.

        An existing collection must have the same dimension; it is loaded if it was released.
        """
        if not COLLECTION_NAME_RE.fullmatch(name):
            raise VectorStoreError(f"invalid collection name {name!r}: use letters, digits and underscores")
        if isinstance(dim, bool) or not isinstance(dim, int) or not 0 < dim <= MAX_DIM:
            raise VectorStoreError(f"dimension must be an integer in 1..{MAX_DIM}, got {dim!r}")
        if not self.has_collection(name):
            try:
                self._create(name, dim)
                return True
            except VectorStoreError:
                if not self.has_collection(name):  # else created concurrently by another process
                    raise
        existing = self.layout(name).dim
        if existing != dim:
            raise VectorStoreError(f"collection {name!r} has dimension {existing}, not {dim}")
        state = self._milvus.rpc("checking the load state", "get_load_state", name).get("state")
        if "Loaded" not in str(state):
            self.load(name)
        return False

    def _create(self, name: str, dim: int) -> None:
        s = self.settings
        partition_key = "category" if s.partition_key == "category" else None
        layout = CollectionLayout.planned(dim, s.attribute_fields, partition_key)
        index_type = resolved_index_type(s, self.server)
        index = MilvusClient.prepare_index_params()
        index.add_index(
            field_name="vector",
            index_type=index_type,
            metric_type=s.metric_type,
            params=index_build_params(s, index_type),
        )
        kinds = self.server.scalar_index
        for field_name, kind in scalar_index_fields(layout).items():
            index.add_index(field_name=field_name, index_type=kinds[kind])
        extra = {"num_partitions": s.num_partitions} if partition_key else {}
        self._milvus.rpc(
            f"creating {name!r}",
            "create_collection",
            name,
            schema=collection_schema(layout),
            index_params=index,
            consistency_level="Bounded",
            **extra,
        )
        self._layouts[name] = layout
        self._index_types[name] = index_type

    def drop_collection(self, name: str) -> bool:
        """Drop the collection; False when it did not exist. Refused while an alias points to it."""
        if not self.has_collection(name):
            return False
        aliases = self._milvus.rpc("listing aliases", "list_aliases", name).get("aliases")
        if aliases:
            raise VectorStoreError(f"alias(es) {aliases} point to {name!r}: point them elsewhere first")
        self._milvus.rpc(f"dropping {name!r}", "drop_collection", name)
        self._layouts.pop(name, None)
        self._index_types.pop(name, None)
        return True

    def resolve_alias(self, alias: str) -> str | None:
        """The collection an alias points to, or None when there is no such alias."""
        if alias not in self._milvus.rpc("listing aliases", "list_aliases").get("aliases", []):
            return None
        described = self._milvus.rpc(f"describing alias {alias!r}", "describe_alias", alias)
        return described.get("collection_name") or None

    def point_alias(self, alias: str, collection: str) -> None:
        """Make ``alias`` point to ``collection``: create it, or switch it atomically."""
        current = self.resolve_alias(alias)
        if current == collection:
            return
        if current is None:
            try:
                self._milvus.rpc(f"creating alias {alias!r}", "create_alias", collection, alias)
                return
            except VectorStoreError:
                if self.resolve_alias(alias) is None:  # else created concurrently: switch it
                    raise
        self._milvus.rpc(f"pointing alias {alias!r} to {collection!r}", "alter_alias", collection, alias)

    def drop_alias(self, alias: str) -> bool:
        """Remove an alias (its collection stays); False when there was none."""
        if self.resolve_alias(alias) is None:
            return False
        self._milvus.rpc(f"dropping alias {alias!r}", "drop_alias", alias)
        return True

    def describe(self, collection: str) -> CollectionInfo:
        """Dimension, row count, index and aliases of a collection."""
        layout = self.layout(collection)
        index = self._milvus.rpc("describing the index", "describe_index", collection, "vector") or {}
        return CollectionInfo(
            name=collection,
            dim=layout.dim,
            rows=self.count(collection),
            index_type=str(index.get("index_type", "?")),
            metric_type=str(index.get("metric_type", "?")),
            partition_key=layout.partition_key,
            aliases=sorted(
                self._milvus.rpc("listing aliases", "list_aliases", collection).get("aliases", [])
            ),
        )

    def load(self, collection: str, timeout_s: float | None = None) -> None:
        """Load the collection (needed after a restart; reads do it on demand)."""
        self._milvus.load(collection, timeout_s)

    def release(self, collection: str) -> None:
        """Release the collection from memory (reads load it again on demand)."""
        self._milvus.rpc(f"releasing {collection!r}", "release_collection", collection)

    def flush(self, collection: str, timeout_s: float | None = None) -> None:
        """Persist pending writes (call after bulk loads); the default timeout is as :meth:`load`'s."""
        timeout = timeout_s or max(self.settings.timeout_s, LOAD_TIMEOUT_S)
        self._milvus.rpc(f"flushing {collection!r}", "flush", collection, timeout_s=timeout)

    def wait_until_indexed(self, collection: str, timeout_s: float = 3600.0) -> None:
        """Wait until every flushed row is in the vector index (a server builds it in the background;
        until then its interim index answers searches, with a lower recall)."""
        deadline = time.monotonic() + timeout_s
        while True:
            index = self._milvus.rpc("describing the index", "describe_index", collection, "vector") or {}
            pending = int(index.get("pending_index_rows", 0) or 0)
            if pending == 0 and int(index.get("indexed_rows", 0) or 0) >= int(
                index.get("total_rows", 0) or 0
            ):
                return
            if time.monotonic() > deadline:
                raise VectorStoreError(
                    f"{collection!r}: {pending} rows still unindexed after {timeout_s:g} s"
                )
            time.sleep(1.0)

    def count(self, collection: str, expression: str = "", consistency: str = STRONG) -> int:
        """Number of rows (matching ``expression``)."""
        rows = self._query(collection, expression, ["count(*)"], f"counting {collection!r}", consistency)
        return int(rows[0]["count(*)"]) if rows else 0

    def _query(
        self,
        collection: str,
        expr: str,
        output_fields: list[str],
        action: str,
        consistency: str = STRONG,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        extra = {"limit": limit} if limit is not None else {}
        return list(
            self._milvus.read(
                collection,
                action,
                "query",
                collection,
                filter=expr,
                output_fields=output_fields,
                consistency_level=consistency,
                **extra,
            )
        )

    # -- writes ---------------------------------------------------------------------------------

    def upsert(self, collection: str, records: Sequence[CropRecord]) -> int:
        """Insert or replace rows by id (batches of items, bulk loads); returns the number written."""
        if not records:
            return 0
        ids = [int(r.id) for r in records]
        if len(set(ids)) != len(ids):
            raise VectorStoreError("duplicate crop ids in one write")
        layout = self.layout(collection)
        vectors = check_vectors([r.vector for r in records], layout.dim, f"writing to {collection!r}")
        now = int(time.time())
        rows = [
            {
                "id": crop_id,
                "vector": vector,
                "item_key": check_text(r.item_key, "item_key"),
                "crop_category": check_text(r.crop_category, "crop_category", empty_ok=True),
                **fields_row(r.fields, layout),
                **({"shard": crop_id % SHARDS} if layout.has_shard else {}),
                "written_at": int(r.written_at) or now,
            }
            for crop_id, vector, r in zip(ids, vectors, records, strict=True)
        ]
        for batch in chunks(rows, WRITE_BATCH):
            self._milvus.rpc(f"writing to {collection!r}", "upsert", collection, list(batch))
        return len(rows)

    def crop_ids(self, collection: str, item_keys: Sequence[str]) -> dict[str, set[int]]:
        """The crop ids of these items (read Strong: what was just written or deleted counts)."""
        out: dict[str, set[int]] = {}
        for batch in chunks(list(dict.fromkeys(item_keys)), KEY_BATCH):
            expr = f"item_key in {keys_literal(batch)}"
            for row in self._query(collection, expr, ["id", "item_key"], "finding crops"):
                out.setdefault(row["item_key"], set()).add(int(row["id"]))
        return out

    def delete_items_except(self, collection: str, item_keys: Sequence[str], keep_ids: Sequence[int]) -> int:
        """Delete the crops of these items whose id is not in ``keep_ids``; returns rows deleted."""
        keep = {int(i) for i in keep_ids}
        found = self.crop_ids(collection, item_keys)
        return self.delete_ids(collection, [i for ids in found.values() for i in ids if i not in keep])

    def delete_items(self, collection: str, item_keys: Sequence[str]) -> int:
        """Delete every crop of these items; returns the number of rows deleted."""
        return self.delete_items_except(collection, item_keys, ())

    def delete_ids(self, collection: str, ids: Sequence[int]) -> int:
        """Delete crops by id; returns the number of rows deleted (existing just before)."""
        deleted = 0
        for batch in chunks(list(dict.fromkeys(int(i) for i in ids)), ID_BATCH):
            expr = f"id in {ids_literal(batch)}"
            matched = self.count(collection, expr)
            if matched:
                self._milvus.rpc(f"deleting from {collection!r}", "delete", collection, filter=expr)
            deleted += matched
        return deleted

    def update_item_fields(self, collection: str, item_key: str, fields: ItemFields) -> int:
        """Set the filter fields of every crop row of an item (no re-embedding); returns rows updated.

        The rows are read back with their vectors and written whole (Milvus 2.3 has no partial upsert).
        """
        expr = f"item_key == {string_literal(check_text(item_key, 'item_key'))}"
        rows = self._query(
            collection, expr, ["id", "vector", "crop_category", "written_at"], "reading the item's crops"
        )
        records = [
            CropRecord(
                id=int(row["id"]),
                vector=np.asarray(row["vector"], dtype=np.float32),
                item_key=item_key,
                crop_category=row["crop_category"],
                fields=fields,
                written_at=int(row["written_at"]),
            )
            for row in rows
        ]
        return self.upsert(collection, records)

    # -- reads ----------------------------------------------------------------------------------

    def search(
        self,
        collection_or_alias: str,
        queries: np.ndarray,
        limit: int,
        filter: CatalogFilter | None = None,
        *,
        with_vectors: bool = False,
        with_keys: bool = True,
    ) -> list[list[VectorHit]]:
        """For each query row, the ``limit`` most similar crops matching ``filter``, best first.

        A filtered search returns what an exact filtered search would (see :mod:`db.filtered_search`).
        With ``with_vectors`` each hit carries its stored vector (one round trip, no second fetch);
        without ``with_keys`` its ``item_key`` and ``crop_category`` are left empty (not read: the
        database has them).
        """
        name = collection_or_alias
        if isinstance(limit, bool) or not isinstance(limit, int) or not 0 < limit <= MAX_TOP_K:
            raise VectorStoreError(f"limit must be an integer in 1..{MAX_TOP_K}, got {limit!r}")
        target, layout = self._target(name)
        matrix = check_vectors(queries, layout.dim, f"searching {name!r}")
        expression = filter.to_expression(layout) if filter is not None else ""
        index_type = self._index_type(target)
        matching = total = None
        if needs_count(index_type, expression):
            matching, total = self._planning_count(target, expression), self._planning_count(target, "")
        plan = plan_search(self.settings, index_type, self.server, layout, expression, limit, matching, total)
        if plan.empty:
            return [[] for _ in range(len(matrix))]
        if plan.exact_rows:
            return self._exact_search(name, matrix, limit, expression, with_vectors)
        outputs = [
            *(["item_key", "crop_category"] if with_keys else []),
            *(["vector"] if with_vectors else []),
        ]
        per_search = self._run_searches(name, matrix, limit, plan, outputs)
        return merge_hits(per_search, limit)

    def _planning_count(self, collection: str, expression: str) -> int:
        """The rows matching ``expression``, counted at most every :data:`COUNT_TTL_S` seconds: a plan
        needs the filter's share of the collection, not its exact size at this instant."""
        key = (collection, expression)
        with self._lock:
            counted = self._counts.get(key)
        if counted is None or time.monotonic() - counted[0] > COUNT_TTL_S:
            counted = (time.monotonic(), self.count(collection, expression, self.settings.consistency))
        with self._lock:
            self._counts[key] = counted
            self._counts.move_to_end(key)
            while len(self._counts) > COUNT_CACHE_SIZE:
                self._counts.popitem(last=False)
        return counted[1]

    def _run_searches(
        self, name: str, matrix: np.ndarray, limit: int, plan: SearchPlan, outputs: list[str]
    ) -> list[list[list[VectorHit]]]:
        def one(expression: str) -> list[list[VectorHit]]:
            results = self._milvus.read(
                name,
                f"searching {name!r}",
                "search",
                name,
                data=list(matrix),
                limit=limit,
                filter=expression,
                output_fields=outputs,
                search_params={"params": plan.params},
                consistency_level=self.settings.consistency,
            )
            return answer_hits(results, self.settings.metric_type == "L2", "vector" in outputs)

        if len(plan.expressions) == 1:
            return [one(plan.expressions[0])]
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="sub-search")
            pool = self._pool
        return list(pool.map(one, plan.expressions))

    def _exact_search(
        self, name: str, matrix: np.ndarray, limit: int, expression: str, with_vectors: bool
    ) -> list[list[VectorHit]]:
        """The filter's rows compared with every query here: exact, for small subsets."""
        rows = self._query(
            name, expression, ["vector", "item_key", "crop_category"], "reading the filter's rows",
            self.settings.consistency,
        )  # fmt: skip
        if not rows:
            return [[] for _ in range(len(matrix))]
        vectors = np.asarray([row["vector"] for row in rows], dtype=np.float32)
        scores = exact_scores(self.settings.metric_type, matrix, vectors)
        out = []
        for row_scores in scores:
            best = np.argsort(-row_scores, kind="stable")[:limit]
            out.append(
                [
                    VectorHit(
                        int(rows[i]["id"]),
                        float(row_scores[i]),
                        rows[i]["item_key"],
                        rows[i]["crop_category"],
                        vectors[i] if with_vectors else None,
                    )
                    for i in best
                ]
            )
        return out

    def get_vectors(self, collection: str, ids: Sequence[int]) -> dict[int, np.ndarray]:
        """The stored float32 vectors of these crops (unknown ids are absent)."""
        out: dict[int, np.ndarray] = {}
        for batch in chunks(list(dict.fromkeys(int(i) for i in ids)), ID_BATCH):
            rows = self._query(collection, f"id in {ids_literal(batch)}", ["vector"], "fetching vectors")
            out.update((int(row["id"]), np.asarray(row["vector"], dtype=np.float32)) for row in rows)
        return out

    def item_fields(self, collection: str, item_keys: Sequence[str]) -> dict[str, ItemFields]:
        """The stored filter fields of these items (items without crops are absent)."""
        layout = self.layout(collection)
        out: dict[str, ItemFields] = {}
        for batch in chunks(list(dict.fromkeys(item_keys)), KEY_BATCH):
            expr = f"item_key in {keys_literal(batch)}"
            for row in self._query(collection, expr, layout.output_fields(), "reading item fields"):
                out.setdefault(row["item_key"], row_fields(row, layout))
        return out

    def iter_records(self, collection: str, batch_size: int = 1000) -> Iterator[list[CropRecord]]:
        """All rows with their vectors and fields, in batches (to derive a post-processed version)."""
        layout = self.layout(collection)
        fields = ["vector", "crop_category", "written_at", *layout.output_fields()]
        for batch in self._iterate(collection, fields, batch_size, "reading records"):
            yield [
                CropRecord(
                    id=int(row["id"]),
                    vector=np.asarray(row["vector"], dtype=np.float32),
                    item_key=row["item_key"],
                    crop_category=row["crop_category"],
                    fields=row_fields(row, layout),
                    written_at=int(row["written_at"]),
                )
                for row in batch
            ]

    def iter_rows(self, collection: str, batch_size: int = 1000) -> Iterator[list[tuple[int, str, int]]]:
        """All rows, in batches of ``(id, item_key, written_at)`` (for the reconcile job)."""
        for batch in self._iterate(collection, ["item_key", "written_at"], batch_size, "iterating rows"):
            yield [(int(r["id"]), r["item_key"], int(r["written_at"])) for r in batch]

    def _iterate(
        self, collection: str, fields: list[str], batch_size: int, action: str
    ) -> Iterator[list[dict[str, Any]]]:
        """Every row, in batches. A server pages by primary key with Strong queries (its results come
        in key order; pymilvus' iterator against 2.3 reads a client-side timestamp and can miss what
        was just written or deleted); Milvus Lite uses the query iterator."""
        if not self.server.lite:
            last = -1
            while True:
                batch = self._query(collection, f"id > {last}", ["id", *fields], action, limit=batch_size)
                if not batch:
                    return
                yield batch
                last = max(int(row["id"]) for row in batch)
        iterator = self._milvus.read(
            collection, action, "query_iterator", collection, batch_size=batch_size, output_fields=fields,
            consistency_level=STRONG,
        )  # fmt: skip
        try:
            while True:
                batch = self._milvus.call(action, iterator.next)
                if not batch:
                    return
                yield batch
        finally:
            iterator.close()
