"""The vector store: crop embeddings in Milvus (Milvus Lite on a local ``.db`` path, or a server).

A small adapter returning ids and scores only; it knows nothing of HTTP or of the SQL database
(the source of truth). One collection per model signature (``{prefix}_{hash}``), searched
through an alias (``settings.live_alias``) that a re-index swaps atomically.

Scores are similarities, higher is better: for COSINE and IP Milvus' distance already is one;
for L2 (Milvus reports the squared distance) the score is ``-distance``. An unknown price is
stored as NULL (the field is nullable) and never matches a price range.

pymilvus errors become :class:`VectorStoreError`, or :class:`VectorStoreUnavailableError` when
the server cannot be reached (refused, timed out): the API answers 503, the queue retries.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import numpy as np
from pymilvus import DataType, MilvusClient
from pymilvus.exceptions import (
    ConnectError,
    ConnectionConfigException,
    MilvusException,
    MilvusUnavailableException,
)

from clothes_search.settings import MilvusSettings
from db.filters import CatalogFilter, string_literal
from db.vector_records import (
    TEXT_LIMITS,
    CollectionInfo,
    CropRecord,
    ItemFields,
    T,
    VectorHit,
    VectorStoreError,
    VectorStoreUnavailableError,
    check_text,
    check_vectors,
    chunks,
    fields_row,
    hit_entity,
    ids_literal,
    keys_literal,
    row_fields,
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

MAX_TOP_K = 16384
MAX_DIM = 32768
LOAD_TIMEOUT_S = 900.0  # load and flush: loading builds missing segment indexes
WRITE_BATCH = 1000  # rows per upsert request (2560-d float32: ~10 MB)
ID_BATCH = 1000  # ids per `id in [...]` expression
KEY_BATCH = 100  # item keys per `item_key in [...]` expression
FIELD_OUTPUT = ["item_key", "category", "brand", "price", "in_stock", "attributes"]
COLLECTION_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")
_UNAVAILABLE_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
_CONNECT_FAILED = 2  # pymilvus Status.CONNECT_FAILED
_NOT_LOADED = 101  # Milvus ErrCollectionNotLoaded
_SERVE_HINT = (
    "check that the server runs (`clothes-search milvus serve` starts a local one) "
    "and that CLOTHES_SEARCH_MILVUS__URI points to it"
)


# Milvus Lite runs in-process: one embedded server per .db path, shared by the path's clients and
# kept until exit. Stores count their uses so that the last close() stops it (freeing the file lock).
_LITE_LOCK = threading.Lock()
_LITE_USERS: dict[str, int] = {}


def _lite_release(path: str) -> None:
    with _LITE_LOCK:
        _LITE_USERS[path] = _LITE_USERS.get(path, 0) - 1
        if _LITE_USERS[path] > 0:
            return
        del _LITE_USERS[path]
    try:
        from milvus_lite.server_manager import server_manager_instance
    except ImportError:
        return
    server_manager_instance.release_server(path)


def _unavailable_reason(exc: BaseException) -> str | None:
    """ "timeout" or "unavailable" when the server did not answer in time or cannot be reached."""
    code = getattr(exc, "code", None)
    if isinstance(exc, grpc.RpcError):
        code = code() if callable(code) else None
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return "timeout"
    if isinstance(exc, MilvusUnavailableException | ConnectError) or code == grpc.StatusCode.UNAVAILABLE:
        return "unavailable"
    if isinstance(exc, MilvusException) and code == _CONNECT_FAILED and "connect" in _message(exc).lower():
        return "unavailable"
    return None


def _message(exc: BaseException) -> str:
    return str(exc.message) if isinstance(exc, MilvusException) else str(exc) or type(exc).__name__


class VectorStore:
    """Crop vectors in Milvus. Connects lazily on first use; thread-safe; close it (or use ``with``)."""

    def __init__(self, settings: MilvusSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._milvus: MilvusClient | None = None
        self._lite_path: str | None = None
        self._dims: dict[str, int] = {}  # collection -> dimension (fixed at creation)

    @property
    def uri(self) -> str:
        """The configured URI, without credentials."""
        parts = urlsplit(self.settings.uri)
        if parts.scheme and "@" in parts.netloc:
            return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[1]}{parts.path}"
        return self.settings.uri

    @property
    def is_local(self) -> bool:
        """True for an embedded Milvus Lite file (usable by one process at a time)."""
        return "://" not in self.settings.uri and not self.settings.uri.startswith("unix:")

    def __enter__(self) -> VectorStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (and stop this process' Milvus Lite when no other store uses it)."""
        with self._lock:
            client, self._milvus = self._milvus, None
            lite_path, self._lite_path = self._lite_path, None
        if client is not None:
            try:
                client.close()
            except Exception:  # closing must not fail
                log.debug("closing the Milvus client failed", exc_info=True)
        if lite_path is not None:
            _lite_release(lite_path)

    # -- plumbing -------------------------------------------------------------------------------

    def _client(self) -> MilvusClient:
        with self._lock:
            if self._milvus is None:
                self._milvus = self._connect()
            return self._milvus

    def _connect(self) -> MilvusClient:
        s = self.settings
        if not self.is_local:
            return self._call(
                "connecting", lambda: MilvusClient(s.uri, token=s.token or "", timeout=s.timeout_s)
            )
        path = Path(s.uri).expanduser().absolute()
        if path.suffix != ".db":
            raise VectorStoreError(
                f"Milvus Lite needs a path ending in .db, got {s.uri!r} (or http://host:port)"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        # Embedded Milvus Lite serves gRPC inside this process and logs every call it does not
        # implement (pymilvus asks it for timestamps, then falls back): keep that out of our logs.
        logging.getLogger("grpc._server").setLevel(logging.CRITICAL)
        with _LITE_LOCK:
            _LITE_USERS[str(path)] = _LITE_USERS.get(str(path), 0) + 1
        try:
            client = MilvusClient(str(path), timeout=s.timeout_s)
        except ConnectionConfigException as exc:
            _lite_release(str(path))
            raise VectorStoreError(
                f"cannot open Milvus Lite at {path}: {_message(exc)}. It allows one process per file: is "
                "another process using it? For several processes run `clothes-search milvus serve` and set "
                "CLOTHES_SEARCH_MILVUS__URI=http://127.0.0.1:19530"
            ) from exc
        except (MilvusException, grpc.RpcError) as exc:
            _lite_release(str(path))
            raise self._wrap(exc, "opening Milvus Lite") from exc
        self._lite_path = str(path)
        return client

    def _wrap(self, exc: BaseException, action: str, timeout_s: float | None = None) -> VectorStoreError:
        reason = _unavailable_reason(exc)
        if reason == "timeout":
            limit = timeout_s or self.settings.timeout_s
            return VectorStoreUnavailableError(
                f"Milvus at {self.uri} did not finish {action} within {limit:g} s: {_message(exc)}; it may "
                "be down or overloaded (CLOTHES_SEARCH_MILVUS__TIMEOUT_S sets the limit)"
            )
        if reason == "unavailable":
            message = f"Milvus at {self.uri} is unavailable ({action}): {_message(exc)}; {_SERVE_HINT}"
            return VectorStoreUnavailableError(message)
        return VectorStoreError(f"Milvus at {self.uri}: {action} failed: {_message(exc)}")

    def _call(self, action: str, fn: Callable[[], T], timeout_s: float | None = None) -> T:
        try:
            return fn()
        except (MilvusException, grpc.RpcError) as exc:
            raise self._wrap(exc, action, timeout_s) from exc

    def _rpc(
        self, action: str, method: str, *args: Any, timeout_s: float | None = None, **kwargs: Any
    ) -> Any:
        """``client.method(*args, **kwargs)`` with a timeout (default: the settings'), errors wrapped."""
        client = self._client()
        timeout = timeout_s or self.settings.timeout_s
        return self._call(action, lambda: getattr(client, method)(*args, timeout=timeout, **kwargs), timeout)

    def _read(self, collection: str, action: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """A read RPC; loads a released collection (e.g. after a restart) and retries once."""
        client = self._client()
        try:
            return getattr(client, method)(*args, timeout=self.settings.timeout_s, **kwargs)
        except MilvusException as exc:
            if exc.code != _NOT_LOADED:
                raise self._wrap(exc, action) from exc
        except grpc.RpcError as exc:
            raise self._wrap(exc, action) from exc
        self.load(collection)
        return self._rpc(action, method, *args, **kwargs)

    def _query(self, collection: str, expr: str, output_fields: list[str], action: str) -> list[dict]:
        return list(
            self._read(collection, action, "query", collection, filter=expr, output_fields=output_fields)
        )

    def _dim(self, collection: str) -> int:
        if collection not in self._dims:
            info = self._rpc(f"describing {collection!r}", "describe_collection", collection)
            dim = next(int(f["params"]["dim"]) for f in info["fields"] if f["name"] == "vector")
            if info.get("collection_name", collection) != collection:
                return dim  # an alias: its target may change, do not cache
            self._dims[collection] = dim
        return self._dims[collection]

    # -- collections and aliases ----------------------------------------------------------------

    def collection_name(self, signature_hash: str) -> str:
        """The collection of a model signature: ``{prefix}_{hash}``."""
        name = f"{self.settings.collection_prefix}_{signature_hash}"
        if not COLLECTION_NAME_RE.fullmatch(name):
            raise VectorStoreError(f"invalid collection name {name!r}: use letters, digits and underscores")
        return name

    def list_collections(self) -> list[str]:
        """Names of all collections, sorted."""
        return sorted(self._rpc("listing collections", "list_collections"))

    def has_collection(self, name: str) -> bool:
        """Whether the collection exists."""
        return bool(self._rpc(f"checking {name!r}", "has_collection", name))

    def ensure_collection(self, name: str, dim: int) -> bool:
        """Create the collection (schema, index, loaded) unless it exists; True when created.

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
        existing = self._dim(name)
        if existing != dim:
            raise VectorStoreError(f"collection {name!r} has dimension {existing}, not {dim}")
        if "Loaded" not in str(self._rpc("checking the load state", "get_load_state", name).get("state")):
            self.load(name)
        return False

    def _create(self, name: str, dim: int) -> None:
        s = self.settings
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        for text in ("item_key", "crop_category", "category", "brand"):
            by_category = text == "category" and s.partition_key == "category"
            schema.add_field(
                text, DataType.VARCHAR, max_length=TEXT_LIMITS[text], is_partition_key=by_category
            )
        schema.add_field("price", DataType.DOUBLE, nullable=True)
        schema.add_field("in_stock", DataType.BOOL)
        schema.add_field("attributes", DataType.JSON)
        schema.add_field("written_at", DataType.INT64)
        build = {
            "HNSW": {"M": s.hnsw_m, "efConstruction": s.hnsw_ef_construction},
            "IVF_FLAT": {"nlist": s.ivf_nlist},
        }.get(s.index_type, {})
        index = MilvusClient.prepare_index_params()
        index.add_index(field_name="vector", index_type=s.index_type, metric_type=s.metric_type, params=build)
        extra = {"num_partitions": s.num_partitions} if s.partition_key == "category" else {}
        self._rpc(f"creating {name!r}", "create_collection", name, schema=schema, index_params=index, **extra)
        self._dims[name] = dim

    def drop_collection(self, name: str) -> bool:
        """Drop the collection; False when it did not exist. Refused while an alias points to it."""
        if not self.has_collection(name):
            return False
        aliases = self._rpc("listing aliases", "list_aliases", name).get("aliases")
        if aliases:
            raise VectorStoreError(f"alias(es) {aliases} point to {name!r}: point them elsewhere first")
        self._rpc(f"dropping {name!r}", "drop_collection", name)
        self._dims.pop(name, None)
        return True

    def resolve_alias(self, alias: str) -> str | None:
        """The collection an alias points to, or None when there is no such alias."""
        if alias not in self._rpc("listing aliases", "list_aliases").get("aliases", []):
            return None
        return (
            self._rpc(f"describing alias {alias!r}", "describe_alias", alias).get("collection_name") or None
        )

    def point_alias(self, alias: str, collection: str) -> None:
        """Make ``alias`` point to ``collection``: create it, or switch it atomically."""
        current = self.resolve_alias(alias)
        if current == collection:
            return
        if current is None:
            try:
                self._rpc(f"creating alias {alias!r}", "create_alias", collection, alias)
                return
            except VectorStoreError:
                if self.resolve_alias(alias) is None:  # else created concurrently: switch it
                    raise
        self._rpc(f"pointing alias {alias!r} to {collection!r}", "alter_alias", collection, alias)

    def describe(self, collection: str) -> CollectionInfo:
        """Dimension, row count, index and aliases of a collection."""
        fields = self._rpc(f"describing {collection!r}", "describe_collection", collection)["fields"]
        index = self._rpc("describing the index", "describe_index", collection, "vector") or {}
        return CollectionInfo(
            name=collection,
            dim=next(int(f["params"]["dim"]) for f in fields if f["name"] == "vector"),
            rows=self.count(collection),
            index_type=str(index.get("index_type", "?")),
            metric_type=str(index.get("metric_type", "?")),
            partition_key=next((f["name"] for f in fields if f.get("is_partition_key")), None),
            aliases=sorted(self._rpc("listing aliases", "list_aliases", collection).get("aliases", [])),
        )

    def load(self, collection: str, timeout_s: float | None = None) -> None:
        """Load the collection (needed after a restart; reads do it on demand).

        Loading builds the index of segments that lack one: minutes for a large collection, so the
        default timeout is at least :data:`LOAD_TIMEOUT_S`.
        """
        timeout = timeout_s or max(self.settings.timeout_s, LOAD_TIMEOUT_S)
        self._rpc(f"loading {collection!r}", "load_collection", collection, timeout_s=timeout)

    def release(self, collection: str) -> None:
        """Release the collection from memory (reads load it again on demand)."""
        self._rpc(f"releasing {collection!r}", "release_collection", collection)

    def flush(self, collection: str, timeout_s: float | None = None) -> None:
        """Persist pending writes (call after bulk loads); the default timeout is as :meth:`load`'s."""
        timeout = timeout_s or max(self.settings.timeout_s, LOAD_TIMEOUT_S)
        self._rpc(f"flushing {collection!r}", "flush", collection, timeout_s=timeout)

    def count(self, collection: str) -> int:
        """Number of rows."""
        rows = self._query(collection, "", ["count(*)"], f"counting {collection!r}")
        return int(rows[0]["count(*)"]) if rows else 0

    # -- writes ---------------------------------------------------------------------------------

    def upsert(self, collection: str, records: Sequence[CropRecord]) -> int:
        """Insert or replace rows by id (batches of items, bulk loads); returns the number written."""
        if not records:
            return 0
        ids = [int(r.id) for r in records]
        if len(set(ids)) != len(ids):
            raise VectorStoreError("duplicate crop ids in one write")
        vectors = check_vectors(
            [r.vector for r in records], self._dim(collection), f"writing to {collection!r}"
        )
        now = int(time.time())
        rows = [
            {
                "id": crop_id,
                "vector": vector,
                "item_key": check_text(r.item_key, "item_key"),
                "crop_category": check_text(r.crop_category, "crop_category", empty_ok=True),
                **fields_row(r.fields),
                "written_at": int(r.written_at) or now,
            }
            for crop_id, vector, r in zip(ids, vectors, records, strict=True)
        ]
        for batch in chunks(rows, WRITE_BATCH):
            self._rpc(f"writing to {collection!r}", "upsert", collection, list(batch))
        return len(rows)

    def delete_items_except(self, collection: str, item_keys: Sequence[str], keep_ids: Sequence[int]) -> int:
        """Delete the crops of these items whose id is not in ``keep_ids``; returns rows deleted."""
        keep = {int(i) for i in keep_ids}
        stale: list[int] = []
        for batch in chunks(list(dict.fromkeys(item_keys)), KEY_BATCH):
            rows = self._query(collection, f"item_key in {keys_literal(batch)}", ["id"], "finding crops")
            stale.extend(int(r["id"]) for r in rows if int(r["id"]) not in keep)
        return self.delete_ids(collection, stale)

    def delete_items(self, collection: str, item_keys: Sequence[str]) -> int:
        """Delete every crop of these items; returns the number of rows deleted."""
        return self.delete_items_except(collection, item_keys, ())

    def delete_ids(self, collection: str, ids: Sequence[int]) -> int:
        """Delete crops by id; returns the number of rows deleted (existing just before)."""
        deleted = 0
        for batch in chunks(list(dict.fromkeys(int(i) for i in ids)), ID_BATCH):
            expr = f"id in {ids_literal(batch)}"
            rows = self._query(collection, expr, ["count(*)"], f"counting rows to delete in {collection!r}")
            matched = int(rows[0]["count(*)"]) if rows else 0
            if matched:
                self._rpc(f"deleting from {collection!r}", "delete", collection, filter=expr)
            deleted += matched
        return deleted

    def update_item_fields(self, collection: str, item_key: str, fields: ItemFields) -> int:
        """Set the filter fields of every crop row of an item (no re-embedding); returns rows updated."""
        expr = f"item_key == {string_literal(check_text(item_key, 'item_key'))}"
        values = fields_row(fields)
        ids = [int(r["id"]) for r in self._query(collection, expr, ["id"], "finding the item's crops")]
        for batch in chunks(ids, WRITE_BATCH):
            rows = [{"id": crop_id, **values} for crop_id in batch]
            self._rpc(f"updating item {item_key!r}", "upsert", collection, rows, partial_update=True)
        return len(ids)

    # -- reads ----------------------------------------------------------------------------------

    def search(
        self, collection_or_alias: str, queries: np.ndarray, limit: int, filter: CatalogFilter | None = None
    ) -> list[list[VectorHit]]:
        """For each query row, the ``limit`` most similar crops matching ``filter``, best first."""
        name, s = collection_or_alias, self.settings
        if isinstance(limit, bool) or not isinstance(limit, int) or not 0 < limit <= MAX_TOP_K:
            raise VectorStoreError(f"limit must be an integer in 1..{MAX_TOP_K}, got {limit!r}")
        matrix = check_vectors(queries, self._dims.get(name), f"searching {name!r}")
        params: dict[str, Any] = {}
        if s.index_type == "HNSW":
            params = {"params": {"ef": max(s.search_ef, limit)}}
        elif s.index_type == "IVF_FLAT":
            params = {"params": {"nprobe": min(s.ivf_nprobe, s.ivf_nlist)}}
        expr = filter.to_expression() if filter is not None else ""
        fields = {"filter": expr, "output_fields": ["item_key", "crop_category"], "search_params": params}
        results = self._read(
            name, f"searching {name!r}", "search", name, data=list(matrix), limit=limit, **fields
        )
        sign = -1.0 if s.metric_type == "L2" else 1.0  # L2: squared distance, negated
        return [
            [VectorHit(int(h["id"]), sign * float(h["distance"]), **hit_entity(h["entity"])) for h in hits]
            for hits in results
        ]

    def get_vectors(self, collection: str, ids: Sequence[int]) -> dict[int, np.ndarray]:
        """The stored float32 vectors of these crops (unknown ids are absent)."""
        out: dict[int, np.ndarray] = {}
        for batch in chunks(list(dict.fromkeys(int(i) for i in ids)), ID_BATCH):
            rows = self._read(
                collection, "fetching vectors", "get", collection, ids=list(batch), output_fields=["vector"]
            )
            out.update((int(row["id"]), np.asarray(row["vector"], dtype=np.float32)) for row in rows)
        return out

    def item_fields(self, collection: str, item_keys: Sequence[str]) -> dict[str, ItemFields]:
        """The stored filter fields of these items (items without crops are absent)."""
        out: dict[str, ItemFields] = {}
        for batch in chunks(list(dict.fromkeys(item_keys)), KEY_BATCH):
            expr = f"item_key in {keys_literal(batch)}"
            for row in self._query(collection, expr, FIELD_OUTPUT, "reading item fields"):
                out.setdefault(row["item_key"], row_fields(row))
        return out

    def iter_records(self, collection: str, batch_size: int = 1000) -> Iterator[list[CropRecord]]:
        """All rows with their vectors and fields, in batches (to derive a post-processed version)."""
        fields = ["vector", "crop_category", "written_at", *FIELD_OUTPUT]
        iterator = self._read(
            collection, "reading records", "query_iterator", collection, batch_size=batch_size,
            output_fields=fields,
        )  # fmt: skip
        try:
            while True:
                batch = self._call("reading records", iterator.next)
                if not batch:
                    return
                yield [
                    CropRecord(
                        id=int(row["id"]),
                        vector=np.asarray(row["vector"], dtype=np.float32),
                        item_key=row["item_key"],
                        crop_category=row["crop_category"],
                        fields=row_fields(row),
                        written_at=int(row["written_at"]),
                    )
                    for row in batch
                ]
        finally:
            iterator.close()

    def iter_rows(self, collection: str, batch_size: int = 1000) -> Iterator[list[tuple[int, str, int]]]:
        """All rows, in batches of ``(id, item_key, written_at)`` (for the reconcile job)."""
        kwargs = {"batch_size": batch_size, "output_fields": ["item_key", "written_at"]}
        iterator = self._read(collection, "iterating rows", "query_iterator", collection, **kwargs)
        try:
            while True:
                batch = self._call("iterating rows", iterator.next)
                if not batch:
                    return
                yield [(int(r["id"]), r["item_key"], int(r["written_at"])) for r in batch]
        finally:
            iterator.close()
