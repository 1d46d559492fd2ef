"""model.architecture's mistakes: one line naming the field, the closest names, nothing downloaded."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest
import torch
import yaml

from kubetune.config import validate_config
from kubetune.config.architectures import TORCHVISION_CLASSIFIERS
from kubetune.config.schema import ModelConfig
from kubetune.errors import ConfigError
from kubetune.models import build_model
from kubetune.models.torchvision_models import cached_weights_path
from tests.conftest import run_cli


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model build opened a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def config_with(model: dict) -> dict:
    return {"model": model, "data": {"path": "data"}}


def test_the_torchvision_names_are_torchvisions_classification_registry():
    import torchvision

    assert sorted(TORCHVISION_CLASSIFIERS) == sorted(torchvision.models.list_models(module=torchvision.models))


@pytest.mark.parametrize(("name", "closest"), [
    ("resnet81", "`resnet18`"), ("convnext_tin", "`convnext_tiny`"), ("vit_b16", "`vit_b_16`"),
    ("small-cnn", "`small_cnn`"),
])
def test_an_unknown_name_is_refused_with_the_closest_names(name, closest):
    with pytest.raises(ConfigError) as info:
        validate_config(config_with({"architecture": name}))
    message = str(info.value)
    assert info.value.path == "model.architecture"
    assert message.startswith("`model.architecture` must be a torchvision classifier")
    assert f"but got {name!r} (did you mean {closest}" in message and "\n" not in message


@pytest.mark.parametrize(("name", "fragment"), [
    ("timm/", "must name a timm model after `timm/`"),
    ("my-models:build", "must be package.module:function"),
    ("models:", "must be package.module:function"),
])
def test_malformed_timm_and_factory_names_are_refused(name, fragment):
    with pytest.raises(ConfigError, match=fragment) as info:
        validate_config(config_with({"architecture": name}))
    assert info.value.path == "model.architecture"


def test_every_kind_of_name_is_accepted_without_importing_it():
    for name in ("small_cnn", "convnext_tiny", "vit_b_16", "timm/resnet10t", "no_such.module:build"):
        assert validate_config(config_with({"architecture": name})).model.architecture == name


@pytest.mark.parametrize(("model", "path"), [
    ({"architecture": "resnet18", "kwargs": {"num_classes": 3}}, "model.kwargs.num_classes"),
    ({"architecture": "timm/resnet10t", "kwargs": {"in_chans": 1}}, "model.kwargs.in_chans"),
    ({"architecture": "small_cnn", "kwargs": {"width": 3}}, "model.kwargs"),
    ({"architecture": "mod:build", "dropout": 0.2}, "model.dropout"),
    ({"architecture": "mod:build", "pretrained": True}, "model.pretrained"),
])
def test_kwargs_and_options_that_do_not_apply_are_refused(model, path):
    with pytest.raises(ConfigError) as info:
        validate_config(config_with(model))
    assert info.value.path == path and f"`{path}`" in str(info.value)


def test_ml_train_refuses_an_unknown_architecture_on_one_line_with_exit_2(tmp_path, fast_config):
    fast_config["model"]["architecture"] = "resnet81"
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(fast_config))
    result = run_cli("ml-train", "--config", str(path))
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "`model.architecture`" in result.stderr and "did you mean `resnet18`" in result.stderr


def test_a_vit_refuses_an_image_size_its_patches_do_not_divide():
    with pytest.raises(ConfigError, match=r"`data.image_size` must be a multiple of vit_b_16's 16-pixel patches, "
                       r"but got 30") as info:
        build_model(ModelConfig(architecture="vit_b_16"), 3, 1, 30)
    assert info.value.path == "data.image_size"


def test_a_model_that_cannot_take_the_image_size_is_refused_before_training():
    with pytest.raises(ConfigError, match=r"`model.architecture` maxvit_t cannot take 20x20 images "
                       r"\(data.image_size\): ") as info:
        build_model(ModelConfig(architecture="maxvit_t"), 3, 1, 20)
    assert info.value.path == "data.image_size"


def test_kwargs_reach_the_torchvision_builder():
    model = build_model(ModelConfig(architecture="efficientnet_b0", kwargs={"stochastic_depth_prob": 0.0}), 3, 3)
    assert all(m.p == 0.0 for m in model.modules() if type(m).__name__ == "StochasticDepth")
    with pytest.raises(ConfigError, match="`model.kwargs` do not fit torchvision's resnet18"):
        build_model(ModelConfig(architecture="resnet18", kwargs={"depth": 3}), 3, 3)


# --- the user's factory ---

FACTORIES = '''
import torch.nn as nn

def build(num_classes, in_channels, width=4):
    return nn.Sequential(nn.Conv2d(in_channels, width, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(width, num_classes))

def not_a_module(num_classes, in_channels):
    return "a string"

def broken(num_classes, in_channels):
    raise KeyError("layers")

def ten_classes(num_classes, in_channels):
    return build(10, in_channels)

NOT_CALLABLE = 3
'''


@pytest.fixture
def factories(tmp_path, monkeypatch):
    (tmp_path / "user_models.py").write_text(FACTORIES)
    (tmp_path / "user_broken.py").write_text("import no_such_dependency\n")
    monkeypatch.chdir(tmp_path)  # imported from the working folder, as ml-train does
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield tmp_path
    for name in ("user_models", "user_broken"):
        sys.modules.pop(name, None)


def test_a_factory_gets_classes_channels_and_kwargs(factories):
    model = build_model(ModelConfig(architecture="user_models:build", kwargs={"width": 6}), 5, 1, 8)
    assert model[0].in_channels == 1 and model[0].out_channels == 6
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 5)


@pytest.mark.parametrize(("name", "fragment"), [
    ("no_such_module:build", "cannot import no_such_module (ModuleNotFoundError: No module named "
                             "'no_such_module'); it must be importable from the working folder or PYTHONPATH"),
    ("user_broken:build", "cannot import user_broken (ModuleNotFoundError: No module named 'no_such_dependency')"),
    ("user_models:biuld", "module user_models has no biuld (did you mean `build`?)"),
    ("user_models:NOT_CALLABLE", "NOT_CALLABLE must be a function, but it is a int"),
    ("user_models:not_a_module", "must return a torch.nn.Module, but returned str"),
    ("user_models:broken", "user_models:broken(5, 1, **model.kwargs) raised KeyError: 'layers'"),
])
def test_a_factory_that_cannot_build_is_one_line_naming_the_field(factories, name, fragment):
    with pytest.raises(ConfigError) as info:
        build_model(ModelConfig(architecture=name), 5, 1, 8)
    assert info.value.path == "model.architecture"
    assert str(info.value).startswith("`model.architecture`") and fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_a_factory_with_the_wrong_output_is_refused(factories):
    with pytest.raises(ConfigError, match=r"`model.architecture` user_models:ten_classes must return one score "
                       r"per class, shape \(batch, 5\), but returned \(1, 10\) for one image"):
        build_model(ModelConfig(architecture="user_models:ten_classes"), 5, 1, 8)


# --- timm ---

def test_a_timm_name_without_timm_installed_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm raises ImportError
    with pytest.raises(ConfigError) as info:
        build_model(ModelConfig(architecture="timm/resnet10t"), 3, 3)
    assert info.value.path == "model.architecture"
    assert "pip install 'kubetune[timm]'" in str(info.value) and "timm is not installed" in str(info.value)


def test_an_unknown_timm_name_gets_the_closest_timm_names():
    pytest.importorskip("timm")
    with pytest.raises(ConfigError, match=r"must name a timm model, but got 'resnet10x' \(did you mean `resnet10t`"):
        build_model(ModelConfig(architecture="timm/resnet10x"), 3, 3)


# --- pretrained weights: local caches only ---

def test_torchvision_pretrained_missing_from_the_cache_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    with pytest.raises(ConfigError, match=r"convnext_tiny weights are not in the local torch cache") as info:
        build_model(ModelConfig(architecture="convnext_tiny", pretrained=True), 10, 3)
    assert info.value.path == "model.pretrained"
    assert str(tmp_path / "hub" / "checkpoints") in str(info.value)


def test_torchvision_pretrained_loads_the_cache_and_refits_head_and_stem(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    path = cached_weights_path("regnet_y_400mf")
    path.parent.mkdir(parents=True)
    reference = torchvision.models.regnet_y_400mf(weights=None)
    torch.save(reference.state_dict(), path)
    model = build_model(ModelConfig(architecture="regnet_y_400mf", pretrained=True), 4, 1, 32)
    assert torch.allclose(model.stem[0].weight, reference.stem[0].weight.mean(dim=1, keepdim=True))
    assert torch.equal(model.trunk_output[0][0].proj[0].weight, reference.trunk_output[0][0].proj[0].weight)
    assert model.fc[1].out_features == 4


def test_a_pretrained_vit_takes_another_image_size(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    path = cached_weights_path("vit_b_32")
    path.parent.mkdir(parents=True)
    reference = torchvision.models.vit_b_32(weights=None)  # the 224x224 position embeddings
    torch.save(reference.state_dict(), path)
    model = build_model(ModelConfig(architecture="vit_b_32", pretrained=True), 3, 3, 64)
    assert model.encoder.pos_embedding.shape[1] == 1 + (64 // 32) ** 2
    assert torch.equal(model.conv_proj.weight, reference.conv_proj.weight)


def hf_cache_with(cache: Path, repo_id: str, state: dict) -> Path:
    """A Hugging Face cache holding ``state`` as ``repo_id``'s model.safetensors, as a download leaves it."""
    from safetensors.torch import save_file

    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, snapshot / "model.safetensors")
    return snapshot / "model.safetensors"


