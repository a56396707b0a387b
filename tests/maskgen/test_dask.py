"""``maskgen render`` on a dask.distributed cluster (joblib's dask backend), as docs/render.md
promises: a local cluster of two worker processes writes what one process writes."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest

from maskgen.dataset import RenderOptions, render_dataset
from maskgen.dataset.options import meta_dir
from maskgen.io import RecordWriter
from maskgen.synthetic import SyntheticFaces

distributed = pytest.importorskip("distributed", reason="the dask backend needs distributed")


@pytest.fixture(scope="module")
def cluster():
    local = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                     dashboard_address=None, silence_logs=40)  # fmt: skip
    with local, distributed.Client(local) as client:
        yield client


def _inputs(root: Path) -> tuple[Path, Path]:
    faces = SyntheticFaces(5, 2, seed=6)
    folder = root / "photos"
    (folder / "sub").mkdir(parents=True)
    for i in range(len(faces)):
        name = folder / ("sub" if i % 3 == 0 else "") / f"{i:02d}.png"
        cv2.imwrite(str(name), faces[i][0][:, :, ::-1])
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    rec = root / "train.rec"
    with RecordWriter(rec) as writer:
        for i in range(len(faces)):
            writer.write_image(i + 1, faces[i][0], label=i // 2)
        writer.write_header_record()
    return folder, rec


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _records(out: Path, name: str) -> list[dict]:
    lines = (meta_dir(out) / name).read_text().splitlines()
    return sorted((json.loads(x) for x in lines), key=lambda r: r.get("input", ""))


@pytest.mark.parametrize("kind", ["folder", "rec"])
def test_a_two_worker_dask_cluster_writes_what_one_process_writes(tmp_path, cluster, kind):
    from joblib import parallel_config

    folder, rec = _inputs(tmp_path)
    src = folder if kind == "folder" else rec
    name = "masked" if kind == "folder" else "masked.rec"
    options = RenderOptions(landmarks="aligned", seed=4, p=0.8, block_size=3)
    one = tmp_path / "one" / name
    render_dataset(src, one, options, workers=1, progress=False)
    many = tmp_path / "dask" / name
    with distributed.get_task_stream(cluster) as stream, parallel_config(backend="dask"):
        summary = render_dataset(src, many, options, workers=None, progress=False)
    assert summary["done"] > 0
    assert len({task["worker"] for task in stream.data}) == 2  # both workers rendered blocks
    if kind == "folder":
        assert _tree(many) == _tree(one) and len(_tree(one)) == 10
    else:
        assert many.read_bytes() == one.read_bytes()
        assert many.with_suffix(".idx").read_bytes() == one.with_suffix(".idx").read_bytes()
    assert _records(many, "manifest.jsonl") == _records(one, "manifest.jsonl")
    failures = _records(many, "failures.jsonl")
    assert failures == _records(one, "failures.jsonl")
    if kind == "folder":
        assert [Path(f["input"]).name for f in failures] == ["broken.png"]
    # A second run on the cluster resumes: nothing is rendered again, nothing changes.
    before = _tree(many.parent)
    with parallel_config(backend="dask"):
        again = render_dataset(src, many, options, workers=None, progress=False)
    assert again["done"] == 0 and again["failed"] == 0
    after = _tree(many.parent)
    assert {k: v for k, v in after.items() if "maskgen" not in k} == {
        k: v for k, v in before.items() if "maskgen" not in k
    }
