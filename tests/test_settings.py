"""Settings: defaults, environment with nested sections, TOML file, priorities, errors."""

from __future__ import annotations

import pytest

from clothes_search.settings import ConfigError, DetectorBackend, Settings


def test_defaults_are_the_offline_embedded_setup(make_settings):
    settings = make_settings()
    assert [d.backend for d in settings.detectors] == [DetectorBackend.MEDIAPIPE_POSE] * 2
    assert [e.model for e in settings.embedders] == ["lite0", "lite2"]
    assert settings.fetch.allow_private_networks is False
    assert settings.pipeline.batch_size == 32


def test_environment_overrides_nested_sections(make_settings, monkeypatch):
    monkeypatch.setenv("CLOTHES_SEARCH_FETCH__MAX_BYTES", "1234")
    monkeypatch.setenv("CLOTHES_SEARCH_FETCH__ALLOWED_NETWORKS", '["127.0.0.1/32"]')
    monkeypatch.setenv(
        "CLOTHES_SEARCH_EMBEDDERS", '[{"name": "e", "backend": "efficientnet_lite", "model": "lite1"}]'
    )
    settings = Settings.load()
    assert settings.fetch.max_bytes == 1234
    assert [str(n) for n in settings.fetch.allowed_networks] == ["127.0.0.1/32"]
    assert [e.model for e in settings.embedders] == ["lite1"]


def test_config_file_is_read_and_the_environment_wins(make_settings, tmp_path, monkeypatch):
    config = tmp_path / "config.toml"
    config.write_text(
        """
[pipeline]
batch_size = 8

[fusion]
iou_thr = 0.4

[[detectors]]
name = "whole"
backend = "whole_image"
"""
    )
    settings = Settings.load(config)
    assert settings.pipeline.batch_size == 8
    assert settings.fusion.iou_thr == 0.4
    assert [d.name for d in settings.detectors] == ["whole"]

    monkeypatch.setenv("CLOTHES_SEARCH_PIPELINE__BATCH_SIZE", "4")
    assert Settings.load(config).pipeline.batch_size == 4
    # keyword overrides beat both
    assert Settings.load(config, pipeline={"batch_size": 2}).pipeline.batch_size == 2


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        Settings.load(tmp_path / "nope.toml")


def test_invalid_values_name_the_field(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("[pipeline]\nbatch_size = 0\n")
    with pytest.raises(ConfigError, match=r"pipeline\.batch_size"):
        Settings.load(config)


def test_toml_syntax_error_is_a_config_error(tmp_path):
    config = tmp_path / "broken.toml"
    config.write_text("[pipeline\nbatch_size = 1\n")
    with pytest.raises(ConfigError, match=r"broken\.toml"):
        Settings.load(config)


def test_unknown_keys_are_rejected(make_settings):
    with pytest.raises(ConfigError, match="bogus"):
        make_settings(bogus=1)


def test_model_names_must_be_unique(make_settings):
    twice = [{"name": "x", "backend": "whole_image"}, {"name": "x", "backend": "whole_image"}]
    with pytest.raises(ConfigError, match="unique"):
        make_settings(detectors=twice)


def test_category_mappings_must_target_the_vocabulary(make_settings):
    with pytest.raises(ConfigError, match="not in the vocabulary"):
        make_settings(categories={"aliases": {"jeans": "denim"}})