def test_timm_pretrained_missing_from_the_cache_is_a_clear_error(tmp_path, monkeypatch):
    pytest.importorskip("timm")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    with pytest.raises(ConfigError) as info:
        build_model(ModelConfig(architecture="timm/resnet10t", pretrained=True), 3, 3)
    message = str(info.value)
    assert info.value.path == "model.pretrained"
    assert "weights of timm's resnet10t are not cached locally" in message
    assert f"timm/resnet10t.c3_in1k in the Hugging Face cache {tmp_path / 'hf'}" in message


def test_timm_pretrained_loads_the_hugging_face_cache(tmp_path, monkeypatch):
    timm = pytest.importorskip("timm")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    reference = timm.create_model("resnet10t", pretrained=False)
    hf_cache_with(tmp_path / "hf", "timm/resnet10t.c3_in1k", reference.state_dict())
    model = build_model(ModelConfig(architecture="timm/resnet10t", pretrained=True), 3, 1, 32)
    assert torch.equal(model.layer1[0].conv1.weight, reference.layer1[0].conv1.weight)
    assert model.get_classifier().out_features == 3
    assert model.conv1[0].in_channels == 1


# --- searching the architecture and the builder's own arguments ---

def search_config(space: dict, kwargs: dict | None = None) -> dict:
    return {"model": {"architecture": "digits_net:build", "kwargs": kwargs or {}}, "data": {"path": "data"},
            "search": {"study_name": "s", "search_space": space}}


