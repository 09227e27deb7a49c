"""Schema migrations on SQLite and PostgreSQL, and the constraints they create."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from sqlalchemy import inspect, select
from sqlalchemy.exc import IntegrityError

from clothes_search.cli import main
from clothes_search.settings import DatabaseSettings
from db import migrate
from db.models import Crop, IndexState, IndexVersion, Item
from db.session import Database, DatabaseUnavailableError

TABLES = {
    "items",
    "crops",
    "index_versions",
    "ingest_jobs",
    "api_keys",
    "version_items",
    "serving_processes",
    "thumbnails",
}


def tables(url: str) -> set[str]:
    database = Database(DatabaseSettings(url=url))
    try:
        return set(inspect(database.engine).get_table_names()) - {"alembic_version"}
    finally:
        database.dispose()


def inspect_columns(url: str, table: str) -> list[dict]:
    database = Database(DatabaseSettings(url=url))
    try:
        return inspect(database.engine).get_columns(table)
    finally:
        database.dispose()


def test_upgrade_creates_and_downgrade_base_removes_the_schema(database_url):
    settings = DatabaseSettings(url=database_url)
    migrate.upgrade(settings)
    assert tables(database_url) == TABLES
    assert migrate.current_revision(settings) == "0006"
    assert {"image_trusted", "image_root", "claim_source", "fields_pending"} <= {
        c["name"] for c in inspect_columns(database_url, "items")
    }
    assert {"models", "activation_requested_at"} <= {
        c["name"] for c in inspect_columns(database_url, "index_versions")
    }
    migrate.downgrade(settings, "0005")  # the thumbnails go
    assert tables(database_url) == TABLES - {"thumbnails"}
    assert "image_width" not in {c["name"] for c in inspect_columns(database_url, "items")}
    migrate.downgrade(settings, "0004")  # the version items and serving processes go
    assert tables(database_url) == TABLES - {"version_items", "serving_processes", "thumbnails"}
    assert "models" not in {c["name"] for c in inspect_columns(database_url, "index_versions")}
    migrate.downgrade(settings, "0003")  # the keys table and the trusted-source columns go
    assert tables(database_url) == TABLES - {"api_keys", "version_items", "serving_processes", "thumbnails"}
    assert "image_trusted" not in {c["name"] for c in inspect_columns(database_url, "items")}
    assert "base_version_id" in {c["name"] for c in inspect_columns(database_url, "index_versions")}
    migrate.downgrade(settings, "0002")  # the post-processing columns go
    assert "whitening" not in {c["name"] for c in inspect_columns(database_url, "index_versions")}
    migrate.downgrade(settings, "0001")  # one step back: the claim column goes, the data stays
    assert "claim_token" not in {c["name"] for c in inspect_columns(database_url, "items")}
    migrate.upgrade(settings)
    migrate.upgrade(settings)  # a second upgrade is a no-op
    migrate.downgrade(settings, "base")
    assert tables(database_url) == set()
    assert migrate.current_revision(settings) is None
    migrate.upgrade(settings)
    assert tables(database_url) == TABLES


def test_cli_upgrade_and_downgrade(database_url, monkeypatch):
    monkeypatch.setenv("CLOTHES_SEARCH_DATABASE__URL", database_url)
    runner = CliRunner()
    result = runner.invoke(main, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert "at revision 0006" in result.output
    assert runner.invoke(main, ["db", "current"]).output.strip() == "0006"
    result = runner.invoke(main, ["db", "downgrade", "base"])
    assert result.exit_code == 0, result.output
    assert "at revision base" in result.output
    assert tables(database_url) == set()


def test_unreachable_database_is_a_clear_error():
    settings = DatabaseSettings(url="postgresql+psycopg2://nobody@127.0.0.1:1/none")
    with pytest.raises(DatabaseUnavailableError, match="database unavailable"):
        migrate.upgrade(settings)


@pytest.fixture
def database(database_url):
    migrate.upgrade(DatabaseSettings(url=database_url))
    db = Database(DatabaseSettings(url=database_url))
    yield db
    db.dispose()


def version(name: str, state: IndexState) -> IndexVersion:
    return IndexVersion(collection_name=f"crops_{name}", signature=name, dimension=4, state=state)


def test_only_one_index_version_can_be_live(database):
    with database.session() as session:
        session.add(version("a", IndexState.LIVE))
    with pytest.raises(IntegrityError), database.session() as session:
        session.add(version("b", IndexState.LIVE))
    with database.session() as session:  # any number of retired / building ones
        session.add_all([version("c", IndexState.RETIRED), version("d", IndexState.RETIRED)])
        session.add_all([version("e", IndexState.BUILDING), version("f", IndexState.BUILDING)])


def test_deleting_an_item_deletes_its_crops_and_skus_are_unique(database):
    with database.session() as session:
        version = IndexVersion(collection_name="crops_a", signature="a", dimension=4)
        item = Item(sku="SKU-1", title="Shirt", price=19.99, attributes={"color": "red"})
        session.add_all([version, item])
        session.flush()
        session.add(
            Crop(id=2**62 + 5, item_id=item.id, index_version_id=version.id, x1=0, y1=0, x2=1, y2=1,
                 category="top", score=0.9, signature="a")
        )  # fmt: skip
    with database.session() as session:
        crop = session.get(Crop, 2**62 + 5)
        assert crop.item.sku == "SKU-1" and crop.box == [0, 0, 1, 1]
        assert float(session.scalar(select(Item.price))) == pytest.approx(19.99)
        session.delete(session.scalar(select(Item)))
    with database.session() as session:
        assert session.scalars(select(Crop)).all() == []
    with pytest.raises(IntegrityError), database.session() as session:
        session.add_all([Item(sku="dup"), Item(sku="dup")])
