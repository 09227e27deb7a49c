"""``clothes-search bench milvus``: insert rate, filtered-search latency and recall of the vector store.

Synthetic clustered unit vectors with catalog-like metadata (10 categories, 50 brands with a
skewed popularity, log-normal prices with 5% unknown, 80% in stock, a colour attribute) are
written through :class:`db.vectors.VectorStore` batch by batch (memory holds one batch), then
searched one query at a time with the filters an API user would send. While inserting, the
exact filtered top-k of every query is computed batch by batch, so the table also shows the
recall of the approximate index (an ANN index with a selective filter can return fewer hits).
A benchmark, not a test: it prints markdown tables.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import click
import numpy as np

from clothes_search.cli.context import CliContext, pass_cli
from clothes_search.cli.server_memory import server_rss_mib
from clothes_search.settings import MilvusSettings
from db.filters import CatalogFilter
from db.vectors import CropRecord, ItemFields, VectorStore

CATEGORIES = ("top", "bottom", "dress", "outerwear", "skirt", "shorts", "shoes", "bag", "hat", "scarf")
COLORS = (
    "black",
    "white",
    "red",
    "blue",
    "green",
    "beige",
    "grey",
    "pink",
    "brown",
    "navy",
    "yellow",
    "purple",
)
BRANDS = tuple(f"brand_{i:02d}" for i in range(50))
RARE_BRANDS = ("brand_rare", "brand_rarest")  # indexes len(BRANDS), len(BRANDS) + 1 in the metadata
RARE_SHARE = (0.001, 0.0001)
N_CLUSTERS = 40  # 4 visual clusters per category
NOISE = 0.8  # norm of the noise added to a cluster centre before normalising
Meta = dict[str, np.ndarray]


@dataclass(frozen=True)
class Scenario:
    """A filter per query (``j``: query number, ``c``: its category index) and the same as a row mask."""

    name: str
    make: Callable[[int, int], CatalogFilter | None]
    mask: Callable[[Meta, np.ndarray, np.ndarray], np.ndarray]  # (rows,) meta, (Q,) j, (Q,) c -> (rows, Q)


def _category(meta: Meta, j: np.ndarray, c: np.ndarray) -> np.ndarray:
    return meta["category"][:, None] == c[None, :]


def _price(meta: Meta) -> np.ndarray:
    return ((meta["price"] >= 20) & (meta["price"] <= 80))[:, None]  # NaN (unknown) is False


def _brand(meta: Meta, brand: int) -> np.ndarray:
    return (meta["brand"] == brand)[:, None]


SCENARIOS = (
    Scenario("none", lambda j, c: None, lambda m, j, c: np.ones((len(m["category"]), len(j)), dtype=bool)),
    Scenario(
        "in_stock (80 %)",
        lambda j, c: CatalogFilter(in_stock=True),
        lambda m, j, c: m["in_stock"][:, None].repeat(len(j), axis=1),
    ),
    Scenario("category", lambda j, c: CatalogFilter(categories=(CATEGORIES[c],)), _category),
    Scenario(
        "category + price 20-80",
        lambda j, c: CatalogFilter(categories=(CATEGORIES[c],), price_min=20, price_max=80),
        lambda m, j, c: _category(m, j, c) & _price(m),
    ),
    Scenario(
        "brand + in_stock",
        lambda j, c: CatalogFilter(brands=(BRANDS[j % 10],), in_stock=True),
        lambda m, j, c: (m["brand"][:, None] == (j % 10)[None, :]) & m["in_stock"][:, None],
    ),
    Scenario(
        "attribute color (declared, 8 %)",
        lambda j, c: CatalogFilter(attributes={"color": COLORS[j % len(COLORS)]}),
        lambda m, j, c: m["color"][:, None] == (j % len(COLORS))[None, :],
    ),
    Scenario(
        "attribute size (JSON, 10 %)",
        lambda j, c: CatalogFilter(attributes={"size": 36 + j % 10}),
        lambda m, j, c: m["size"][:, None] == (36 + j % 10)[None, :],
    ),
    Scenario(
        f"rare brand ({RARE_SHARE[0]:.1%})",
        lambda j, c: CatalogFilter(brands=(RARE_BRANDS[0],)),
        lambda m, j, c: _brand(m, len(BRANDS)).repeat(len(j), axis=1),
    ),
    Scenario(
        f"rarest brand ({RARE_SHARE[1]:.2%})",
        lambda j, c: CatalogFilter(brands=(RARE_BRANDS[1],)),
        lambda m, j, c: _brand(m, len(BRANDS) + 1).repeat(len(j), axis=1),
    ),
)


@dataclass
class Synthetic:
    """Reproducible synthetic crops: any batch can be regenerated from (seed, start)."""

    dim: int
    seed: int

    def __post_init__(self) -> None:
        centers = np.random.default_rng((self.seed, 0)).standard_normal((N_CLUSTERS, self.dim))
        self.centers = (centers / np.linalg.norm(centers, axis=1, keepdims=True)).astype(np.float32)
        weights = 1.0 / np.arange(1, len(BRANDS) + 1) ** 0.8
        self.brand_weights = weights / weights.sum()

    def vectors(self, rng: np.random.Generator, clusters: np.ndarray) -> np.ndarray:
        noise = rng.standard_normal((len(clusters), self.dim), dtype=np.float32) * (NOISE / np.sqrt(self.dim))
        vectors = self.centers[clusters] + noise
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    def batch(self, start: int, size: int) -> tuple[list[CropRecord], np.ndarray, Meta]:
        """Records of ids ``start+1 ..``, their vectors and their metadata as arrays."""
        rng = np.random.default_rng((self.seed, 1, start))
        clusters = rng.integers(0, N_CLUSTERS, size)
        vectors = self.vectors(rng, clusters)
        prices = np.round(rng.lognormal(4.0, 0.6, size), 2)
        prices[rng.random(size) < 0.05] = np.nan
        brands = rng.choice(len(BRANDS), size, p=self.brand_weights)
        rare = rng.random(size)
        brands[rare < RARE_SHARE[0]] = len(BRANDS)
        brands[rare < RARE_SHARE[1]] = len(BRANDS) + 1
        meta = {
            "category": clusters % len(CATEGORIES),
            "brand": brands,
            "price": prices,
            "in_stock": rng.random(size) < 0.8,
            "color": rng.integers(0, len(COLORS), size),
            "size": 36 + clusters % 10,
        }
        records = []
        for i in range(size):
            category = CATEGORIES[meta["category"][i]]
            fields = ItemFields(
                category=category,
                brand=(*BRANDS, *RARE_BRANDS)[meta["brand"][i]],
                price=None if np.isnan(prices[i]) else float(prices[i]),
                in_stock=bool(meta["in_stock"][i]),
                attributes={"color": COLORS[meta["color"][i]], "size": int(meta["size"][i])},
            )
            records.append(CropRecord(start + i + 1, vectors[i], f"sku-{start + i:08d}", category, fields))
        return records, vectors, meta

    def queries(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Query vectors and their category indexes."""
        rng = np.random.default_rng((self.seed, 2))
        clusters = rng.integers(0, N_CLUSTERS, count)
        return self.vectors(rng, clusters), clusters % len(CATEGORIES)


