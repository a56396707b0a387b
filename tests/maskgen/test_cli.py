"""The maskgen command line: preview, demo and replay, on real files."""

from __future__ import annotations

import json

import cv2
import numpy as np
from typer.testing import CliRunner

from maskgen.cli import app
from maskgen.fabric import shadow_reach
from maskgen.io import read_image
from maskgen.shapes import COVERAGES, FAMILIES, FaceFrame

runner = CliRunner(env={"COLUMNS": "400", "NO_COLOR": "1"})


def test_help_lists_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("preview", "demo", "replay"):
        assert command in result.output


def test_preview_writes_a_contact_sheet_of_every_family_and_coverage(tmp_path) -> None:
    out = tmp_path / "sheet.png"
    result = runner.invoke(app, ["preview", str(out), "--colours", "1", "--cell", "64"])
    assert result.exit_code == 0, result.output
    sheet = read_image(out)
    assert sheet.shape[0] == len(FAMILIES) * 64 + 22
    assert sheet.shape[1] == len(COVERAGES) * 64
    # Each tile holds a masked face: not a flat colour.
    tiles = sheet[22:].reshape(len(FAMILIES), 64, len(COVERAGES), 64, 3)
    assert (tiles.std(axis=(1, 3, 4)) > 10).all()


def test_demo_then_replay_reproduces_every_image_byte_for_byte(tmp_path) -> None:
    demo_dir = tmp_path / "demo"
    result = runner.invoke(app, ["demo", str(demo_dir), "--identities", "2",
                                 "--images-per-identity", "2", "--seed", "3"])  # fmt: skip
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (demo_dir / "manifest.jsonl").read_text().splitlines()]
    assert len(records) == 8
    for record in records:
        masked = read_image(demo_dir / record["output"])
        clean = read_image(demo_dir / record["input"])
        occlusion = cv2.imread(str(demo_dir / record["occlusion"]), cv2.IMREAD_GRAYSCALE)
        changed = np.any(masked != clean, axis=2)
        assert changed.any()
        # Pixels beyond the mask and its contact shadow's reach on the skin are untouched.
        reach = shadow_reach(FaceFrame.from_landmarks(np.array(record["landmarks"])).unit)
        near = cv2.dilate((occlusion > 0).astype(np.uint8), np.ones((2 * reach + 1,) * 2, np.uint8))
        assert not changed[near == 0].any()
    assert (demo_dir / "contact_sheet.png").stat().st_size > 10_000
    summary = json.loads((demo_dir / "summary.json").read_text())
    assert summary["written"] == 8

    replay_dir = tmp_path / "replay"
    result = runner.invoke(app, ["replay", str(demo_dir / "manifest.jsonl"), str(replay_dir)])
    assert result.exit_code == 0, result.output
    for record in records:
        original = (demo_dir / record["output"]).read_bytes()
        assert (replay_dir / record["output"]).read_bytes() == original


def test_replay_reports_a_bad_record_with_its_line(tmp_path) -> None:
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text('{"input": "a.png", "output": "b.png", "landmarks": [], "params": '
                        '{"family": "balaclava"}}\n')  # fmt: skip
    result = runner.invoke(app, ["replay", str(manifest), str(tmp_path / "out")])
    assert result.exit_code != 0
    assert "manifest.jsonl:1" in result.output


def test_replay_reports_a_bad_jpeg_entry_with_its_line(tmp_path) -> None:
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text('{"input": "a.png", "output": "b.png", "landmarks": [], "params": null, '
                        '"jpeg": "maybe"}\n')  # fmt: skip
    result = runner.invoke(app, ["replay", str(manifest), str(tmp_path / "out")])
    assert result.exit_code != 0
    assert "manifest.jsonl:1" in result.output and "jpeg" in result.output
