"""Tests for distill.heads (ArcFace, CosFace, ElasticFace and ElasticFace+)."""

from __future__ import annotations

import math

import pytest
import torch

from distill.heads import MarginHead, create_head, list_heads

EMB, CLASSES = 16, 10
PLAIN_OF = {
    "elasticarcface": "arcface",
    "elasticcosface": "cosface",
    "elasticarcface+": "arcface",
    "elasticcosface+": "cosface",
}
DEFAULTS = {  # name: (s, m, std)
    "arcface": (64.0, 0.5, 0.0),
    "cosface": (64.0, 0.35, 0.0),
    "elasticarcface": (64.0, 0.5, 0.05),
    "elasticcosface": (64.0, 0.35, 0.05),
    "elasticarcface+": (64.0, 0.5, 0.0175),
    "elasticcosface+": (64.0, 0.35, 0.02),
}
ELASTIC = [n for n in list_heads() if n.startswith("elastic")]
PLUS = [n for n in list_heads() if n.endswith("+")]


def _head(name: str, **kwargs: float) -> MarginHead:
    torch.manual_seed(0)
    return create_head(name, EMB, CLASSES, **kwargs)


def _batch(n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, EMB, generator=gen), torch.randint(0, CLASSES, (n,), generator=gen)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _ranks(x: torch.Tensor) -> torch.Tensor:
    return torch.argsort(torch.argsort(x)).double()


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


def test_registry_and_defaults() -> None:
    assert set(list_heads()) == set(DEFAULTS)
    for name, (s, m, std) in DEFAULTS.items():
        head = create_head(name, EMB, CLASSES)
        assert (head.s, head.m, head.std) == (s, m, std)
        assert head.weight.shape == (CLASSES, EMB)
    assert type(create_head("ElasticArcFace_plus", EMB, CLASSES)).__name__ == "ElasticArcFacePlus"
    assert type(create_head("Elastic-CosFace+", EMB, CLASSES)).__name__ == "ElasticCosFacePlus"
    with pytest.raises(ValueError, match="arcface"):
        create_head("sphereface", EMB, CLASSES)


def test_weight_init_is_normal_std_001() -> None:
    head = create_head("arcface", 512, 2000)
    assert abs(head.weight.std().item() - 0.01) < 5e-4
    assert abs(head.weight.mean().item()) < 5e-4