class ExactTopK:
    """The exact filtered top-k ids of every query and scenario, merged batch by batch."""

    def __init__(self, queries: np.ndarray, categories: np.ndarray, k: int) -> None:
        self.queries, self.categories, self.k = queries, categories, k
        self.j = np.arange(len(queries))
        shape = (len(SCENARIOS), k, len(queries))
        self.scores = np.full(shape, -np.inf, dtype=np.float32)
        self.ids = np.zeros(shape, dtype=np.int64)

    def add(self, first_id: int, vectors: np.ndarray, meta: Meta) -> None:
        sims = vectors @ self.queries.T  # (rows, Q): cosine of unit vectors
        ids = np.arange(first_id, first_id + len(vectors))[:, None].repeat(len(self.queries), axis=1)
        for s, scenario in enumerate(SCENARIOS):
            scores = np.concatenate(
                [self.scores[s], np.where(scenario.mask(meta, self.j, self.categories), sims, -np.inf)]
            )
            both_ids = np.concatenate([self.ids[s], ids])
            top = np.argpartition(-scores, self.k - 1, axis=0)[: self.k]
            self.scores[s] = np.take_along_axis(scores, top, axis=0)
            self.ids[s] = np.take_along_axis(both_ids, top, axis=0)

    def expected(self, scenario: int, query: int) -> set[int]:
        keep = np.isfinite(self.scores[scenario, :, query])
        return set(self.ids[scenario, keep, query].tolist())


