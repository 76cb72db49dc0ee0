"""How many workers ``serve`` runs: --workers, else the setting (file or environment), 0 meaning one per core;
bad values refused before anything starts."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from common.workers import default_workers, worker_count, workers_wanted
from gateway.config import ConfigError as GatewayConfigError, load_config
from keyservice.config import ConfigError as KeyServiceConfigError, KeyServiceConfig


def test_the_option_wins_over_the_setting_and_zero_means_one_per_core() -> None:
    assert workers_wanted(3, 2) == 3
    assert workers_wanted(None, 2) == 2
    assert workers_wanted(None, 0) == default_workers() >= 1
    assert workers_wanted(0, 2) == default_workers()


@pytest.mark.parametrize("text", ["-1", "two", "1.5", ""])
def test_a_workers_option_that_is_not_a_whole_number_of_at_least_zero_is_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="must be a whole number >= 0"):
        worker_count(text)


def test_the_gateway_reads_workers_from_its_file_and_gateway_workers(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text("[gateway]\nworkers = 4\n")
    assert load_config(None, {}).workers == 0
    assert load_config(path, {}).workers == 4
    assert load_config(path, {"GATEWAY_WORKERS": "2"}).workers == 2
    with pytest.raises(GatewayConfigError, match="GATEWAY_WORKERS"):
        load_config(path, {"GATEWAY_WORKERS": "-1"})


def test_the_key_service_reads_workers_from_its_file_and_keyservice_workers(tmp_path: Path) -> None:
    path = tmp_path / "keyservice.toml"
    path.write_text("[keyservice]\nworkers = 4\n")
    assert KeyServiceConfig.load(None, {}).workers == 0
    assert KeyServiceConfig.load(path, {}).workers == 4
    assert KeyServiceConfig.load(path, {"KEYSERVICE_WORKERS": "2"}).workers == 2
    with pytest.raises(KeyServiceConfigError, match="KEYSERVICE_WORKERS"):
        KeyServiceConfig.load(path, {"KEYSERVICE_WORKERS": "1.5"})
