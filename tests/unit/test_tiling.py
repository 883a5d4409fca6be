"""Tiling and non-square input: tile geometry, stitching, and a tiled PatchCore / PaDiM run whose
bundle scores frames like the run (tiny random backbones, synthetic 40 x 48 px parts)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner, Result

from edgead.cli.main import app
from edgead.errors import ConfigError
from edgead.ops.tiling import Tiling, cut_tiles, merge_tile_scores, stitch_maps
from tests.helpers.data import SYNTHETIC_HW, make_synthetic_mvtec


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_tiles_cover_the_frame_edge_aligned() -> None:
    tiling = Tiling((512, 512), 224, 0.25).validate()
    assert [y for y, x in tiling.origins if x == 0] == [0, 168, 288]
    assert Tiling((512, 512), 224, 0.0).origins[-1] == (288, 288)
    wide = Tiling((224, 600), 224)  # non-square: one row of tiles
    assert [y for y, _ in wide.origins] == [0, 0, 0] and wide.origins[-1] == (0, 376)
    for bad in (Tiling((100, 100), 224), Tiling((512, 512), 224, 0.95), Tiling((64, 64), 8)):
        with pytest.raises(ConfigError):
            bad.validate()


def test_cut_and_stitch_round_trip() -> None:
    tiling = Tiling((40, 48), 32, 0.5)
    image = np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)
    tiles = cut_tiles(image, tiling)
    assert tiles.shape == (len(tiling.origins), 32, 32, 3)
    # a map equal to the image's first channel survives stitching (means of equal values)
    stitched = stitch_maps(tiles[..., 0].astype(np.float32), tiling)
    np.testing.assert_allclose(stitched, image[..., 0])
    scores, maps = merge_tile_scores(
        np.arange(2 * len(tiling.origins), dtype=np.float32), None, 2, tiling
    )
    assert maps is None and list(scores) == [len(tiling.origins) - 1, 2 * len(tiling.origins) - 1]


@pytest.mark.parametrize("detector", ["patchcore", "padim"])
def test_tiled_non_square_run_and_bundle_agree(detector: str, tmp_path: Path) -> None:
    from edgead.bundle import read_bundle
    from edgead.data.datasets import load_image_dataset
    from edgead.rundir import load_run
    from edgead.runtime import Detector
    from edgead.training import score_tiled

    data = make_synthetic_mvtec(tmp_path / "cat")
    run = tmp_path / "run"
    height, width = SYNTHETIC_HW
    extra = (
        ["--coreset-ratio", "0.5", "--set", "val_fraction=0.3"] if detector == "patchcore" else []
    )
    result = _invoke(
        "train",
        detector,
        "--data",
        str(data),
        "--out",
        str(run),
        "--image-size",
        f"{height},{width}",
        "--tile",
        "32",
        "--tile-overlap",
        "0.5",
        "--set",
        "pretrained=false",
        "--json",
        *extra,
    )
    assert result.exit_code == 0, result.output
    meta = json.loads(result.stdout)
    assert meta["tiling"] == {"frame_size": [height, width], "tile": 32, "overlap": 0.5}
    assert meta["data"]["n_fit_tiles"] == meta["data"]["n_train"] * 4  # 2 x 2 tiles per frame
    evaluated = _invoke("eval", str(run), "--json")
    assert evaluated.exit_code == 0, evaluated.output
    assert "pixel_auroc" in json.loads(evaluated.stdout)
    bundle = tmp_path / "tiled.edgead"
    exported = _invoke("export", str(run), "--out", str(bundle))
    assert exported.exit_code == 0, exported.output
    manifest = read_bundle(bundle).manifest
    assert manifest.postprocess["tiling"]["frame_size"] == [height, width]
    assert manifest.input.image_size == (32, 32)
    model, _ = load_run(run)
    test = load_image_dataset(data, (height, width)).test_set()
    frames = [test.images[i] for i in range(len(test))]
    torch_out = score_tiled(model, frames, Tiling((height, width), 32, 0.5))
    with Detector.load(bundle, device="cpu") as det:
        results = det(frames, channel_order="RGB")
    raw = np.array([r.raw_score for r in results])
    np.testing.assert_allclose(raw, torch_out.scores, rtol=1e-3, atol=1e-4)
    assert results[0].anomaly_map.shape == (height, width)
    np.testing.assert_allclose(
        results[0].anomaly_map, torch_out.anomaly_maps[0], rtol=1e-3, atol=1e-3
    )


def test_tile_options_are_checked() -> None:
    result = _invoke("train", "padim", "--data", "x", "-o", "y", "--tile", "32")
    assert result.exit_code == 2 and "--tile needs --image-size" in " ".join(result.stderr.split())
    result = _invoke("train", "padim", "--data", "x", "-o", "y", "--image-size", "4O,48")
    assert result.exit_code == 2 and "S or H,W" in " ".join(result.stderr.split())
