"""How filtered searches are planned per engine and filter share (the recall they buy is measured on
real servers in test_filtered_recall.py)."""

from __future__ import annotations

import re

import pytest

from clothes_search.settings import MilvusSettings
from db.filtered_search import merge_hits, plan_search, shard_expressions
from db.vector_records import VectorHit
from db.vector_schema import SHARDS, CollectionLayout, ServerInfo

SERVER = ServerInfo.parse("v2.3.5")
LITE = ServerInfo.parse("milvus_lite-3.2.2")
LAYOUT = CollectionLayout.planned(8, {}, None)
SETTINGS = MilvusSettings(uri="http://127.0.0.1:1")


def plan(index: str, server: ServerInfo, share: float | None, expression: str = '(brand == "a")'):
    total = 1_000_000
    matching = None if share is None else round(share * total)
    return plan_search(SETTINGS, index, server, LAYOUT, expression, 100, matching, total)


@pytest.mark.parametrize(
    ("share", "searches"),
    [(0.001, 1), (0.05, 1), (0.06, 2), (0.1, 2), (0.29, 6), (0.3, 1), (0.8, 1)],
)
def test_hnsw_on_a_server_splits_the_band_where_the_graph_loses_matches(share, searches):
    found = plan("HNSW", SERVER, share)
    assert len(found.expressions) == searches and found.params["ef"] >= 100
    assert not found.exact_rows


@pytest.mark.parametrize(
    ("share", "searches", "ef"), [(0.04, 1, 512), (0.08, 1, 1250), (0.2, 1, 512), (0.5, 1, 512)]
)
def test_with_split_max_rows_a_large_band_uses_one_wider_graph_search(share, searches, ef):
    settings = SETTINGS.model_copy(update={"split_max_rows": 50_000})
    total = 1_000_000
    found = plan_search(settings, "HNSW", SERVER, LAYOUT, '(brand == "a")', 100, round(share * total), total)
    assert (len(found.expressions), found.params["ef"]) == (searches, ef)
    small = plan_search(settings, "HNSW", SERVER, LAYOUT, '(brand == "a")', 100, 8_000, 100_000)
    assert len(small.expressions) == 2  # 8 % of 100k rows: few enough to split, exact


def test_nothing_matching_is_answered_without_a_search():
    assert plan("HNSW", SERVER, 0.0).empty


def test_lite_hnsw_compares_small_subsets_itself_and_scales_ef_for_larger_ones():
    assert plan("HNSW", LITE, 0.01).exact_rows
    wide = plan("HNSW", LITE, 0.1)
    assert not wide.exact_rows and wide.params["ef"] == 2000


def test_ivf_scans_every_list_when_filtered_and_needs_no_count():
    assert plan("IVF_FLAT", LITE, None).params == {"nprobe": SETTINGS.ivf_nlist}
    assert plan("IVF_SQ8", SERVER, None, "").params == {"nprobe": SETTINGS.ivf_nprobe}


def test_shard_ranges_cover_every_shard_once():
    for parts in (1, 2, 3, 7, 64):
        covered = []
        for expression in shard_expressions("x", parts):
            low, high = map(int, re.findall(r"shard >= (\d+)\) and \(shard < (\d+)", expression)[0])
            covered.extend(range(low, high))
        assert sorted(covered) == list(range(SHARDS))


def test_merged_hits_are_the_best_of_all_sub_searches():
    def hits(*scores):
        return [[VectorHit(int(s * 100), s, "k", "c") for s in scores]]

    merged = merge_hits([hits(0.9, 0.5), hits(0.8, 0.7), hits(0.95)], limit=3)
    assert [h.score for h in merged[0]] == [0.95, 0.9, 0.8]
