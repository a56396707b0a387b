"""Plain backbone state dicts (insightface ``arcface_torch`` / ElasticFace ``backbone.pth``)
wherever a checkpoint is read: ``load_backbone``, ``distill eval``, ``teacher.checkpoint``,
``student.init``.

The state dict is built here key by key in arcface_torch's IResNet layout, not taken from this
package's model, and a functional forward pass written from that layout checks that the keys
mean the same thing in :class:`distill.backbones.IResNet`.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from typer.testing import CliRunner

from distill.backbones import create_backbone, infer_arch
from distill.checkpoint import CheckpointError, load_backbone, load_checkpoint, load_weights
from distill.cli import app
from maskgen.io import encode_image, save_bin
from maskgen.synthetic import SyntheticFaces

EMB = 16
R18 = (2, 2, 2, 2)
WIDTHS = (64, 128, 256, 512)


def _bn(state: dict, name: str, n: int, gen: torch.Generator) -> None:
    state[f"{name}.weight"] = 1 + 0.1 * torch.randn(n, generator=gen)
    state[f"{name}.bias"] = 0.1 * torch.randn(n, generator=gen)
    state[f"{name}.running_mean"] = 0.1 * torch.randn(n, generator=gen)
    state[f"{name}.running_var"] = 0.5 + torch.rand(n, generator=gen)
    state[f"{name}.num_batches_tracked"] = torch.tensor(100)


def _conv(out_ch: int, in_ch: int, k: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(out_ch, in_ch, k, k, generator=gen) * (2.0 / (in_ch * k * k)) ** 0.5


def arcface_torch_state(layers=R18, embedding_size: int = EMB, seed: int = 0) -> OrderedDict:
    """A state dict with the keys and shapes of insightface arcface_torch's ``iresnet``."""
    gen = torch.Generator().manual_seed(seed)
    state: dict = OrderedDict()
    state["conv1.weight"] = _conv(64, 3, 3, gen)
    _bn(state, "bn1", 64, gen)
    state["prelu.weight"] = torch.full((64,), 0.25)
    inplanes = 64
    for stage, (planes, blocks) in enumerate(zip(WIDTHS, layers, strict=True), 1):
        for j in range(blocks):
            p = f"layer{stage}.{j}"
            cin = inplanes if j == 0 else planes
            _bn(state, f"{p}.bn1", cin, gen)
            state[f"{p}.conv1.weight"] = _conv(planes, cin, 3, gen)
            _bn(state, f"{p}.bn2", planes, gen)
            state[f"{p}.prelu.weight"] = torch.full((planes,), 0.25)
            state[f"{p}.conv2.weight"] = _conv(planes, planes, 3, gen) * 0.3
            _bn(state, f"{p}.bn3", planes, gen)
            if j == 0:  # stride 2 on every first block: a projection shortcut
                state[f"{p}.downsample.0.weight"] = _conv(planes, cin, 1, gen)
                _bn(state, f"{p}.downsample.1", planes, gen)
        inplanes = planes
    _bn(state, "bn2", 512, gen)
    state["fc.weight"] = torch.randn(embedding_size, 512 * 49, generator=gen) * 0.01
    state["fc.bias"] = torch.zeros(embedding_size)
    _bn(state, "features", embedding_size, gen)
    state["features.weight"] = torch.ones(embedding_size)  # fixed to 1 in insightface
    return state


def _bn_f(x: torch.Tensor, s: dict, name: str) -> torch.Tensor:
    return F.batch_norm(
        x, s[f"{name}.running_mean"], s[f"{name}.running_var"], s[f"{name}.weight"],
        s[f"{name}.bias"], training=False, eps=1e-5,
    )  # fmt: skip


def reference_forward(s: dict, x: torch.Tensor, layers=R18) -> torch.Tensor:
    """arcface_torch's IResNet forward (eval mode) written from its layout with functionals."""
    x = F.prelu(_bn_f(F.conv2d(x, s["conv1.weight"], padding=1), s, "bn1"), s["prelu.weight"])
    for stage, blocks in enumerate(layers, 1):
        for j in range(blocks):
            p = f"layer{stage}.{j}"
            stride = 2 if j == 0 else 1
            out = F.conv2d(_bn_f(x, s, f"{p}.bn1"), s[f"{p}.conv1.weight"], padding=1)
            out = F.prelu(_bn_f(out, s, f"{p}.bn2"), s[f"{p}.prelu.weight"])
            out = F.conv2d(out, s[f"{p}.conv2.weight"], stride=stride, padding=1)
            out = _bn_f(out, s, f"{p}.bn3")
            if j == 0:
                short = F.conv2d(x, s[f"{p}.downsample.0.weight"], stride=stride)
                x = out + _bn_f(short, s, f"{p}.downsample.1")
            else:
                x = out + x
    x = torch.flatten(_bn_f(x, s, "bn2"), 1)
    x = F.linear(x, s["fc.weight"], s["fc.bias"])
    return _bn_f(x, s, "features")