@pytest.mark.parametrize("name", list_heads())
def test_logits_shape_dtype_and_gradients(name: str) -> None:
    head = _head(name)
    emb, labels = _batch()
    emb.requires_grad_(True)
    logits = head(emb, labels, generator=_gen())
    assert logits.shape == (8, CLASSES) and logits.dtype == torch.float32
    head.loss(emb, labels, generator=_gen()).backward()
    for grad in (emb.grad, head.weight.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("name", list_heads())
def test_margin_only_on_target_and_penalises_it(name: str) -> None:
    head = _head(name)
    emb, labels = _batch(64)
    with torch.no_grad():
        logits = head(emb, labels, generator=_gen())
        plain = head.s * head.cosine(emb)
    target = torch.zeros_like(plain, dtype=torch.bool)
    target[torch.arange(64), labels] = True
    assert torch.equal(logits[~target], plain[~target])
    assert (logits[target] < plain[target]).all()
    assert (head.last_margins > 0).all()


@pytest.mark.parametrize("name", list_heads())
def test_ignored_labels_get_no_margin_and_no_loss(name: str) -> None:
    head = _head(name)
    emb, labels = _batch(12)
    labels[[1, 4, 5, 11]] = -1
    keep = labels != -1
    emb.requires_grad_(True)
    logits = head(emb, labels, generator=_gen(5))
    assert torch.equal(logits[~keep], head.s * head.cosine(emb)[~keep])
    assert torch.equal(head.last_margins[~keep], torch.zeros(4))
    # the loss equals the loss of the labelled rows alone (same margin draws: ignored rows
    # consume no random numbers) and sends no gradient to the ignored rows
    loss = head.loss(emb, labels, generator=_gen(5))
    subset = head.loss(emb.detach()[keep], labels[keep], generator=_gen(5))
    torch.testing.assert_close(loss, subset, rtol=1e-6, atol=1e-6)
    loss.backward()
    assert torch.equal(emb.grad[~keep], torch.zeros(4, EMB))


@pytest.mark.parametrize("name", list_heads())
def test_all_ignored_batch_gives_zero_finite_loss(name: str) -> None:
    head = _head(name)
    emb, _ = _batch(4)
    loss = head.loss(emb, torch.full((4,), -1))
    assert loss.item() == 0.0
    loss.backward()
    assert head.weight.grad is not None


@pytest.mark.parametrize("name", list_heads())
def test_invalid_inputs_raise(name: str) -> None:
    head = _head(name)
    emb, labels = _batch(4)
    with pytest.raises(ValueError):
        head(emb, torch.tensor([0, 1, 2, CLASSES]))
    with pytest.raises(ValueError):
        head(emb, torch.tensor([0, 1, -2, 3]))
    with pytest.raises(ValueError):
        head(emb[:, :-1], labels)
    with pytest.raises(ValueError):
        head(emb, labels[:3])


@pytest.mark.parametrize("name", ELASTIC)
def test_zero_std_equals_plain_head_exactly(name: str) -> None:
    elastic = _head(name, std=0.0)
    plain = _head(PLAIN_OF[name])
    plain.load_state_dict(elastic.state_dict())
    emb, labels = _batch(32)
    labels[3] = -1
    assert torch.equal(elastic(emb, labels, generator=_gen()), plain(emb, labels))


@pytest.mark.parametrize("name", ELASTIC)
def test_elastic_margin_statistics(name: str) -> None:
    head = _head(name)
    n = 20000
    emb, labels = _batch(n, seed=1)
    with torch.no_grad():
        head(emb, labels, generator=_gen(2))
    margins = head.last_margins.double()
    assert margins.shape == (n,)
    assert abs(margins.mean().item() - head.m) < 5 * head.std / math.sqrt(n)
    assert abs(margins.std().item() / head.std - 1) < 0.05
    # a fresh draw at every call, reproducible from the generator
    with torch.no_grad():
        head(emb[:100], labels[:100], generator=_gen(2))
        first = head.last_margins.clone()
        head(emb[:100], labels[:100], generator=_gen(2))
        assert torch.equal(first, head.last_margins)
        head(emb[:100], labels[:100], generator=_gen(3))
        assert not torch.equal(first, head.last_margins)


@pytest.mark.parametrize("name", PLUS)
def test_plus_margins_are_rank_inverse_to_target_cosine(name: str) -> None:
    head = _head(name)
    n = 4000
    emb, labels = _batch(n, seed=2)
    labels[::7] = -1
    keep = labels != -1
    with torch.no_grad():
        head(emb, labels, generator=_gen(4))
        target_cos = head.cosine(emb)[keep, labels[keep]]
    margins = head.last_margins[keep]
    assert _spearman(target_cos, margins) < -0.9
    # exact assignment: hardest sample (lowest cosine) gets the largest margin, and so on
    by_difficulty = margins[torch.argsort(target_cos)]
    assert torch.equal(by_difficulty, torch.sort(margins, descending=True).values)
    # the margins themselves are still N(m, std) draws
    assert abs(margins.double().std().item() / head.std - 1) < 0.1


def test_plus_assignment_on_a_hand_made_batch() -> None:
    """Regression for the reference bug: the sort order must be scattered, not gathered."""
    head = create_head("elasticcosface+", 2, 2, s=1.0)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    angles = torch.tensor([0.3, 1.2, 0.1, 0.9, 0.6])  # target cosines: 3rd > 1st > 5th > 4th > 2nd
    emb = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    head(emb, torch.zeros(5, dtype=torch.long), generator=_gen(0))
    margins = head.last_margins
    assert torch.equal(torch.argsort(margins), torch.argsort(torch.cos(angles), descending=True))


@pytest.mark.parametrize("m", [0.2, 0.5, 0.8])
def test_arcface_margin_is_monotone_and_finite(m: float) -> None:
    head = create_head("arcface", EMB, CLASSES, m=m)
    cos = torch.linspace(-1.0, 1.0, 2001, requires_grad=True)
    out = head.apply_margin(cos, torch.full_like(cos, m))
    assert (out[1:] - out[:-1] >= -1e-6).all()  # non-decreasing in cos θ, i.e. in -θ
    assert (out < cos).all()
    out.sum().backward()
    assert torch.isfinite(cos.grad).all()
    # exact cos(θ + m) where θ + m <= π
    theta = torch.tensor([0.1, 1.0, math.pi - m - 0.01])
    torch.testing.assert_close(
        head.apply_margin(torch.cos(theta), torch.full_like(theta, m)), torch.cos(theta + m)
    )


def test_embedding_on_its_centre_has_finite_gradient() -> None:
    head = create_head("elasticarcface", EMB, CLASSES)
    emb = head.weight.detach()[:4].clone().requires_grad_(True)
    head.loss(emb, torch.arange(4), generator=_gen()).backward()
    assert torch.isfinite(emb.grad).all() and torch.isfinite(head.weight.grad).all()


def test_cosface_margin_value() -> None:
    head = create_head("cosface", EMB, CLASSES)
    emb, labels = _batch()
    logits = head(emb, labels)
    cos = head.cosine(emb)[torch.arange(8), labels]
    torch.testing.assert_close(logits[torch.arange(8), labels], 64.0 * (cos - 0.35))


@pytest.mark.parametrize("name", ["arcface", "cosface"])
def test_fixed_margin_heads_refuse_an_elastic_std(name: str) -> None:
    with pytest.raises(ValueError, match="fixed margin: std must be 0"):
        create_head(name, embedding_size=8, num_classes=4, std=0.05)
    assert create_head(name, embedding_size=8, num_classes=4, std=0.0).std == 0.0
