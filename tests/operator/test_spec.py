"""Reading a StudyJob spec: one error per rule, each naming its field."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from kubetune_operator.spec import (
    Defaults,
    SpecError,
    config_from_configmap,
    parse_spec,
    resolve_config,
)
from tests.operator.conftest import DIGITS_CONFIG

ROOT = Path(__file__).resolve().parents[2]


def _raw(**change) -> dict:
    spec = {"config": copy.deepcopy(DIGITS_CONFIG), "data": {"persistentVolumeClaim": "datasets"}}
    spec.update(change)
    return spec


def _error(raw: dict, name: str = "digits") -> SpecError:
    with pytest.raises(SpecError) as info:
        spec = parse_spec(raw, name)
        resolve_config(spec.config or {}, spec)
    return info.value


def test_defaults():
    spec = parse_spec(_raw(), "digits")
    assert (spec.trials.parallelism, spec.trials.max_failed, spec.trials.retries) == (1, 3, 1)
    assert spec.storage.secret_ref.name == "kubetune-postgres" and spec.storage.secret_ref.key == "url"
    assert spec.suspend is False and spec.cleanup.delete_study is False


@pytest.mark.parametrize(("raw", "field", "words"), [
    (_raw(trials={"paralelism": 2}), "spec.trials.paralelism", "unknown field"),
    (_raw(trials={"parallelism": 0}), "spec.trials.parallelism", "greater than or equal to 1"),
    (_raw(trials={"retries": -1}), "spec.trials.retries", "greater than or equal to 0"),
    # kmock (and an API server without the CRD's schema) take any count: the operator does not.
    (_raw(trials={"parallelism": 10**9}), "spec.trials.parallelism", "less than or equal to 10000"),
    (_raw(trials={"maxFailed": 2**63 - 1}), "spec.trials.maxFailed", "less than or equal to 1000000"),
    # A Job gone before the operator reads why it failed would look deleted (and resume).
    (_raw(trials={"ttlSecondsAfterFinished": 5}), "spec.trials.ttlSecondsAfterFinished",
     "greater than or equal to 60"),
    (_raw(trials={"tolerations": [{"effect": "Sometimes"}]}), "spec.trials.tolerations.0.effect",
     "NoSchedule"),
    ({"data": {"persistentVolumeClaim": "d"}}, "spec.config", "exactly one of"),
    (_raw(configMapRef={"name": "cm"}), "spec.config", "exactly one of"),
    (_raw(data={"persistentVolumeClaim": "d", "sample": "digits"}), "spec.data", "either"),
    (_raw(data={"sample": "digits", "subPath": "x"}), "spec.data.subPath", "only applies"),
    # What the API server or the runtime would refuse only once trial 0's Job or pod exists:
    (_raw(trials={"image": "Not A Valid Image!!"}), "spec.trials.image", "must be an image reference"),
    (_raw(trials={"resources": {"limits": {"nvidia.com/gpu": "two"}}}),
     "spec.trials.resources.limits.nvidia.com/gpu", "must be a quantity such as 1, 500m or 4Gi, but got 'two'"),
    (_raw(trials={"resources": {"requests": {"memory": -1}}}), "spec.trials.resources.requests.memory",
     "must be a quantity"),
    (_raw(trials={"env": [{"name": "A=B"}]}), "spec.trials.env.0.name", "must be a variable name"),
])
def test_spec_errors_name_their_field(raw, field, words):
    error = _error(raw)
    assert error.field == field and words in str(error), str(error)


def test_long_names_are_refused():
    error = _error(_raw(), name="x" * 46)
    assert error.field == "metadata.name" and "at most 45" in str(error)


def test_config_errors_carry_the_spec_path():
    raw = _raw()
    raw["config"]["optimizer"]["lr"] = -0.1
    error = _error(raw)
    assert error.field == "spec.config.optimizer.lr"
    assert str(error).startswith("spec.config: `optimizer.lr` must be greater than 0")


def test_unknown_config_key_suggests_the_right_one():
    raw = _raw()
    raw["config"]["optimizer"]["momentun"] = 0.9
    assert "did you mean `optimizer.momentum`" in str(_error(raw))


def test_a_search_section_is_required():
    raw = _raw()
    del raw["config"]["search"]
    error = _error(raw)
    assert error.field == "spec.config.search" and "a StudyJob runs a search" in str(error)


def test_grid_over_a_continuous_range_is_refused_before_any_trial():
    raw = _raw()
    raw["config"]["search"]["sampler"] = {"type": "GridSampler"}
    error = _error(raw)
    assert error.field == "spec.config.search.search_space.optimizer.lr", str(error)


@pytest.mark.parametrize(("search", "field", "words"), [
    ({"search_space": {"training.batch_size": {"type": "categorical", "choices": ["big", 32]}}},
     "search_space.training.batch_size", "must only produce valid values of `training.batch_size`"),
    ({"search_space": {"model.dropout": {"type": "uniform", "low": 0.1, "high": 1.5}}},
     "search_space.model.dropout", "must only produce valid values"),
    ({"metric": "val_loss", "direction": "maximize"}, "direction", "must be 'minimize' for metric val_loss"),
    ({"search_space": {}}, "search_space", "must name at least one config key"),
    ({"enqueue_trials": [{"optimizer.lr": 5.0}]}, "enqueue_trials[0]", "`search.enqueue_trials[0].optimizer.lr` must lie inside"),
    ({"n_trials": 1, "enqueue_trials": [{"optimizer.lr": 0.01}]}, "n_trials", "at least the 2 enqueued trials"),
])
def test_what_ml_search_refuses_is_refused_before_any_trial(search, field, words):
    """Else the study and its Jobs are made and every trial pod exits 2 on the same check."""
    raw = _raw()
    raw["config"]["search"].update(search)
    error = _error(raw)
    assert error.field == f"spec.config.search.{field}" and words in str(error), (error.field, str(error))


def _objectives(raw: dict, **search: object) -> dict:
    found = raw["config"]["search"]
    found.pop("metric", None), found.pop("direction", None)
    found["objectives"] = [{"metric": "val_acc", "direction": "maximize"}, {"metric": "params", "direction": "minimize"}]
    found["pruner"] = {"type": "SuccessiveHalvingPruner"}
    found.update(search)
    return raw


def test_several_objectives_with_constraints_pick_and_goal_are_accepted():
    raw = _objectives(_raw(), constraints={"latency_ms": {"max": 5}}, pick="params", goal={"val_acc": 0.9})
    spec = parse_spec(raw, "digits")
    search = resolve_config(spec.config, spec).config.search
    assert [o.metric for o in search.objectives] == ["val_acc", "params"] and search.pick == "params"


@pytest.mark.parametrize(("search", "field", "words"), [
    ({"metric": "val_acc"}, "objectives", "`search.objectives` replaces `search.metric`"),
    ({"objectives": [{"metric": "params", "direction": "maximize"}]}, "objectives[0].direction",
     "must be 'minimize' for metric params"),
    ({"pick": "latency_ms"}, "pick", "`search.pick` must be one of the objectives (val_acc, params)"),
    ({"goal": {"val_loss": 0.1}}, "goal.val_loss", "must name an objective"),
    ({"constraints": {"speed": {"max": 1}}}, "constraints.speed", "must name a measured metric"),
    ({"sampler": {"type": "CmaEsSampler"}}, "sampler.type", "cannot search several objectives"),
    ({"pruner": {"type": "MedianPruner"}}, "pruner.type", "cannot judge `search.objectives`"),
    ({"cross_validation": {"enabled": True}}, "cross_validation.enabled",
     "does not apply to `search.objectives`"),
])
def test_what_ml_search_refuses_of_several_objectives_a_studyjob_refuses_naming_the_key(search, field, words):
    error = _error(_objectives(_raw(), **search))
    assert error.field == f"spec.config.search.{field}" and words in str(error), (error.field, str(error))
    assert "\n" not in str(error)


def test_mounts_replace_data_path_and_output_dir():
    spec = parse_spec(_raw(), "digits")
    config = resolve_config(spec.config, spec).config
    assert config.data.path == "/data" and config.logging.output_dir == "/results"
    sample = parse_spec(_raw(data={"sample": "digits"}), "digits")
    assert resolve_config(sample.config, sample).config.data.path == "/data/digits"


def test_without_a_data_volume_the_configs_own_path_is_required():
    raw = _raw()
    del raw["data"]
    error = _error(raw)
    assert error.field == "spec.config.data.path" and "required" in str(error)


def test_a_storage_url_in_the_config_is_dropped():
    raw = _raw()
    raw["config"]["search"]["storage"] = "postgresql://u:pw@db/x"
    spec = parse_spec(raw, "digits")
    resolved = resolve_config(spec.config, spec)
    assert resolved.dropped_storage and resolved.config.search.storage is None


def test_config_from_a_configmap_key():
    spec = parse_spec({"configMapRef": {"name": "cm"}}, "digits")
    assert spec.config_map_ref.key == "config.yaml"
    assert config_from_configmap({"config.yaml": "optimizer: {lr: 1e-3}\n"}, spec.config_map_ref) == {
        "optimizer": {"lr": 1e-3}}  # YAML 1.2 numbers, as the CLIs read files
    with pytest.raises(SpecError, match="has no key `config.yaml`"):
        config_from_configmap({"other.yaml": ""}, spec.config_map_ref)
    with pytest.raises(SpecError, match="must hold a YAML mapping"):
        config_from_configmap({"config.yaml": "- a\n"}, spec.config_map_ref)


def test_operator_defaults_fill_what_the_spec_leaves_out():
    defaults = Defaults.from_environment({
        "KUBETUNE_STORAGE_SECRET": "release-postgres", "KUBETUNE_STORAGE_SECRET_KEY": "dsn",
        "KUBETUNE_RESULTS_PVC": "release-results",
        "KUBETUNE_TRIAL_DEFAULTS": '{"resources": {"limits": {"nvidia.com/gpu": 1}}, '
                                   '"nodeSelector": {}, "tolerations": [{"operator": "Exists"}]}',
    })
    spec = parse_spec(_raw(), "digits", defaults)
    assert (spec.storage.secret_ref.name, spec.storage.secret_ref.key) == ("release-postgres", "dsn")
    assert spec.output.persistent_volume_claim == "release-results"
    assert spec.trials.resources.limits == {"nvidia.com/gpu": 1}
    assert spec.trials.node_selector == {} and spec.trials.tolerations[0].operator == "Exists"
    own = parse_spec(_raw(storage={"secretRef": {"name": "mine"}}, output={"persistentVolumeClaim": "o"},
                          trials={"resources": {"limits": {"cpu": 2}}}), "digits", defaults)
    assert own.storage.secret_ref.name == "mine" and own.output.persistent_volume_claim == "o"
    assert own.trials.resources.limits == {"cpu": 2}


@pytest.mark.parametrize("text", ["{not json", '{"image": "x"}', '{"tolerations": [{"effect": "x"}]}'])
def test_malformed_trial_defaults_are_refused(text):
    with pytest.raises(ValueError, match="KUBETUNE_TRIAL_DEFAULTS|effect"):
        Defaults.from_environment({"KUBETUNE_TRIAL_DEFAULTS": text})


def test_in_memory_the_crd_cannot_check_is_checked_by_the_operator():
    raw = _raw()
    raw["config"]["data"]["in_memory"] = "sometimes"
    error = _error(raw)
    assert error.field == "spec.config.data.in_memory" and "'auto', True or False" in str(error), str(error)


def test_images_quantities_and_env_names_kubernetes_takes_are_taken():
    trials = {"image": "registry.example.com:5000/team/kubetune-trainer:0.1.0-cuda",
              "resources": {"limits": {"nvidia.com/gpu": 1, "memory": "4Gi", "cpu": "500m"},
                            "requests": {"cpu": "0.5", "ephemeral-storage": "1e9"}},
              "env": [{"name": "OMP_NUM_THREADS", "value": "2"}, {"name": "my.var-x"}]}
    spec = parse_spec(_raw(trials=trials), "digits")
    assert spec.trials.image == trials["image"] and spec.trials.resources.limits["nvidia.com/gpu"] == 1


@pytest.mark.parametrize("path", sorted((ROOT / "manifests" / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_studyjob_is_a_spec_the_operator_takes(path):
    objects = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    config_maps = {o["metadata"]["name"]: o.get("data") for o in objects if o["kind"] == "ConfigMap"}
    for example in (o for o in objects if o["kind"] == "StudyJob"):
        spec = parse_spec(example["spec"], example["metadata"]["name"])
        raw = spec.config if spec.config is not None else config_from_configmap(
            config_maps.get(spec.config_map_ref.name), spec.config_map_ref)
        assert resolve_config(raw, spec).config.search is not None
