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
        ({"data": {"path": "d"}, "model": {"architecture": "vgg"}}, [], "did you mean `vgg19`", "model.architecture"),
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


@pytest.mark.parametrize("key", ["logging.run_name", "logging.experiment_name"])
@pytest.mark.parametrize("value", ["/tmp/ro/r", "../../escape", "a/../../b", "a//b", "\\\\host\\b", "..", ".", ""])
def test_run_and_experiment_names_stay_under_the_output_folder(tmp_path, key, value):
    path = write(tmp_path, {"data": {"path": "d"}})
    with pytest.raises(ConfigError) as info:
        resolve_config(path, sets=[f"{key}={value}"])
    assert info.value.path == key
    assert str(info.value).startswith(f"--set {key}: `{key}` must be a relative folder name under "
                                      "logging.output_dir"), str(info.value)
    nested = resolve_config(path, sets=[f"{key}=team/digits"])  # TensorBoard reads nested folders
    assert nested.logging.model_dump()[key.split(".")[1]] == "team/digits"


def test_run_and_experiment_names_default_to_none(tmp_path):
    config = resolve_config(write(tmp_path, {"data": {"path": "d"}}), sets=["logging.run_name=first"])
    assert (config.logging.experiment_name, config.logging.run_name) == (None, "first")
    assert resolve_config(write(tmp_path, {"data": {"path": "d"}}),
                          sets=["logging.run_name=null"]).logging.run_name is None


def test_a_config_file_that_is_not_utf8_names_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ConfigError) as info:
        resolve_config(path)
    assert str(info.value) == f"config file {path} is not UTF-8 text (byte 0xff at offset 0); save it as UTF-8"
    assert info.value.path == str(path)


@pytest.mark.parametrize(("sets", "flags", "start"), [
    ([], {"lr": float("inf")}, "--lr: `optimizer.lr` must be a finite number, but got inf"),
    ([], {"lr": float("nan")}, "--lr: `optimizer.lr` must be a finite number, but got nan"),
    (["optimizer.weight_decay=.inf"], {},
     "--set optimizer.weight_decay: `optimizer.weight_decay` must be a finite number, but got inf"),
    (["data.normalize.mean=[-.inf]"], {}, "--set data.normalize.mean: `data.normalize.mean.0` must be a finite"),
    (["model.dropout=.nan"], {}, "--set model.dropout: `model.dropout` must be a finite number"),
    (["search={study_name: s, search_space: {optimizer.lr: {type: uniform, low: 0.1, high: .inf}}}"], {},
     "--set search: `search.search_space.optimizer.lr.high` must be a finite number, but got inf"),
    ([], {"lr": 1e300}, "--lr: `optimizer.lr` must fit a 32-bit float (at most 3.4e38 in size), but got 1e+300"),
    (["optimizer.weight_decay=1e39"], {}, "--set optimizer.weight_decay: `optimizer.weight_decay` must fit a 32-bit"),
])
def test_non_finite_and_float32_overflowing_numbers_are_refused(tmp_path, sets, flags, start):
    with pytest.raises(ConfigError) as info:
        resolve_config(write(tmp_path, {"data": {"path": "d"}}), sets=sets, flags=flags)
    assert str(info.value).startswith(start), str(info.value)


def test_a_huge_but_float32_learning_rate_is_accepted(tmp_path):
    # test_training trains with lr 1e30 to get a NaN loss on purpose
    assert resolve_config(write(tmp_path, {"data": {"path": "d"}}), flags={"lr": 1e30}).optimizer.lr == 1e30


def _space(spec: dict) -> dict:
    return {"data": {"path": "d"}, "search": {"study_name": "s", "search_space": {"model.dropout": spec}}}


@pytest.mark.parametrize(("spec", "message"), [
    ({"type": "float", "low": 0.0, "high": 0.5, "step": 2},
     "step must be at most high - low (0.5), but got 2, which leaves only low=0"),
    ({"type": "uniform", "low": 0.1, "high": 0.2, "step": 0.25},
     "step must be at most high - low (0.1), but got 0.25, which leaves only low=0.1"),
])
def test_a_step_larger_than_the_range_is_refused(spec, message):
    with pytest.raises(ConfigError) as info:
        validate_config(_space(spec))
    assert str(info.value) == f"`search.search_space.model.dropout`: {message}", str(info.value)
    assert info.value.path == "search.search_space.model.dropout"


def test_an_int_step_larger_than_the_range_is_refused_and_a_step_of_the_range_is_not():
    data = _space({"type": "int", "low": 1, "high": 5, "step": 6})
    data["search"]["search_space"] = {"scheduler.step_size": data["search"]["search_space"].pop("model.dropout")}
    with pytest.raises(ConfigError, match=r"`search.search_space.scheduler.step_size`: step must be at most high - low \(4\)"):
        validate_config(data)
    validate_config(_space({"type": "float", "low": 0.0, "high": 0.5, "step": 0.5}))  # two values: fine
    validate_config(_space({"type": "float", "low": 0.1, "high": 0.3, "step": 0.2}))  # 0.3 - 0.1 < 0.2 in floats


def test_trial_epochs_must_not_exceed_the_final_runs_epochs(tmp_path):
    path = write(tmp_path, {"data": {"path": "d"}, "training": {"num_epochs": 10},
                            "search": {"study_name": "s", "trial_epochs": 5}})
    assert resolve_config(path, flags={"epochs": 5}, searching=True).search.trial_epochs == 5  # equal: fine
    assert resolve_config(path, flags={"epochs": 3}).training.num_epochs == 3  # ml-train: no search
    with pytest.raises(ConfigError) as info:
        resolve_config(path, flags={"epochs": 3}, searching=True)  # the final value, after the short flag
    assert str(info.value) == ("--epochs: `search.trial_epochs` must be at most `training.num_epochs` (3), "
                               "but got 5: trials train fewer epochs than the final run")
    assert info.value.path == "search.trial_epochs"
    with pytest.raises(ConfigError, match=r"^--set search.trial_epochs: `search.trial_epochs` must be at most "
                                          r"`training.num_epochs` \(10\), but got 11"):
        resolve_config(path, sets=["search.trial_epochs=11"], searching=True)


@pytest.mark.parametrize("data", [{1: "x"}, {"data": {"path": "d"}, 1: "x"}])
def test_a_key_that_is_not_text_is_named_as_unknown(tmp_path, data):
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        resolve_config(path)
    assert str(info.value).startswith(f"{path}: unknown config key `1`"), str(info.value)
    assert info.value.path == "1"


@pytest.mark.parametrize(("channels", "mean", "message"), [
    (1, [0.1, 0.2, 0.3], "must hold 1 value for the 1 channel of `data.channels`, but got 3 values"),
    (3, [0.1, 0.2], "must hold 3 values for the 3 channels of `data.channels`, or one for all channels, "
                    "but got 2 values"),
])
def test_normalize_values_match_the_configured_channels(channels, mean, message):
    data = {"data": {"path": "d", "channels": channels, "normalize": {"mean": mean, "std": [0.5] * len(mean)}}}
    with pytest.raises(ConfigError) as info:
        validate_config(data)
    assert str(info.value) == f"`data.normalize.mean` {message}"
    validate_config({"data": {"path": "d", "channels": channels, "normalize": {"mean": [0.1], "std": [0.5]}}})
