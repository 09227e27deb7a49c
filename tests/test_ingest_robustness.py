"""Hostile or careless catalogue input cannot freeze, flood or poison ingestion (real SQLite, Milvus Lite,
the real light pipeline, images over real HTTP): a row the vector store refuses fails alone, an image
replaced mid-processing is re-ingested, a metadata change survives a vector-store outage, a delivery
that keeps dying gives up, and each source of rows is fetched under its own policy."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from http_server import LocalHTTPServer, Response
from PIL import Image
from sqlalchemy import select

from clothes_search.services import Services
from db import migrate
from db.models import Item, ItemStatus, utcnow
from db.vectors import VectorStore, VectorStoreUnavailableError
from ingestion.feed import parse_records
from workers.dispatch import InProcessDispatcher
from workers.ingest import claim_items, prepare_batch, write_batch
from workers.submit import submit_rows, sync_pending_fields

pytestmark = pytest.mark.slow
REPO_ROOT = Path(__file__).resolve().parent.parent
CLI = str(Path(sys.executable).with_name("clothes-search"))
LIGHT = {
    "detectors": [{"name": "whole", "backend": "whole_image"}],
    "embedders": [{"name": "lite0", "backend": "efficientnet_lite", "model": "lite0"}],
}


def jpeg(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (96, 128), colour).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.fixture
def services(make_settings, tmp_path) -> Iterator[Services]:
    local = {"allowed_networks": ["127.0.0.1/32"], "allowed_ports": []}
    settings = make_settings(
        database={"url": f"sqlite:///{tmp_path / 'catalog.db'}"},
        milvus={"uri": str(tmp_path / "milvus.db"), "index_type": "FLAT"},
        fetch=local,
        row_fetch={"allowed_networks": ["127.0.0.1/32"]},  # the API's default ports: 80 and 443
        queue={"max_attempts": 2, "stale_claim_s": 0.001},
        **LIGHT,
    )
    migrate.upgrade(settings.database)
    made = Services(settings)
    yield made
    made.close()


def rows(*records: dict) -> list:
    parsed = parse_records(list(records))
    assert not parsed.errors, parsed.errors
    return [row for _, row in parsed.rows]


def states(services: Services) -> dict[str, tuple[ItemStatus, str | None]]:
    with services.database.session() as session:
        return {i.sku: (i.status, i.last_error) for i in session.scalars(select(Item))}


def test_one_row_the_vector_store_refuses_fails_alone_in_the_in_process_mode(tmp_path, models_dir):
    """32 rows of a feed, one of which the vector store refuses (a declared integer attribute given as
    text): 31 indexed, 1 failed with its reason, nothing left processing (the CLI, no broker)."""
    folder = tmp_path / "feed"
    folder.mkdir()
    lines = []
    for n in range(32):
        (folder / f"{n}.jpg").write_bytes(jpeg((n * 7, 90, 200 - n * 5)))
        size = "XL" if n == 17 else 36 + n % 8
        lines.append({"sku": f"R-{n:02d}", "image_path": f"{n}.jpg", "attributes": {"size": size}})
    feed = folder / "feed.jsonl"
    feed.write_text("".join(json.dumps(line) + "\n" for line in lines))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOTHES_SEARCH_")}
    env.update(
        CLOTHES_SEARCH_DATA_DIR=str(tmp_path / "data"),
        CLOTHES_SEARCH_MODELS_DIR=str(models_dir),
        CLOTHES_SEARCH_MILVUS__ATTRIBUTE_FIELDS='{"size": "int"}',
        CLOTHES_SEARCH_DETECTORS=json.dumps(LIGHT["detectors"]),
        CLOTHES_SEARCH_EMBEDDERS=json.dumps(LIGHT["embedders"]),
    )
    run = [CLI, "db", "upgrade"]
    assert subprocess.run(run, env=env, cwd=tmp_path, capture_output=True).returncode == 0
    done = subprocess.run([CLI, "ingest", str(feed)], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "31 indexed (31 embedded, 0 unchanged), 1 failed, 0 remaining" in done.stdout, done.stdout
    assert "failed R-17: vector_store: attributes.size: declared int, got 'XL'" in done.stderr, done.stderr


def test_an_image_replaced_while_processing_is_not_overwritten_and_is_ingested_again(services):
    # trusted rows (a feed's): this image server is on a port an API row may not name
    with LocalHTTPServer() as images:
        first = images.add("/first.jpg", Response(jpeg((200, 20, 20)), content_type="image/jpeg"))
        second = images.add("/second.jpg", Response(jpeg((20, 20, 200)), content_type="image/jpeg"))
        submitted = submit_rows(
            services.database, None, rows({"sku": "A", "image_url": first}), source="t", trusted=True
        )
        batch = prepare_batch(services, ["A"], token="old", job_id=submitted.job_id)  # embeds the first image
        again = submit_rows(
            services.database, None, rows({"sku": "A", "image_url": second}), source="t", trusted=True
        )
        assert again.queued == ["A"]  # its new job ...
        outcome = write_batch(services, batch)  # ... but the old batch's write comes first
        assert outcome.indexed == [] and outcome.requeue == {"A": again.job_id}
        assert states(services)["A"][0] == ItemStatus.PENDING
        InProcessDispatcher(services).submit(["A"], again.job_id)  # what a worker does with it
    with services.database.session() as session:
        item = session.scalar(select(Item).where(Item.sku == "A"))
        assert item.status == ItemStatus.INDEXED and item.image_url == second
        assert item.content_hash == hashlib.sha256(jpeg((20, 20, 200))).hexdigest()


def test_a_metadata_change_made_while_the_vector_store_was_down_is_completed(services, tmp_path):
    with LocalHTTPServer() as images:
        url = images.add("/a.jpg", Response(jpeg((90, 90, 90)), content_type="image/jpeg"))
        priced = rows({"sku": "P", "image_url": url, "price": 10, "currency": "EUR"})
        submitted = submit_rows(services.database, services.store, priced, source="t", trusted=True)
        InProcessDispatcher(services).submit(submitted.queued, submitted.job_id)
    down = VectorStore(
        services.settings.milvus.model_copy(update={"uri": "http://127.0.0.1:9", "timeout_s": 2})
    )
    changed = rows({"sku": "P", "image_url": url, "price": 99, "currency": "EUR"})
    with pytest.raises(VectorStoreUnavailableError):
        submit_rows(services.database, down, changed, source="t", trusted=True)  # the client is told to retry
    collection = services.store.collection_name(services.pipeline.signature.hash)
    assert services.store.item_fields(collection, ["P"])["P"].price == 10  # Milvus missed it
    retried = submit_rows(
        services.database, services.store, changed, source="t", trusted=True
    )  # the retry ...
    assert retried.metadata_updated == ["P"] and retried.unchanged == []  # ... is not "unchanged"
    assert services.store.item_fields(collection, ["P"])["P"].price == 99
    # and without a retry, the scheduled sweep completes it
    cheaper = rows({"sku": "P", "image_url": url, "price": 5, "currency": "EUR"})
    with pytest.raises(VectorStoreUnavailableError):
        submit_rows(services.database, down, cheaper, source="t", trusted=True)
    assert sync_pending_fields(services.database, services.store) == ["P"]
    assert services.store.item_fields(collection, ["P"])["P"].price == 5
    assert sync_pending_fields(services.database, services.store) == []
    down.close()


def test_an_item_whose_deliveries_keep_dying_gives_up_instead_of_looping(services):
    with LocalHTTPServer() as images:
        url = images.add("/a.jpg", Response(jpeg((10, 200, 10)), content_type="image/jpeg"))
        submitted = submit_rows(services.database, None, rows({"sku": "D", "image_url": url}), source="t")
        version = services.target_version_id()
        for _ in range(2):  # two deliveries whose worker died (killed for memory, say)
            claim_items(services.database, ["D"], uuid.uuid4().hex, 0.001, [version])
            with services.database.session() as session:
                session.scalar(select(Item).where(Item.sku == "D")).claimed_at = utcnow() - timedelta(hours=1)
        batch = prepare_batch(services, ["D"], token="third", job_id=submitted.job_id)
        write_batch(services, batch)
    status, reason = states(services)["D"]
    assert status == ItemStatus.FAILED and reason.startswith("gave_up: 2 deliveries")


def test_rows_from_the_api_and_from_trusted_feeds_are_fetched_under_their_own_policies(services, tmp_path):
    folder = tmp_path / "feed"
    folder.mkdir()
    (folder / "inside.jpg").write_bytes(jpeg((1, 2, 3)))
    (tmp_path / "outside.jpg").write_bytes(jpeg((4, 5, 6)))
    with LocalHTTPServer() as images:
        url = images.add("/a.jpg", Response(jpeg((7, 8, 9)), content_type="image/jpeg"))
        api = submit_rows(services.database, None, rows({"sku": "from-api", "image_url": url}), source="api")
        feed = submit_rows(
            services.database,
            None,
            rows(
                {"sku": "inside", "image_path": "inside.jpg"},
                {"sku": "outside", "image_path": str(tmp_path / "outside.jpg")},
                {"sku": "feed-url", "image_url": url},
            ),
            source="feed.jsonl",
            trusted=True,
            local_root=folder,
        )
        dispatcher = InProcessDispatcher(services)
        dispatcher.submit(api.queued, api.job_id)
        dispatcher.submit(feed.queued, feed.job_id)
    final = states(services)
    assert final["from-api"][0] == ItemStatus.FAILED and "port" in final["from-api"][1]  # ports 80/443 only
    assert final["feed-url"][0] == ItemStatus.INDEXED  # a trusted feed may name this server
    assert final["inside"][0] == ItemStatus.INDEXED
    assert final["outside"][0] == ItemStatus.FAILED and "outside the folders" in final["outside"][1]
