"""One typed settings object for the whole system.

Values come, highest priority first, from: keyword arguments, environment variables
(prefix ``CLOTHES_SEARCH_``, nested sections joined with ``__``, e.g.
``CLOTHES_SEARCH_FETCH__MAX_BYTES=1000000``; lists as JSON), an optional TOML config file
(``--config path.toml`` or ``CLOTHES_SEARCH_CONFIG``), then the defaults below.
The defaults are the embedded, offline setup. Nothing is read at import time:
call :meth:`Settings.load` once per process and pass the object down.

Files are found from any working directory: the embedded defaults (SQLite file, Milvus Lite file,
fetched model files) live in one per-user data folder (:func:`default_data_dir`, e.g.
``~/.local/share/clothes-search``; ``CLOTHES_SEARCH_DATA_DIR`` moves it), relative paths in a
config file are resolved against that file's folder, and other relative paths against the working
directory of the process that loads the settings.
"""

from __future__ import annotations

import ipaddress
import os
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from clothes_search.settings_files import (
    SQLITE_PREFIX,
    ConfigFileSource,
    absolute,
    absolute_sqlite_url,
    default_data_dir,
)

ENV_PREFIX = "CLOTHES_SEARCH_"
CONFIG_ENV = f"{ENV_PREFIX}CONFIG"


class ConfigError(ValueError):
    """The configuration (file, environment or arguments) is invalid."""


class FetchSettings(BaseModel):
    """Limits for loading images from URLs, paths and bytes (one section per trust level: ``fetch`` for
    trusted feeds, ``row_fetch`` for rows sent to the API, ``query_fetch`` for /similar's images)."""

    section: ClassVar[str] = "fetch"  #: its name in the settings, for messages that say what to change
    connect_timeout_s: float = Field(5.0, gt=0)
    read_timeout_s: float = Field(10.0, gt=0)
    total_timeout_s: float = Field(30.0, gt=0, description="Whole download, redirects included.")
    max_bytes: int = Field(20_000_000, gt=0, description="Largest encoded image accepted.")
    max_pixels: int = Field(40_000_000, gt=0, description="Decompression-bomb guard (width*height).")
    max_side: int = Field(
        2048,
        gt=0,
        description="Images are decoded to at most this many pixels on their longest side (JPEG at a "
        "reduced scale directly); boxes are still reported in the original's pixels.",
    )
    max_redirects: int = Field(5, ge=0)
    allowed_ports: list[int] = Field(
        default_factory=list, description="Ports an http(s) URL may name (default port included); empty: any."
    )
    local_files: bool = Field(True, description="Whether local paths and file:// URLs may be read.")
    local_roots: list[Path] = Field(
        default_factory=list,
        description="Folders local images must be in (trusted feeds); empty: the feed file's own folder.",
    )
    allow_private_networks: bool = Field(
        False, description="Allow loopback, private, link-local and metadata addresses (SSRF guard off)."
    )
    allowed_networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = Field(
        default_factory=list,
        description="Non-public networks allowed anyway, e.g. ['127.0.0.1/32'] for a local test server.",
    )
    user_agent: str = "clothes-search/0.1 (+image-fetcher)"


class RowFetchSettings(FetchSettings):
    """``row_fetch``: images of rows sent to the API. Ports 80/443 unless set; never local files."""

    section: ClassVar[str] = "row_fetch"

    allowed_ports: list[int] = Field(
        default_factory=lambda: [80, 443],
        description="Ports an http(s) URL may name (default port included); empty: any.",
    )
    local_files: Literal[False] = Field(False, description="Rows from the network never name local files.")


class QueryFetchSettings(RowFetchSettings):
    """``query_fetch``: /similar's images: a short budget and a stricter pixel limit than feeds'."""

    section: ClassVar[str] = "query_fetch"

    connect_timeout_s: float = Field(2.0, gt=0)
    read_timeout_s: float = Field(3.0, gt=0)
    total_timeout_s: float = Field(5.0, gt=0, description="Whole download, redirects included.")
    max_bytes: int = Field(10_000_000, gt=0, description="Largest encoded image accepted.")
    max_pixels: int = Field(16_000_000, gt=0, description="Decompression-bomb guard (width*height).")


class InferenceRuntime(StrEnum):
    """What runs a model at inference time. Vectors are interchangeable between runtimes."""

    AUTO = "auto"  #: ONNX Runtime when it is installed (and the model exports and verifies), else torch
    ONNXRUNTIME = "onnxruntime"
    TORCH = "torch"