@pytest.fixture(scope="module")
def backbone_pth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``backbone.pth`` as arcface_torch / ElasticFace save it: a bare state dict."""
    path = tmp_path_factory.mktemp("public") / "backbone.pth"
    torch.save(arcface_torch_state(), path)
    return path


@pytest.fixture(scope="module")
def pack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 10-pair .bin verification pack of aligned synthetic crops."""
    ds = SyntheticFaces(5, 4, seed=3)
    images, flags = [], []
    for k in range(10):
        a, same = (k % 5) * 4, k % 2 == 0
        b = a + 1 if same else ((k % 5 + 1) % 5) * 4 + 2
        images += [encode_image(ds[a][0], ".png"), encode_image(ds[b][0], ".png")]
        flags.append(same)
    return save_bin(tmp_path_factory.mktemp("pack") / "tiny.bin", images, flags)


def test_arcface_torch_layout_loads_and_matches_the_reference(backbone_pth: Path) -> None:
    model = load_backbone(backbone_pth)
    assert type(model).__name__ == "IResNet" and model.layers_config == R18
    assert model.embedding_size == EMB and not model.training
    x = torch.rand(2, 3, 112, 112) * 2 - 1
    state = torch.load(backbone_pth, weights_only=True)
    with torch.no_grad():
        diff = float((model(x) - reference_forward(state, x)).abs().max())
    print(f"IResNet vs the arcface_torch-layout reference: max |diff| {diff:.3g}")
    assert diff < 1e-4


@pytest.mark.parametrize(
    ("layers", "name"),
    [((2, 2, 2, 2), "iresnet18"), ((3, 4, 6, 3), "iresnet34"), ((3, 4, 14, 3), "iresnet50"),
     ((3, 13, 30, 3), "iresnet100")],
)  # fmt: skip
def test_depth_and_embedding_size_from_the_keys(layers: tuple[int, ...], name: str) -> None:
    arch = infer_arch(arcface_torch_state(layers, embedding_size=24))
    assert arch == {"backbone": name, "embedding_size": 24, "kwargs": {}}


def test_mobilefacenet_and_tiny_state_dicts_are_recognised() -> None:
    assert infer_arch(create_backbone("mobilefacenet", 64).state_dict())["backbone"] == (
        "mobilefacenet"
    )
    tiny = create_backbone("tiny", 8, widths=[8, 8, 16, 16], blocks=[0, 1, 0, 2])
    arch = infer_arch(tiny.state_dict())
    assert arch["kwargs"] == {"widths": [8, 8, 16, 16], "blocks": [0, 1, 0, 2]}
    assert infer_arch(create_backbone("tiny", 8).state_dict())["kwargs"] == {}


