"""``benchmarks/gpu_check.py`` stays working while no GPU is lent: its smoke run on the CPU
reports every part, with finite figures and a JSON summary that parses."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def _load() -> ModuleType:
    """The script as a module (registered first: its dataclasses look their module up)."""
    if "gpu_check" in sys.modules:
        return sys.modules["gpu_check"]
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module
    spec.loader.exec_module(module)
    return module


def _numbers(figures: dict) -> dict[str, float]:
    return {k: v for k, v in figures.items() if isinstance(v, int | float)}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("gpu_check") / "summary.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--device", "cpu", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return json.loads(out.read_text()), proc.stdout


def test_every_part_reports_finite_figures(smoke: tuple[dict, str]) -> None:
    summary, _ = smoke
    module = _load()
    assert summary["ok"] and summary["smoke"] and summary["device"] == "cpu"
    assert list(summary["parts"]) == list(module.PARTS)
    for name, part in summary["parts"].items():
        assert part["ok"] and part["error"] is None, (name, part["error"])
        assert part["peak_gpu_memory_bytes"] is None  # no GPU: null, not 0
        numbers = _numbers(part["figures"])
        assert numbers or name == "device", name
        bad = {k: v for k, v in numbers.items() if not math.isfinite(v)}
        assert not bad, (name, bad)


def test_figures_say_what_each_part_checked(smoke: tuple[dict, str]) -> None:
    parts = smoke[0]["parts"]
    mask = parts["mask"]["figures"]
    for spec in ("default", "solid"):
        assert mask[f"{spec}.aligned_landmarks.images_per_s"] > 0
        assert 0.9 < mask[f"{spec}.parity_iou_mean"] <= 1.0
        assert mask[f"{spec}.device_vs_cpu_max_abs_diff"] == 0.0  # the device is the CPU here
    share = parts["share"]["figures"]
    assert {"fixed_batch.device_masking_share_pct", "loader.workers_masking_share_pct",
            "loader.device_masking_share_pct"} <= set(share)  # fmt: skip
    tp = parts["throughput"]["figures"]
    for amp in ("bf16", "fp16"):
        for stage in ("teacher", "student"):
            assert tp[f"tiny.{amp}.{stage}.loss_finite"] is True
            assert tp[f"tiny.{amp}.{stage}.weights_updated"] is True
    assert tp["tiny.fp16.teacher.scaler_scale"] > 0
    train = parts["train"]["figures"]
    assert train["interrupted_at_step"] < train["resumed_final_step"]
    assert train["resumed.teacher_skipped"] is True
    ev = parts["eval"]["figures"]
    assert [ev[f"{p}.pairs_scored"] for p in ("nm-nm", "m-nm", "m-m")] == [20, 20, 20]


def test_printout_is_one_line_per_figure_then_the_json(smoke: tuple[dict, str]) -> None:
    summary, stdout = smoke
    printed = stdout[stdout.index("\n{") + 1 :]
    assert json.loads(printed) == summary
    lines = stdout.splitlines()
    for name, part in summary["parts"].items():
        for figure in part["figures"]:
            assert sum(ln.startswith(name) and f" {figure} " in ln for ln in lines) == 1, figure


def test_a_failing_part_is_reported_and_the_next_part_runs(tmp_path: Path) -> None:
    module = _load()
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")  # the eval part cannot make its scratch folder in it
    out = tmp_path / "summary.json"
    argv = ["--smoke", "--device", "cpu", "--parts", "eval,device", "--workdir",
            str(not_a_folder), "--json", str(out)]  # fmt: skip
    assert module.main(argv) == 1
    summary = json.loads(out.read_text())
    assert not summary["ok"] and list(summary["parts"]) == ["eval", "device"]
    assert not summary["parts"]["eval"]["ok"] and "Error" in summary["parts"]["eval"]["error"]
    assert summary["parts"]["device"]["ok"]
    with pytest.raises(SystemExit):
        module.main(["--parts", "mask,nope"])