def test_a_searched_builder_argument_must_have_the_configs_own_value():
    config = validate_config(search_config({"model.kwargs.width": {"type": "categorical", "choices": [8, 16]}},
                                           {"width": 16}))
    assert config.model.kwargs == {"width": 16}
    with pytest.raises(ConfigError) as info:
        validate_config(search_config({"model.kwargs.widht": {"type": "int", "low": 4, "high": 8}}, {"width": 16}))
    assert info.value.path == "search.search_space.model.kwargs.widht"
    assert "must name a key of model.kwargs (did you mean `width`?)" in str(info.value)
    assert "set model.kwargs.widht to the value ml-train uses" in str(info.value)


def test_a_search_over_architectures_checks_every_choice_by_name():
    from kubetune.search.checks import check_search

    space = {"model.architecture": {"type": "categorical",
                                    "choices": ["resnet18", "timm/resnet10t", "convnext_tiny", "resnet81"]}}
    with pytest.raises(ConfigError, match=r"but 'resnet81' is not: .*did you mean `resnet18`"):
        check_search(validate_config({**search_config(space), "model": {"architecture": "resnet18"}}))


def test_set_reaches_one_builder_argument(tmp_path, fast_config):
    fast_config["model"] = {"architecture": "resnet18", "kwargs": {"zero_init_residual": False}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(fast_config))
    result = run_cli("ml-train", "--config", str(path), "--print-config", "--set", "model.kwargs.zero_init_residual=true")
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout)["model"]["kwargs"] == {"zero_init_residual": True}