def test_wrapped_and_ddp_prefixed_files(tmp_path: Path) -> None:
    state = arcface_torch_state()
    expected = load_weights_from(state, tmp_path / "bare.pth")
    for name, obj in (
        ("ddp.pth", {f"module.{k}": v for k, v in state.items()}),
        ("wrapped.pt", {"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}),
        ("insightface_ckpt.pt", {"epoch": 2, "state_dict_backbone": dict(state)}),
    ):
        got = load_weights_from(obj, tmp_path / name)
        assert got["arch"] == expected["arch"]
        assert got["model"].keys() == state.keys()
        assert all(torch.equal(got["model"][k], state[k]) for k in state)


def load_weights_from(obj: object, path: Path) -> dict:
    torch.save(obj, path)
    return load_weights(path)


def test_mismatch_is_one_line_naming_the_keys(tmp_path: Path) -> None:
    state = arcface_torch_state()
    for key in ("layer1.0.bn1.weight", "layer2.1.conv1.weight", "bn2.bias", "fc.bias"):
        del state[key]
    state["head.kernel"] = torch.zeros(3)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        load_backbone(path)
    msg = str(info.value)
    print(msg)
    assert "\n" not in msg and str(path) in msg
    assert "missing keys" in msg and "(+1 more)" in msg and "unexpected keys head.kernel" in msg
    # a depth that insightface never published names what it found
    torch.save(arcface_torch_state((2, 2, 2, 3)), path)
    with pytest.raises(CheckpointError, match=r"\[2, 2, 2, 3\] blocks per stage"):
        load_backbone(path)
    # the wrong architecture named explicitly: the strict load says why
    torch.save(arcface_torch_state(), path)
    with pytest.raises(CheckpointError, match=r"do not fit TinyFaceNet.*missing keys"):
        load_backbone(path, arch="tiny")


def test_arch_option_for_keys_that_tell_nothing(tmp_path: Path) -> None:
    """A registered backbone whose layout is not inferred loads when it is named."""
    from torch import nn

    from distill.backbones import register_backbone
    from distill.backbones.registry import _REGISTRY

    class Linear(nn.Module):
        def __init__(self, embedding_size: int) -> None:
            super().__init__()
            self.embedding_size = embedding_size
            self.proj = nn.Linear(3 * 112 * 112, embedding_size)
            self.features = nn.BatchNorm1d(embedding_size)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.features(self.proj(x.flatten(1)))

    register_backbone(lambda embedding_size=512, **kw: Linear(embedding_size), name="_t_lin")
    try:
        net = Linear(EMB).eval()
        path = tmp_path / "custom.pth"
        torch.save({"model": {f"module.{k}": v for k, v in net.state_dict().items()}}, path)
        with pytest.raises(CheckpointError, match=r"not a distill checkpoint.*--arch"):
            load_backbone(path)
        model = load_backbone(path, arch="_t_lin")
        assert model.embedding_size == EMB  # read from the final 'features' layer
        x = torch.rand(2, 3, 112, 112)
        with torch.no_grad():
            assert torch.equal(model(x), net(x))
    finally:
        _REGISTRY.pop("_t_lin")


def test_distill_eval_scores_a_public_state_dict(
    tmp_path: Path, backbone_pth: Path, pack: Path
) -> None:
    out = tmp_path / "eval"
    args = ["eval", f"elasticface={backbone_pth}", "--data", str(pack), "--out", str(out),
            "--protocols", "nm-nm", "--batch-size", "20", "--no-progress",
            "--threads", "1"]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    assert [(r["model"], r["protocol"]) for r in report["results"]] == [("elasticface", "nm-nm")]
    # --arch names the architecture; a wrong one is one line and exit code 2
    res = CliRunner().invoke(app, [*args[:6], str(tmp_path / "e2"), *args[7:], "--arch", "tiny"])
    assert res.exit_code == 2
    assert res.output.count("\n") == 1 and "do not fit TinyFaceNet" in res.output


def test_distill_train_with_a_public_teacher(tmp_path: Path, backbone_pth: Path) -> None:
    """teacher.checkpoint=backbone.pth (an iresnet18 teacher, stage skipped) and a tiny
    student initialised from a DDP-prefixed plain state dict (student.init=PATH)."""
    tiny = create_backbone("tiny", EMB, widths=[8, 8, 16, 16], blocks=[0, 0, 0, 0])
    init = tmp_path / "student_init.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in tiny.state_dict().items()}}, init)
    out = tmp_path / "run"
    sets = [
        f"teacher.checkpoint={backbone_pth}", f"student.init={init}",
        "model.backbone=tiny", f"model.embedding_size={EMB}",
        "model.kwargs={widths: [8, 8, 16, 16], blocks: [0, 0, 0, 0]}",
        "data.num_identities=4", "data.images_per_identity=4", "data.num_workers=0",
        "train.batch_size=8", "optim.base_batch_size=8", "student.epochs=1",
        "train.max_steps_per_epoch=1", "train.threads=1", "eval.enabled=false",
        "student.lr=0",  # the convolutions keep their initial weights
    ]  # fmt: skip
    args = ["train", "--out", str(out), "--no-progress"]
    for s in sets:
        args += ["--set", s]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    student = load_checkpoint(out / "student" / "last.pt")
    assert student["step"] == 1 and student["arch"]["backbone"] == "tiny"
    assert torch.equal(student["model"]["body.0.0.weight"], tiny.state_dict()["body.0.0.weight"])
    assert not (out / "teacher" / "last.pt").exists()  # the public teacher was used as is
    log = (out / "train.log").read_text()
    assert str(backbone_pth) in log
    # a public teacher as the student's init must fit the configured student
    bad_sets = [v for v in sets if not v.startswith("student.init=")] + ["student.init=teacher"]
    bad_args = ["train", "--out", str(tmp_path / "bad"), "--no-progress"]
    for s in bad_sets:
        bad_args += ["--set", s]
    bad = CliRunner().invoke(app, bad_args)
    assert bad.exit_code == 2 and "do not fit TinyFaceNet" in bad.output
    assert bad.output.count("\n") == 1
    assert not (tmp_path / "bad").exists()


def test_distill_eval_refuses_weights_that_are_not_finite(tmp_path) -> None:
    import torch

    from distill.backbones import create_backbone
    from distill.eval.models import CheckpointError, load_model

    model = create_backbone("tiny", embedding_size=16)
    state = model.state_dict()
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first] = torch.full_like(state[first], float("nan"))
    path = tmp_path / "backbone.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=rf"tensor {first} is not finite"):
        load_model(path, arch="tiny")