class DetectorBackend(StrEnum):
    WHOLE_IMAGE = "whole_image"
    MEDIAPIPE_POSE = "mediapipe_pose"
    TORCHVISION = "torchvision"


class DetectorConfig(BaseModel):
    """One of the m detectors whose boxes Weighted Boxes Fusion combines."""

    name: str = Field(description="Unique name, reported in 'which detectors agreed'.")
    backend: DetectorBackend
    weight: float = Field(1.0, ge=0, description="WBF weight of this detector.")
    score_threshold: float = Field(0.3, ge=0, le=1)
    checkpoint: Path | None = Field(None, description="Local weights file (torchvision backend).")
    model: str | None = Field(None, description="Architecture name (torchvision backend).")
    categories: list[str] | None = Field(
        None, description="Class index -> category name, index 0 = background (torchvision backend)."
    )
    options: dict[str, Any] = Field(default_factory=dict, description="Backend-specific options.")
    runtime: InferenceRuntime | None = Field(
        None, description="torchvision backend: the backbone's runtime; default: pipeline's."
    )


class EmbedderBackend(StrEnum):
    EFFICIENTNET_LITE = "efficientnet_lite"
    OPEN_CLIP = "open_clip"
    TORCHVISION = "torchvision"
    TRAINED = "trained"


class ResizeMode(StrEnum):
    LETTERBOX = "letterbox"  # pad to a square with grey, then resize: keeps the whole garment
    STRETCH = "stretch"
    CENTER_CROP = "center_crop"


class EmbedderConfig(BaseModel):
    """One of the n embedding models whose features are concatenated."""

    name: str
    backend: EmbedderBackend
    model: str = Field(
        description="lite0/lite1/lite2, an open_clip model name or hub id, or a torchvision arch."
    )
    checkpoint: Path | None = Field(
        None, description="Local weights file; required unless the model is a hub id."
    )
    weight: float = Field(1.0, gt=0, description="Multiplier of this model's L2-normalised feature.")
    image_size: int | None = Field(None, gt=0, description="Input size; default: the model's own.")
    resize_mode: ResizeMode = ResizeMode.LETTERBOX
    runtime: InferenceRuntime | None = Field(None, description="This model's runtime; default: pipeline's.")
    options: dict[str, Any] = Field(default_factory=dict)


class FusionSettings(BaseModel):
    """Weighted Boxes Fusion (ensemble-boxes) and crop parameters."""

    iou_thr: float = Field(0.55, gt=0, le=1)
    skip_box_thr: float = Field(0.0, ge=0, le=1)
    conf_type: Literal["avg", "max", "box_and_model_avg", "absent_model_aware_avg"] = "avg"
    min_score: float = Field(0.0, ge=0, le=1, description="Drop fused boxes scoring below this.")
    same_garment_iou: float = Field(
        0.6,
        gt=0,
        le=1,
        description="One garment, one detection: a fused box overlapping a higher-scoring one (of any "
        "category) by at least this IoU is the same garment under another class hypothesis; its class "
        "becomes one of the garment's alternatives. 1 keeps every fused box as a garment.",
    )
    min_box_fraction: float = Field(
        0.0005, ge=0, lt=1, description="Drop boxes smaller than this fraction of the image area."
    )
    crop_padding: float = Field(
        0.05, ge=0, le=1, description="Padding added to each side, as a box fraction."
    )


class PipelineSettings(BaseModel):
    batch_size: int = Field(32, gt=0, description="Images processed together (detected, cropped, embedded).")
    forward_batch_size: int | None = Field(
        None,
        gt=0,
        description="Crops per model forward pass; default 4 on CPU (measured fastest on 2 cores: "
        "large CPU batches are 2-3x slower) and 64 on CUDA.",
    )
    torch_threads: int | None = Field(
        None, gt=0, description="Threads per model call (torch and ONNX Runtime); default: torch's."
    )
    thumbnail_size: int = Field(
        320,
        ge=32,
        le=2048,
        description="Ingestion keeps a JPEG of each catalog image this many pixels a side.",
    )
    runtime: InferenceRuntime = Field(
        InferenceRuntime.AUTO,
        description="Inference runtime of the embedders and the torchvision detectors' backbones: "
        "'auto' (ONNX Runtime when installed, exported once to <models_dir>/onnx and verified against "
        "torch; else torch), 'onnxruntime' or 'torch'.",
    )
    device: str = Field("cpu", description="'cpu', 'cuda', 'cuda:1', ...")
    fallback_to_whole_image: bool = Field(True, description="Use the whole image when no garment is found.")
    max_crops_per_image: int = Field(8, gt=0)

    def effective_forward_batch_size(self) -> int:
        if self.forward_batch_size is not None:
            return self.forward_batch_size
        return 64 if self.device.startswith("cuda") else 4


