"""A key written twice in a YAML config is an error naming the key and its lines, exit 2."""

from __future__ import annotations

import pytest

from kubetune.config.yaml_io import parse_yaml
from kubetune.errors import ConfigError
from tests.conftest import run_cli

TWO_OPTIMIZERS = """\
model: {architecture: small_cnn}
data: {path: DATA, image_size: 8, channels: 1}
optimizer:
  type: sgd
  lr: 0.05
training: {num_epochs: 1}
optimizer:
  type: adam
"""


def test_a_config_with_two_optimizer_sections_exits_2_naming_the_key_and_lines(digits_dir, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(TWO_OPTIMIZERS.replace("DATA", str(digits_dir)))
    result = run_cli("ml-train", "--config", str(config), "--print-config")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"ml-train: error: {config}:7: duplicate key `optimizer` (first on line 3); "
        "keep one of them: YAML would silently drop the first"
    )
    assert result.stdout == ""


@pytest.mark.parametrize(("text", "key", "line", "first"), [
    ("optimizer:\n  lr: 0.1\n  momentum: 0.9\n  lr: 0.2\n", "optimizer.lr", 4, 2),
    ("search:\n  search_space:\n    optimizer.lr: {type: uniform, low: 0.1, high: 0.2}\n"
     "    optimizer.lr: {type: uniform, low: 0.3, high: 0.4}\n", "search.search_space.optimizer.lr", 4, 3),
    ("search:\n  enqueue_trials:\n  - {optimizer.lr: 0.1, optimizer.lr: 0.2}\n",
     "search.enqueue_trials[0].optimizer.lr", 3, 3),
])
def test_nested_duplicates_name_the_dotted_key(text, key, line, first):
    with pytest.raises(ConfigError) as info:
        parse_yaml(text, "c.yaml")
    assert str(info.value).startswith(f"c.yaml:{line}: duplicate key `{key}` (first on line {first})")
    assert info.value.path == key and info.value.exit_code == 2


def test_distinct_keys_anchors_and_merge_keys_still_load():
    text = "base: &b {lr: 1e-5}\noptimizer:\n  <<: *b\n  momentum: 0.9\nlist: [1, 1]\n"
    assert parse_yaml(text) == {
        "base": {"lr": 1e-5}, "optimizer": {"lr": 1e-5, "momentum": 0.9}, "list": [1, 1],
    }
