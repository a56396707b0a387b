"""``maskgen render --protocol`` and ``distill eval`` share one protocol: same draws, same
pixels, one protocol file format that both read and write."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from distill.backbones import create_backbone
from distill.eval import evaluate_models
from maskgen.dataset import RenderOptions, render_dataset
from maskgen.io import decode_image, encode_image, load_bin, save_bin
from maskgen.protocol import EvalProtocol, protocol_draws, protocol_masks, protocol_path
from maskgen.synthetic import draw_aligned_face, sample_identity


def _pack(path: Path, n_pairs: int) -> None:
    rng = np.random.default_rng(11)
    idents = [sample_identity(rng) for _ in range(3)]
    faces = [draw_aligned_face(idents[i % 3], rng)[0] for i in range(2 * n_pairs)]
    save_bin(path, [encode_image(f, ".png") for f in faces], [k % 2 == 0 for k in range(n_pairs)])


def _masked_digest(images: list[np.ndarray], protocol: str) -> str:
    """SHA-256 of the masked model inputs in the order ``distill eval`` hashes them."""
    digest = hashlib.sha256()
    masked = [i for i in range(len(images)) if protocol_masks(protocol, i)]
    for position, i in enumerate(masked):
        digest.update(position.to_bytes(8, "little"))
        digest.update(images[i].tobytes())
    return digest.hexdigest()


@pytest.mark.parametrize("protocol", ["m-nm", "m-m"])
def test_rendered_pack_holds_the_images_distill_eval_scores(tmp_path: Path, protocol: str) -> None:
    source, out = tmp_path / "lfw.bin", tmp_path / f"lfw_{protocol}.bin"
    _pack(source, 4)
    render_dataset(source, out, RenderOptions(protocol=protocol, seed=5), workers=1,
                   progress=False)  # fmt: skip
    rendered = [decode_image(b) for b in load_bin(out).images]

    written = EvalProtocol.load(protocol_path(out))
    assert written.datasets["lfw"].draws[protocol] == protocol_draws(protocol, 8, seed=5)

    torch.manual_seed(0)
    model = create_backbone("tiny", embedding_size=16)
    fresh = tmp_path / "fresh.protocol.json"
    first = evaluate_models({"tiny": model}, {"lfw": load_bin(source)}, protocol, seed=5,
                            protocol_file=fresh, progress=False, batch_size=4)  # fmt: skip
    scored = EvalProtocol.load(fresh).datasets["lfw"]
    assert scored.draws == written.datasets["lfw"].draws
    assert scored.images_sha256[protocol] == _masked_digest(rendered, protocol)

    # distill eval reads the protocol file maskgen render wrote, and scores the same pixels
    # (in batches of the same size: other sizes may round the embeddings differently).
    again = evaluate_models({"tiny": model}, {"lfw": load_bin(source)}, protocol,
                            protocol_file=protocol_path(out), progress=False,
                            batch_size=4)  # fmt: skip
    assert (
        again.result("tiny", "lfw", protocol).to_dict()
        == first.result("tiny", "lfw", protocol).to_dict()
    )


def test_mnm_masks_are_the_mm_masks_of_the_second_images() -> None:
    mnm, mm = protocol_draws("m-nm", 6, seed=2), protocol_draws("m-m", 6, seed=2)
    assert [d is None for d in mnm] == [True, False] * 3
    assert all(mnm[i] == mm[i] for i in (1, 3, 5))
    assert len({d.to_json() for d in mm}) == 6  # every image its own draw