class DatabaseSettings(BaseModel):
    """The metadata database (the source of truth for everything but the vectors)."""

    url: str = Field(
        "",
        description="SQLAlchemy URL: sqlite:///path or postgresql+psycopg2://user@host/db; "
        "default: sqlite:///<data_dir>/catalog.db.",
    )
    echo: bool = False
    pool_size: int = Field(5, gt=0, description="Connection pool size (PostgreSQL).")
    connect_timeout_s: int = Field(5, gt=0, description="PostgreSQL: give up connecting after this.")
    statement_timeout_s: float | None = Field(
        30.0, gt=0, description="PostgreSQL: cancel a statement running longer (None: no limit)."
    )


class MilvusSettings(BaseModel):
    """The vector store: Milvus Lite on a local file, or a Milvus server by URI."""

    @field_validator("attribute_fields")
    @classmethod
    def _attribute_names(cls, fields: dict[str, str]) -> dict[str, str]:
        import re

        bad = [name for name in fields if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", name)]
        if bad:
            raise ValueError(f"attribute names are letters, digits and '_' (not first), got {bad}")
        return fields

    uri: str = Field(
        "",
        description="A local path -> embedded Milvus Lite (one process); http://host:port -> a Milvus server "
        "(`clothes-search milvus serve` for several local processes, standalone or a cluster); "
        "default: <data_dir>/milvus.db.",
    )
    token: str | None = Field(None, description="user:password or API key for a secured server.")
    timeout_s: float = Field(30.0, gt=0)
    collection_prefix: str = Field("crops", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,200}$")
    live_alias: str = Field("crops_live", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,200}$")
    index_type: Literal["auto", "HNSW", "FLAT", "IVF_FLAT", "IVF_SQ8", "AUTOINDEX"] = Field(
        "auto",
        description="Vector index of new collections; auto: HNSW on a server, IVF_FLAT on Milvus Lite.",
    )
    metric_type: Literal["COSINE", "IP", "L2"] = "COSINE"
    hnsw_m: int = Field(16, gt=0)
    hnsw_ef_construction: int = Field(200, gt=0)
    search_ef: int = Field(
        512, gt=0, description="HNSW ef at search time (>= results); measured free on Milvus Lite at 100k."
    )
    ivf_nlist: int = Field(1024, gt=0)
    ivf_nprobe: int = Field(
        64, gt=0, description="IVF lists scanned by an unfiltered search (filtered: all)."
    )
    exact_fraction: float = Field(
        0.05,
        gt=0,
        le=1,
        description="HNSW on a server: a filtered search keeping at most this share of the rows is brute "
        "force (exact); larger shares below ann_min_fraction are split into such sub-searches.",
    )
    ann_min_fraction: float = Field(
        0.3, gt=0, le=1, description="HNSW on a server: filters keeping this share or more use the graph."
    )
    split_max_rows: int | None = Field(
        None,
        ge=0,
        description="HNSW on a server: a filter between exact_fraction and ann_min_fraction of the rows is "
        "split into exact sub-searches up to this many rows (None: always, exact); more rows use the graph "
        "with a wider ef: faster at a million rows on few cores, recall ~0.99 instead of 1 (README).",
    )
    filtered_ef_factor: float = Field(
        1.0,
        gt=0,
        description="HNSW on a server, the graph under a filter: ef = factor x limit / the filter's share "
        "(at least search_ef).",
    )
    attribute_fields: dict[str, Literal["string", "int", "float", "bool"]] = Field(
        default_factory=lambda: {"color": "string"},
        description="Attributes merchandisers filter on, stored as typed scalar fields of their own (new "
        "collections); the other attributes stay in the JSON field.",
    )
    consistency: Literal["Strong", "Bounded", "Session", "Eventually"] = Field(
        "Bounded",
        description="Consistency of searches (writes are read back Strong). Bounded: a search may miss "
        "rows written in the last few seconds; Strong waits for them (~0.2 s more per search on 2.3).",
    )
    partition_key: Literal["none", "category"] = Field(
        "none", description="Use the item category as Milvus partition key (see the storage benchmark)."
    )
    num_partitions: int = Field(16, gt=0)
    orphan_grace_s: float = Field(
        600.0, ge=0, description="Reconcile leaves vectors without a crop row alone while younger than this."
    )
    load_on_read: bool = Field(
        True,
        description="Load a released collection when a read finds it so (minutes for a large one); the API "
        "turns it off: a request answers 503 instead, the server loads at start-up.",
    )
    server_host: str = Field("127.0.0.1", description="`clothes-search milvus serve` bind address.")
    server_port: int = Field(19530, gt=0, lt=65536)
    server_data_dir: Path | None = Field(
        None, description="`clothes-search milvus serve` data; default: <data_dir>/milvus-lite-server."
    )


class QueueSettings(BaseModel):
    """The catalog ingestion queue (Celery on Redis), or in-process ingestion when no broker is set."""

    broker_url: str | None = Field(
        None, description="e.g. redis://127.0.0.1:6379/0; None runs ingestion in-process (embedded default)."
    )
    result_backend: str | None = Field(None, description="Default: the broker URL.")
    ingest_batch_size: int = Field(32, gt=0, le=256, description="Items per ingest task (micro-batch).")
    fetch_threads: int = Field(16, gt=0, description="Concurrent image downloads per batch.")
    max_attempts: int = Field(5, gt=0, description="Tries per item before a transient failure is final.")
    retry_backoff_s: float = Field(2.0, gt=0, description="First retry delay; doubles per try, jittered.")
    retry_backoff_max_s: float = Field(300.0, gt=0)
    stale_claim_s: float = Field(
        900.0, gt=0, description="An item 'processing' for longer than this is re-queued (its worker died)."
    )
    visibility_timeout_s: int = Field(
        3600, gt=0, description="Redis: an unacknowledged task is redelivered after this (worker lost)."
    )
    task_time_limit_s: int = Field(1800, gt=0)
    sync_fields_every_s: float = Field(
        60.0, gt=0, description="How often workers copy metadata changes the vector store missed."
    )
    max_memory_per_child_mb: int = Field(
        3072, gt=0, description="A worker process past this resident memory is replaced after its task."
    )


class ApiSettings(BaseModel):
    """Who may call the HTTP API, and how much."""

    public_search: bool = Field(
        True, description="/similar without a key (a public shop search); false: the search role is needed."
    )
    public_metrics: bool = Field(False, description="/metrics without an admin key (an internal port only).")
    bootstrap_admin_key: SecretStr | None = Field(
        None,
        description="An admin key created at start-up if absent (containers): `clothes-search keys "
        "generate`.",
    )
    rate_limit: str = Field(
        "600/minute", description="Requests per key (or per client address without one), `limits` notation."
    )
    search_rate_limit: str = Field("120/minute", description="/similar requests per key or client address.")
    max_concurrent_searches: int = Field(
        4, gt=0, description="/similar requests one process works on at once; more answer 503 + Retry-After."
    )
    proxy_hops: int = Field(
        0, ge=0, description="Proxies in front of the API whose X-Forwarded-For is trusted (0: none)."
    )
    limits_storage_uri: str | None = Field(
        None,
        description="Where rate-limit counters live (redis://...); default: the broker, else in-process.",
    )
    web_secret_key: SecretStr | None = Field(
        None,
        description="Signs the web app's session cookies; every API process must have the same. Default: a "
        "random key made once and kept in <data_dir>/web-secret-key.",
    )
    secure_cookies: bool = Field(
        False, description="Send the web app's session cookie over HTTPS only (set it behind TLS)."
    )
    blas_threads: int = Field(
        1,
        gt=0,
        description="BLAS threads of an API process (numpy's re-ranking, QE, re-scoring): its matrices "
        "are small and requests run side by side, so more threads only fight over the cores.",
    )


class SearchSettings(BaseModel):
    """``/similar``: result counts, ANN depth and the post-processing options."""

    default_k: int = Field(20, gt=0)
    max_k: int = Field(100, gt=0)
    rerank: Literal["none", "k_reciprocal"] = "k_reciprocal"
    rerank_depth: int = Field(100, gt=0, le=2000, description="Candidates (K') from Milvus per garment.")
    k1: int = Field(20, gt=0, description="k-reciprocal neighbours (Zhong et al. 2017).")
    k2: int = Field(6, gt=0, description="Local query expansion size.")
    lambda_value: float = Field(0.3, ge=0, le=1, description="Weight of the original distance.")
    query_expansion: bool = Field(False, description="Average query expansion (unhelpful in the paper).")
    qe_top_n: int = Field(5, gt=0)
    overfetch: int = Field(4, gt=0, description="Without re-ranking, fetch k x this many crops.")


class VersionSettings(BaseModel):
    """Index versions side by side: building one beside the live one, switching, rolling back."""

    retention_s: float = Field(
        86_400.0,
        ge=0,
        description="A retired version keeps receiving the catalog's writes, and can be made live again "
        "(a roll back), for this long after it was retired; then `index gc` may drop it.",
    )
    heartbeat_s: float = Field(
        2.0, gt=0, description="How often each API process looks at the versions and reports its models."
    )
    preload_building: bool = Field(
        True,
        description="API processes load the models of versions being built, so that a switch to one "
        "never waits for them (costs their memory in every API process during a build).",
    )
    activation_timeout_s: float = Field(
        300.0, gt=0, description="`index activate` waits this long for every API process to load the models."
    )
    build_batch_size: int = Field(16, gt=0, le=256, description="Items per `index build` batch (task).")


class CategorySettings(BaseModel):
    """The shared category vocabulary and how detector labels map onto it."""

    vocabulary: list[str] = Field(
        default_factory=lambda: [
            # DeepFashion2's 13 categories, in category_id order (1..13)
            "short_sleeve_top",
            "long_sleeve_top",
            "short_sleeve_outwear",
            "long_sleeve_outwear",
            "vest",
            "sling",
            "shorts",
            "trousers",
            "skirt",
            "short_sleeve_dress",
            "long_sleeve_dress",
            "vest_dress",
            "sling_dress",
            # coarse categories that heuristic detectors emit
            "top",
            "bottom",
            "full_body",
            "footwear",
            "garment",
        ]
    )
    aliases: dict[str, str] = Field(
        default_factory=lambda: {
            "short sleeve top": "short_sleeve_top",
            "long sleeve top": "long_sleeve_top",
            "short sleeve outwear": "short_sleeve_outwear",
            "long sleeve outwear": "long_sleeve_outwear",
            "short sleeve dress": "short_sleeve_dress",
            "long sleeve dress": "long_sleeve_dress",
            "vest dress": "vest_dress",
            "sling dress": "sling_dress",
            "upper_body": "top",
            "lower_body": "bottom",
            "shoes": "footwear",
        },
        description="Detector label -> vocabulary name.",
    )
    coarse: dict[str, str] = Field(
        default_factory=lambda: {
            "short_sleeve_top": "top",
            "long_sleeve_top": "top",
            "short_sleeve_outwear": "top",
            "long_sleeve_outwear": "top",
            "vest": "top",
            "sling": "top",
            "shorts": "bottom",
            "trousers": "bottom",
            "skirt": "bottom",
            "short_sleeve_dress": "full_body",
            "long_sleeve_dress": "full_body",
            "vest_dress": "full_body",
            "sling_dress": "full_body",
        },
        description="Fine category -> coarse group; WBF fuses boxes within the same coarse group.",
    )

    @model_validator(mode="after")
    def _check_names(self) -> CategorySettings:
        known = set(self.vocabulary)
        for source, target in {**self.aliases, **self.coarse}.items():
            if target not in known:
                raise ValueError(
                    f"category mapping {source!r} -> {target!r}: {target!r} is not in the vocabulary"
                )
        return self


def _default_detectors() -> list[DetectorConfig]:
    return [
        DetectorConfig(
            name="pose_keypoints", backend=DetectorBackend.MEDIAPIPE_POSE, options={"box_source": "keypoints"}
        ),
        DetectorConfig(
            name="pose_mask", backend=DetectorBackend.MEDIAPIPE_POSE, options={"box_source": "mask"}
        ),
    ]


def _default_embedders() -> list[EmbedderConfig]:
    return [
        EmbedderConfig(name="effnet_lite0", backend=EmbedderBackend.EFFICIENTNET_LITE, model="lite0"),
        EmbedderConfig(name="effnet_lite2", backend=EmbedderBackend.EFFICIENTNET_LITE, model="lite2"),
    ]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    read_environment: ClassVar[bool] = True  # the CLOTHES_SEARCH_* variables (see load)

    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="Folder of the embedded defaults: catalog.db, milvus.db, models/ "
        "(env CLOTHES_SEARCH_DATA_DIR).",
    )
    models_dir: Path | None = Field(
        None, description="Where fetched model files live (mediapipe/...); default: <data_dir>/models."
    )
    fetch: FetchSettings = Field(default_factory=FetchSettings)
    row_fetch: RowFetchSettings = Field(
        default_factory=RowFetchSettings,
        description="Images of rows sent to the API: http(s) on ports 80/443 only, never local files.",
    )
    query_fetch: QueryFetchSettings = Field(
        default_factory=QueryFetchSettings,
        description="/similar?image_url= and uploads: short budget, 16 Mpx, ports 80/443, no local files.",
    )
    api: ApiSettings = Field(default_factory=ApiSettings)
    categories: CategorySettings = Field(default_factory=CategorySettings)
    detectors: list[DetectorConfig] = Field(default_factory=_default_detectors)
    embedders: list[EmbedderConfig] = Field(default_factory=_default_embedders)
    fusion: FusionSettings = Field(default_factory=FusionSettings)
    pipeline: PipelineSettings = Field(default_factory=PipelineSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    milvus: MilvusSettings = Field(default_factory=MilvusSettings)
    queue: QueueSettings = Field(default_factory=QueueSettings)
    search: SearchSettings = Field(default_factory=SearchSettings)
    versions: VersionSettings = Field(default_factory=VersionSettings)

    @field_validator("detectors", "embedders")
    @classmethod
    def _unique_names(cls, models: list[DetectorConfig] | list[EmbedderConfig]) -> list:
        names = [m.name for m in models]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"model names must be unique, repeated: {duplicates}")
        return models

    @field_validator("embedders")
    @classmethod
    def _at_least_one_embedder(cls, embedders: list[EmbedderConfig]) -> list[EmbedderConfig]:
        if not embedders:
            raise ValueError("at least one embedder is required")
        return embedders

    @model_validator(mode="after")
    def _place_files(self) -> Settings:
        """Fill the file defaults from ``data_dir`` and make local paths absolute (stable under chdir).

        Nested sections are replaced by updated copies, never changed in place (they may be shared).
        """
        self.data_dir = absolute(self.data_dir)
        self.models_dir = absolute(self.models_dir or self.data_dir / "models")
        database_url = self.database.url or f"{SQLITE_PREFIX}{self.data_dir / 'catalog.db'}"
        self.database = self.database.model_copy(update={"url": absolute_sqlite_url(database_url)})
        uri = self.milvus.uri or str(self.data_dir / "milvus.db")
        server_dir = self.milvus.server_data_dir or self.data_dir / "milvus-lite-server"
        self.milvus = self.milvus.model_copy(
            update={
                "uri": uri if "://" in uri or uri.startswith("unix:") else str(absolute(Path(uri))),
                "server_data_dir": absolute(server_dir),
            }
        )
        self.detectors = [_with_absolute_checkpoint(d) for d in self.detectors]
        self.embedders = [_with_absolute_checkpoint(e) for e in self.embedders]
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        if not getattr(settings_cls, "read_environment", True):
            return (init_settings, ConfigFileSource(settings_cls))
        return (init_settings, env_settings, ConfigFileSource(settings_cls))

    @classmethod
    def load(
        cls, config_file: Path | str | None = None, *, environment: bool = True, **overrides: Any
    ) -> Settings:
        """Build the settings from overrides, the environment and a TOML file.

        The file is ``config_file``, else the one ``CLOTHES_SEARCH_CONFIG`` names (so every entry
        point — click, gunicorn, Celery — sees the same settings), else none. Without ``environment``
        the ``CLOTHES_SEARCH_*`` variables are not read (what a given file alone says).
        """
        from pydantic import ValidationError

        if config_file is None and environment:
            config_file = os.environ.get(CONFIG_ENV) or None
        attributes: dict[str, Any] = {"read_environment": environment}
        if config_file is not None:
            path = Path(config_file)
            if not path.is_file():
                raise ConfigError(f"config file not found: {path}")
            attributes["model_config"] = {**cls.model_config, "toml_file": path}
        source_cls: type[Settings] = type("SettingsFromFile", (cls,), attributes)
        try:
            return source_cls(**overrides)
        except ValidationError as exc:
            where = f" (config file {config_file})" if config_file else ""
            raise ConfigError(f"invalid settings{where}:\n{exc}") from exc
        except ValueError as exc:  # TOML syntax errors
            raise ConfigError(f"cannot read config file {config_file}: {exc}") from exc


ModelConfig = DetectorConfig | EmbedderConfig


def _with_absolute_checkpoint(config: ModelConfig) -> ModelConfig:
    if config.checkpoint is None or config.checkpoint.is_absolute():
        return config
    return config.model_copy(update={"checkpoint": absolute(config.checkpoint)})
