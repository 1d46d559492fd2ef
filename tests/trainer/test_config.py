"""Config loading: override order, did-you-mean, and one-line errors naming the key."""

from __future__ import annotations

import pytest
import yaml

from kubetune.config import config_to_yaml, resolve_config, validate_config, with_overrides
from kubetune.config.yaml_io import parse_yaml
from kubetune.errors import ConfigError


def write(tmp_path, data) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_defaults_fill_missing_sections(tmp_path):
    config = resolve_config(write(tmp_path, {"data": {"path": "d"}}))
    assert config.optimizer.lr == 0.01
    assert config.training.num_epochs == 10
    assert config.model.architecture == "small_cnn"


def test_order_defaults_file_set_then_flags(tmp_path):
    path = write(tmp_path, {"data": {"path": "d"}, "optimizer": {"lr": 0.1, "momentum": 0.5}})
    config = resolve_config(
        path,
        sets=["optimizer.lr=0.2", "optimizer.lr=0.3", "optimizer.momentum=0.95"],
        flags={"lr": 0.4, "batch_size": 64, "epochs": None},
    )
    assert config.optimizer.lr == 0.4  # the short flag beats --set
    assert config.optimizer.momentum == 0.95  # --set beats the file
    assert config.training.batch_size == 64  # a flag beats the default
    assert config.training.num_epochs == 10  # an absent flag changes nothing


def test_set_parses_yaml_values(tmp_path):
    path = write(tmp_path, {"data": {"path": "d"}})
    config = resolve_config(
        path,
        sets=["optimizer.lr=1e-3", "optimizer.nesterov=true", "data.normalize.mean=[0.1]",
              "data.normalize.std=[0.2]", "scheduler.type=none"],
    )
    assert config.optimizer.lr == pytest.approx(1e-3)
    assert config.optimizer.nesterov is True
    assert config.data.normalize.mean == [0.1]
    assert config.scheduler.type == "none"


def test_yaml_reads_exponent_floats():
    assert parse_yaml("lr: 1e-5")["lr"] == pytest.approx(1e-5)
    assert parse_yaml("v: 3")["v"] == 3


@pytest.mark.parametrize(
    ("data", "sets", "fragment", "path"),
    [
        ({"data": {"path": "d"}, "optimizer": {"lrr": 0.1}}, [], "did you mean `optimizer.lr`", "optimizer.lrr"),
        ({"data": {"path": "d"}, "trainig": {}}, [], "did you mean `training`", "trainig"),
        ({"data": {"path": "d"}}, ["training.batchsize=3"], "did you mean `training.batch_size`", "training.batchsize"),
        ({"data": {"path": "d"}, "optimizer": {"lr": -1}}, [], "greater than 0", "optimizer.lr"),
        ({"data": {"path": "d"}, "optimizer": {"lr": "fast"}}, [], "must be a number, but got 'fast'", "optimizer.lr"),
        ({"data": {"path": "d"}, "training": {"num_epochs": 0}}, [], "greater than or equal to 1", "training.num_epochs"),
        ({"data": {"path": "d", "val_split": 1.5}}, [], "less than 1", "data.val_split"),
        ({"data": {"path": "d"}, "optimizer": {"type": "rmsprop"}}, [], "'sgd', 'adam' or 'adamw'", "optimizer.type"),
        ({"data": {"path": "d"}, "model": {"architecture": "vgg"}}, [], "resnet18", "model.architecture"),
        ({}, [], "required", "data"),
        ({"data": {"path": "d"}}, ["search.search_space.optimizer.lr.low=0.5"],
         "a search-space entry is set whole, e.g. --set 'search.search_space.optimizer.lr={",
         "search.search_space.optimizer.lr.low"),
    ],
)
def test_errors_name_the_dotted_key(tmp_path, data, sets, fragment, path):
    with pytest.raises(ConfigError) as info:
        resolve_config(write(tmp_path, data), sets=sets)
    message = str(info.value)
    assert "\n" not in message
    assert fragment in message
    assert info.value.path == path
    assert f"`{path}" in message or path in message


def test_an_error_names_the_option_that_set_the_value_else_the_file(tmp_path):
    path = write(tmp_path, {"data": {"path": "d"}, "optimizer": {"lr": 0.1}, "model": {"dropout": 2}})
    cases = [
        ({"sets": ["model.dropout=0.1", "optimizer.lr=-1"]}, "--set optimizer.lr: `optimizer.lr`"),
        ({"sets": ["model.dropout=0.1", "optimizer.lr=-1"], "flags": {"lr": -2}}, "--lr: `optimizer.lr`"),
        ({"sets": ["model.dropout=0.1", "optimizer=5"]}, "--set optimizer: `optimizer` must be a section"),
        ({}, f"{path}: `model.dropout`"),  # the file's own value
        ({"sets": ["optimizer.lr=-1"]}, f"{path}: `model.dropout`"),  # pydantic reports the file's first
    ]
    for kwargs, start in cases:
        with pytest.raises(ConfigError) as info:
            resolve_config(path, **kwargs)
        assert str(info.value).startswith(start), (kwargs, str(info.value))


def test_a_check_of_a_whole_section_is_the_files_even_after_an_option(tmp_path):
    path = write(tmp_path, {"data": {"path": "d"}, "optimizer": {"nesterov": True, "momentum": 0.0}})
    with pytest.raises(ConfigError) as info:
        resolve_config(path, flags={"lr": 0.1})
    assert str(info.value).startswith(f"{path}: `optimizer`"), str(info.value)


def test_bad_set_syntax_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        resolve_config(write(tmp_path, {"data": {"path": "d"}}), sets=["optimizer.lr"])
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_config(tmp_path / "nope.yaml")


def test_invalid_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data:\n  path: d\n optimizer: [\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+: invalid YAML"):
        resolve_config(path)


def test_search_space_keys_must_name_config_fields():
    base = {"data": {"path": "d"}, "search": {"study_name": "s", "search_space": {
        "optimizer.lrr": {"type": "loguniform", "low": 1e-4, "high": 1e-1}}}}
    with pytest.raises(ConfigError, match="did you mean `optimizer.lr`"):
        validate_config(base)


def test_with_overrides_and_round_trip(tmp_path):
    config = validate_config({"data": {"path": "d"}})
    changed = with_overrides(config, {"optimizer.lr": 0.5, "training.batch_size": 16})
    assert (changed.optimizer.lr, changed.training.batch_size) == (0.5, 16)
    assert config.optimizer.lr == 0.01  # the original is untouched
    again = resolve_config(write(tmp_path, yaml.safe_load(config_to_yaml(changed))))
    assert again == changed
