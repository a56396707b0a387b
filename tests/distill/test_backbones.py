"""Tests for distill.backbones (registry, IResNet, MobileFaceNet, tiny)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from distill.backbones import create_backbone, list_backbones, register_backbone
from distill.backbones import registry as registry_module

EMBEDDING = 96  # deliberately not the default, so that every test checks it is respected
EXPECTED = {"iresnet18", "iresnet34", "iresnet50", "iresnet100", "mobilefacenet", "tiny"}
_CACHE: dict[str, nn.Module] = {}


def _model(name: str) -> nn.Module:
    """One seeded instance per backbone, shared by the tests of this module."""
    if name not in _CACHE:
        torch.manual_seed(0)
        _CACHE[name] = create_backbone(name, embedding_size=EMBEDDING)
    return _CACHE[name]


def _images(batch: int = 2, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, 112, 112, generator=gen) * 2 - 1


def test_registry_lists_expected_backbones() -> None:
    assert set(list_backbones()) >= EXPECTED
    assert list_backbones() == sorted(list_backbones())


@pytest.mark.parametrize("name", list_backbones())
def test_attributes_and_output_shape(name: str) -> None:
    model = _model(name).train()
    assert model.embedding_size == EMBEDDING
    assert tuple(model.input_size) == (112, 112)
    out = model(_images())
    assert out.shape == (2, EMBEDDING)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", list_backbones())
def test_forward_backward_reaches_every_parameter(name: str) -> None:
    model = _model(name).train()
    model.zero_grad(set_to_none=True)
    images = _images().requires_grad_(True)
    weights = torch.randn(2, EMBEDDING, generator=torch.Generator().manual_seed(3))
    (model(images) * weights).sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    zero_grad = []
    max_grad = max(p.grad.abs().max() for p in model.parameters() if p.grad is not None)
    for pname, param in model.named_parameters():
        if not param.requires_grad:
            continue
        assert param.grad is not None, f"{name}: no gradient for {pname}"
        assert torch.isfinite(param.grad).all(), f"{name}: non-finite gradient for {pname}"
        if param.grad.abs().max() <= 1e-6 * max_grad:
            zero_grad.append(pname)
    # Only BatchNorm/FC *biases* may have a vanishing gradient: a constant shift that reaches a
    # train-mode BatchNorm through linear maps only (the pre-activation residual stream of
    # IResNet, the layers before the embedding BatchNorm1d) is cancelled by its batch-mean
    # subtraction, so those gradients are zero up to rounding. Weights must all be trained.
    assert all(n.endswith("bias") for n in zero_grad), zero_grad
    model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("name", list_backbones())
def test_only_the_embedding_bn_scale_may_be_frozen(name: str) -> None:
    frozen = [n for n, p in _model(name).named_parameters() if not p.requires_grad]
    assert frozen in ([], ["features.weight"])
    if frozen:
        assert torch.equal(_model(name).features.weight, torch.ones(EMBEDDING))


@pytest.mark.parametrize("name", list_backbones())
def test_eval_mode_is_deterministic(name: str) -> None:
    model = _model(name).eval()
    images = _images(seed=1)
    with torch.no_grad():
        first, second = model(images), model(images)
    assert torch.equal(first, second)
    # eval mode: a sample's embedding does not depend on the rest of the batch. Up to
    # float32 rounding: oneDNN picks other convolution kernels for a batch of one (iresnet50
    # differs by 4e-4 relative when run alone); batch statistics would differ by far more.
    with torch.no_grad():
        alone = model(images[:1])
    torch.testing.assert_close(alone, first[:1], rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("name", list_backbones())
def test_init_batchnorm_weight_one_bias_zero(name: str) -> None:
    for module in _model(name).modules():
        if isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d):
            assert torch.equal(module.weight.detach(), torch.ones_like(module.weight))
            assert torch.equal(module.bias.detach(), torch.zeros_like(module.bias))


@pytest.mark.parametrize("name", ["tiny", "mobilefacenet"])
def test_default_embedding_size_is_512(name: str) -> None:
    model = create_backbone(name).eval()
    assert model.embedding_size == 512
    with torch.no_grad():
        assert model(_images(1)).shape == (1, 512)


def test_iresnet50_parameter_count() -> None:
    model = create_backbone("iresnet50")  # 512-d embedding
    n_params = sum(p.numel() for p in model.parameters())
    assert abs(n_params - 43.6e6) / 43.6e6 < 0.03, n_params


def test_mobilefacenet_is_about_one_million_parameters() -> None:
    n_params = sum(p.numel() for p in create_backbone("mobilefacenet").parameters())
    assert 0.9e6 < n_params < 1.5e6, n_params


@pytest.mark.parametrize(
    ("name", "blocks"),
    [("iresnet18", [2, 2, 2, 2]), ("iresnet34", [3, 4, 6, 3]), ("iresnet50", [3, 4, 14, 3])],
)
def test_iresnet_layout(name: str, blocks: list[int]) -> None:
    model = _model(name)
    stages = [model.layer1, model.layer2, model.layer3, model.layer4]
    assert [len(stage) for stage in stages] == blocks
    for stage, width in zip(stages, (64, 128, 256, 512), strict=True):
        assert stage[0].downsample is not None
        assert all(block.downsample is None for block in stage[1:])
        assert stage[0].conv2.stride == (2, 2) and stage[0].conv2.out_channels == width
    assert model.fc.in_features == 512 * 7 * 7
    # insightface/ElasticFace checkpoint key layout
    keys = set(model.state_dict())
    for key in (
        "conv1.weight",
        "prelu.weight",
        "layer1.0.downsample.0.weight",
        "layer4.1.bn3.running_var",
        "bn2.weight",
        "fc.bias",
        "features.running_mean",
    ):
        assert key in keys


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="iresnet50") as info:
        create_backbone("resnet9000")
    assert "tiny" in str(info.value)


def test_names_are_case_insensitive_and_embedding_size_validated() -> None:
    assert create_backbone("TINY", embedding_size=8).embedding_size == 8
    with pytest.raises(ValueError):
        create_backbone("tiny", embedding_size=0)


def test_register_rejects_duplicates_and_supports_custom_models() -> None:
    @register_backbone(name="_test_linear")
    def _linear(embedding_size: int = 512, **kwargs: object) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * 112 * 112, embedding_size))

    try:
        assert create_backbone("_test_linear", embedding_size=4)(_images()).shape == (2, 4)
        with pytest.raises(ValueError, match="already registered"):
            register_backbone(_linear, name="_test_linear")
    finally:
        registry_module._REGISTRY.pop("_test_linear", None)
    assert "_test_linear" not in list_backbones()