@contextmanager
def _store(settings: MilvusSettings, uri: str | None, keep: str | None) -> Iterator[tuple[VectorStore, str]]:
    """A store and a collection name: a new one in a fresh Milvus Lite file, or at ``uri`` (dropped
    after), or the one named ``keep`` at ``uri`` (kept, and reused when it is there)."""
    with tempfile.TemporaryDirectory(prefix="bench-milvus-") as tmp:
        target = uri or os.path.join(tmp, "bench.db")
        collection = keep or f"bench_{settings.partition_key}_{uuid.uuid4().hex[:8]}"
        timeout = max(settings.timeout_s, 600.0)  # filtered searches on Milvus Lite can be slow
        with VectorStore(settings.model_copy(update={"uri": target, "timeout_s": timeout})) as store:
            try:
                yield store, collection
            finally:
                if uri and not keep:  # a temporary Lite file goes with its directory
                    store.drop_collection(collection)


def _progress(message: str) -> None:
    click.echo(f"  {time.strftime('%H:%M:%S')} {message}", err=True)


def wait_for_idle(max_s: float = 1800.0) -> None:
    """Wait until embedded Milvus Lite (in this process) stops compacting and building indexes.

    Searches meanwhile scan unindexed merged segments by brute force, which is not the steady state.
    """
    deadline = time.monotonic() + max_s
    while time.monotonic() < deadline:
        cpu = time.process_time()
        time.sleep(2.0)
        if time.process_time() - cpu < 0.1:
            return


def _timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def _run(
    store: VectorStore, collection: str, data: Synthetic, opts: dict[str, Any]
) -> tuple[dict[str, float], list[tuple[str, int, float, float, float, float, float]]]:
    count, top_k = opts["count"], opts["top_k"]
    vectors, categories = data.queries(opts["queries"])
    exact = ExactTopK(vectors, categories, top_k)
    idle = server_rss_mib(store.uri) if not store.is_local else None
    reuse = store.has_collection(collection) and store.count(collection) == count
    if not reuse:
        store.ensure_collection(collection, data.dim)
    insert_s = 0.0
    for start in range(0, count, opts["batch"]):
        records, batch_vectors, meta = data.batch(start, min(opts["batch"], count - start))  # untimed
        if not reuse:
            insert_s += _timed(lambda r=records: store.upsert(collection, r))
        exact.add(start + 1, batch_vectors, meta)
    _progress(f"reusing {collection}" if reuse else f"inserted in {insert_s:.1f} s")
    flush_s = 0.0 if reuse else _timed(lambda: store.flush(collection))
    if reuse:
        load_s = settle_s = 0.0
        store.load(collection)
    elif store.is_local:
        store.release(collection)
        load_s = _timed(lambda: store.load(collection))  # builds the missing segment indexes
        settle_s = _timed(wait_for_idle)
    else:  # a server builds segment indexes in the background: wait, then load them
        settle_s = _timed(lambda: store.wait_until_indexed(collection))
        store.release(collection)
        load_s = _timed(lambda: store.load(collection))
    _progress(f"flushed in {flush_s:.1f} s, indexed after {settle_s:.1f} s, loaded in {load_s:.1f} s")
    memory = server_rss_mib(store.uri) if not store.is_local else None
    stored = store.count(collection)
    if stored != count:
        raise click.ClickException(f"{stored} rows in {collection}, {count} expected")
    for i in range(min(10, len(vectors))):  # warm-up
        store.search(collection, vectors[i : i + 1], top_k)
    rows = []
    for s, scenario in enumerate(SCENARIOS):
        times, hits, recalls = [], [], []
        deadline = time.monotonic() + opts["max_seconds"]
        for j in range(len(vectors)):
            if j >= 3 and time.monotonic() > deadline:
                break
            catalog_filter = scenario.make(j, int(categories[j]))
            start = time.perf_counter()
            found = store.search(collection, vectors[j : j + 1], top_k, catalog_filter)[0]
            times.append((time.perf_counter() - start) * 1000)
            expected = exact.expected(s, j)
            hits.append((len(found), len(expected)))
            recalls.append(len({h.id for h in found} & expected) / len(expected) if expected else 1.0)
        _progress(f"{scenario.name}: {len(times)} queries, median {np.median(times):.1f} ms")
        p50, p95 = np.percentile(times, [50, 95])
        found_mean, expected_mean = np.mean(hits, axis=0)
        rows.append((scenario.name, len(times), p50, p95, found_mean, expected_mean, float(np.mean(recalls))))
    timings = {"insert": insert_s, "flush": flush_s, "load": load_s, "settle": settle_s}
    if memory is not None and idle is not None and not reuse:  # reused: it was loaded before "idle"
        timings["memory_mib"], timings["idle_mib"] = memory, idle
    return timings, rows


