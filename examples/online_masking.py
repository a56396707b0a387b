"""Online masking in a training loop, end to end on CPU in seconds (or on a GPU).

1. Writes a tiny ImageFolder of synthetic faces (one folder per identity) to a temp dir.
2. A ``DataLoader`` over it whose dataset applies the per-sample ``MaskFace`` transform in the
   worker processes (CPU renderer: every appearance option).
3. A training step where the batched ``RandomFaceMask`` masks the batch on the device after
   ``.to(device)``, with the occlusion maps available for the loss or logging.

Run: ``python examples/online_masking.py [--device cuda]``
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from distill.backbones import create_backbone
from distill.heads import create_head
from maskgen.augment import MaskFace, RandomFaceMask
from maskgen.synthetic import SyntheticFaces


class ImageFolder(torch.utils.data.Dataset):
    """Minimal ``root/<class>/<image>.png`` reader (torchvision's ImageFolder works the same)."""

    def __init__(self, root: Path, transform=None) -> None:
        self.classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        self.items = [
            (f, i) for i, c in enumerate(self.classes) for f in sorted((root / c).glob("*.png"))
        ]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.items[index]
        image = Image.open(path).convert("RGB")
        if self.transform is not None:
            image = self.transform(image)  # PIL in, PIL out (aligned crops: no landmarks needed)
        return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1), label


def write_folder(root: Path, identities: int = 4, per_identity: int = 4) -> None:
    faces = SyntheticFaces(identities, per_identity, seed=0)
    for i in range(len(faces)):
        image, label, _ = faces[i]
        folder = root / f"id{label:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:04d}.png")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "faces"
        write_folder(root)
        # Per-sample masking in the DataLoader workers (CPU).
        dataset = ImageFolder(root, transform=MaskFace(p=0.5))
        loader = torch.utils.data.DataLoader(dataset, batch_size=8, shuffle=True, num_workers=2)

        model = create_backbone("tiny", embedding_size=128).to(device)
        head = create_head("arcface", 128, len(dataset.classes)).to(device)
        opt = torch.optim.SGD([*model.parameters(), *head.parameters()], lr=0.05)
        # Batched masking on the device, after the batch is moved there.
        mask = RandomFaceMask(p=0.5).to(device)

        for step, (images, labels) in enumerate(loader):
            x = images.to(device, non_blocking=True).float().div(255)
            labels = labels.to(device)
            x, alpha = mask(x, return_alpha=True)  # aligned crops: canonical landmarks
            logits = head(model(x * 2 - 1), labels)
            loss = torch.nn.functional.cross_entropy(logits, labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
            masked = int((alpha.flatten(1).amax(1) > 0.5).sum())
            print(f"step {step}: loss {loss.item():.3f}, {masked}/{len(x)} masked on {device}")


if __name__ == "__main__":
    main()
