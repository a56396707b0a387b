"""Embeddings: flip-summed model outputs of batches of model inputs, for several models at once.

Embeddings are ``model(x) + model(flip(x))`` on 112×112 inputs normalised to ``[-1, 1]``.
:func:`_embed_jobs` materialises each batch of (image index, draw) jobs once, embeds it with
every model, and hashes the model inputs so reruns can check they saw the same pixels.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from distill.eval.inputs import _ImageError, _Materialiser
from maskgen.render import MaskParams

__all__ = ["embed_images"]

#: One batch: positions of the jobs that produced an image, their images, failed positions.
Batch = tuple[list[int], np.ndarray | None, dict[int, str]]


def _model_device(model: nn.Module) -> torch.device:
    """Device of a model's first parameter (CPU for parameter-free models).

    >>> _model_device(nn.Identity())
    device(type='cpu')
    """
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


@torch.inference_mode()
def embed_images(
    model: nn.Module, images: np.ndarray, device: str | torch.device | None = None
) -> np.ndarray:
    """Flip-summed embeddings of a B×112×112×3 ``uint8`` RGB batch (float32, B×D).

    Input is normalised as ``(x / 255 - 0.5) / 0.5``; the model must be in eval mode.

    >>> from distill.backbones import create_backbone
    >>> net = create_backbone("tiny", embedding_size=8).eval()
    >>> embed_images(net, np.zeros((2, 112, 112, 3), np.uint8)).shape
    (2, 8)
    """
    dev = torch.device(device) if device is not None else _model_device(model)
    x = torch.from_numpy(np.ascontiguousarray(images)).to(dev)
    x = x.permute(0, 3, 1, 2).float().div_(255.0).sub_(0.5).div_(0.5)
    out = model(torch.cat([x, x.flip(3)]))
    b = images.shape[0]
    return (out[:b] + out[b:]).float().cpu().numpy()


def _batches(
    jobs: Sequence[tuple[int, MaskParams | None]],
    make: _Materialiser,
    batch_size: int,
    prefetch: bool = False,
) -> Iterator[Batch]:
    """Yield (job positions, images, failures) per batch.

    With ``prefetch`` the next batch is prepared in a thread while the current one is embedded:
    worth it when the models run on an accelerator. On CPU both compete for the same cores
    (measured slower on 2 cores), so batches are then prepared in line.
    """

    def build(lo: int) -> Batch:
        ok: list[int] = []
        imgs: list[np.ndarray] = []
        failed: dict[int, str] = {}
        for pos in range(lo, min(lo + batch_size, len(jobs))):
            i, params = jobs[pos]
            try:
                imgs.append(make(i, params))
                ok.append(pos)
            except _ImageError as exc:
                failed[pos] = str(exc)
        return ok, (np.stack(imgs) if imgs else None), failed

    starts = list(range(0, len(jobs), batch_size))
    if not starts:
        return
    if not prefetch:
        for lo in starts:
            yield build(lo)
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(build, starts[0])
        for k in range(len(starts)):
            result = future.result()
            if k + 1 < len(starts):
                future = pool.submit(build, starts[k + 1])
            yield result


def _embed_jobs(
    models: Mapping[str, nn.Module],
    jobs: Sequence[tuple[int, MaskParams | None]],
    make: _Materialiser,
    batch_size: int,
    device: torch.device | None,
    desc: str,
    progress: bool,
) -> tuple[dict[str, np.ndarray], dict[int, str], str]:
    """Embed every job with every model; each batch is materialised once for all models.

    Returns the embeddings, the failed job positions with their reasons, and the SHA-256 of
    all model inputs (in job order).
    """
    digest = hashlib.sha256()
    out: dict[str, np.ndarray] = {}
    failures: dict[int, str] = {}
    devices = [device] if device is not None else [_model_device(m) for m in models.values()]
    prefetch = any(d.type != "cpu" for d in devices)
    with tqdm(total=len(jobs), desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for positions, images, failed in _batches(jobs, make, batch_size, prefetch):
            failures.update(failed)
            if images is not None:
                for pos, image in zip(positions, images, strict=True):  # batching-independent
                    digest.update(pos.to_bytes(8, "little"))
                    digest.update(image.tobytes())
                for name, model in models.items():
                    emb = embed_images(model, images, device)
                    if name not in out:
                        out[name] = np.zeros((len(jobs), emb.shape[1]), np.float32)
                    out[name][positions] = emb
            bar.update(len(positions) + len(failed))
    return out, failures, digest.hexdigest()