@click.command("milvus")
@click.option("--count", default=100_000, show_default=True, help="Crops to insert.")
@click.option(
    "--dim", default=2560, show_default=True, help="Vector dimension (default model signature: 2560)."
)
@click.option("--batch", default=2000, show_default=True, help="Crops generated and upserted per call.")
@click.option("--queries", default=200, show_default=True, help="Queries per filter scenario.")
@click.option(
    "--max-seconds", default=120.0, show_default=True, help="Time budget per scenario (>= 3 queries)."
)
@click.option("--top-k", default=100, show_default=True)
@click.option("--uri", help="Use this Milvus (a temporary collection) instead of a fresh Milvus Lite file.")
@click.option(
    "--index-type",
    type=click.Choice(["auto", "HNSW", "FLAT", "IVF_FLAT", "IVF_SQ8", "AUTOINDEX"]),
    help="Default: settings' (auto: HNSW on a server, IVF_FLAT on Milvus Lite).",
)
@click.option("--compare-partition-key", is_flag=True, help="Run with partition_key none and category.")
@click.option(
    "--keep",
    metavar="COLLECTION",
    help="With --uri: build into this collection and keep it; a later run with the same --count, --dim "
    "and --seed reuses it (searches only).",
)
@click.option("--seed", default=0, show_default=True)
@pass_cli
def bench_milvus(
    cli: CliContext,
    uri: str | None,
    index_type: str | None,
    compare_partition_key: bool,
    keep: str | None,
    **opts: Any,
) -> None:
    """Insert rate, filtered search latency (p50/p95) and recall of the vector store on synthetic crops."""
    if keep and (not uri or compare_partition_key):
        raise click.BadParameter("--keep needs --uri and one partition-key mode")
    if min(opts["count"], opts["dim"], opts["batch"], opts["queries"], opts["top_k"]) <= 0:
        raise click.BadParameter("--count, --dim, --batch, --queries and --top-k must be positive")
    base = cli.settings.milvus
    if index_type:
        base = base.model_copy(update={"index_type": index_type})
    modes = ["none", "category"] if compare_partition_key else [base.partition_key]
    data = Synthetic(dim=opts["dim"], seed=opts["seed"])
    count, load = opts["count"], ", ".join(f"{x:.2f}" for x in os.getloadavg())
    click.echo(
        f"{count} crops x {opts['dim']} float32 ({count * opts['dim'] * 4 / 1e9:.2f} GB), "
        f"index {base.index_type} "
        f"(M={base.hnsw_m}, efConstruction={base.hnsw_ef_construction}, ef={base.search_ef}), "
        f"metric {base.metric_type}, top-{opts['top_k']}, up to {opts['queries']} queries per filter, "
        f"{os.cpu_count()} CPUs, load average {load}, Milvus: {uri or 'a fresh Milvus Lite file'}"
    )
    inserts, searches = [], []
    for mode in modes:
        with _store(base.model_copy(update={"partition_key": mode}), uri, keep) as (store, collection):
            _progress(f"partition key {mode}: inserting {count} crops")
            timings, rows = _run(store, collection, data, opts)
        inserts.append((mode, timings))
        searches.extend((mode, *row) for row in rows)

    click.echo(
        "\n| partition key | insert s | insert rows/s | flush s | release+load s | background index s "
        "| rows/s incl. flush+index | server RSS idle → loaded | per million crops |"
    )
    click.echo("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for mode, t in inserts:
        total = t["insert"] + t["flush"] + t["load"] + t["settle"]
        if not total:  # a kept collection, reused: nothing was written
            click.echo(f"| {mode} | reused | – | – | – | – | – | – | – |")
            continue
        memory, idle = t.get("memory_mib"), t.get("idle_mib", 0.0)
        rss = "–" if memory is None else f"{idle:,.0f} → {memory:,.0f} MiB"
        per_million = "–" if memory is None else f"{(memory - idle) * 1e6 / count / 1024:,.2f} GiB"
        click.echo(
            f"| {mode} | {t['insert']:.1f} | {count / t['insert']:,.0f} | {t['flush']:.1f} | {t['load']:.1f} "
            f"| {t['settle']:.1f} | {count / total:,.0f} | {rss} | {per_million} |"
        )
    click.echo(
        f"\n| partition key | filter | queries | p50 ms | p95 ms | hits | exact hits "
        f"| recall@{opts['top_k']} |"
    )
    click.echo("|---|---|---:|---:|---:|---:|---:|---:|")
    for mode, name, n, p50, p95, found, expected, recall in searches:
        click.echo(
            f"| {mode} | {name} | {n} | {p50:.1f} | {p95:.1f} | {found:.1f} | {expected:.1f} | {recall:.3f} |"
        )
