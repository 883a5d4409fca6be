"""One decoder: the same 16-bit, gray and RGBA files score the same through `edgead predict`,
`edgead run` (folder source) and `Detector` on `edgead.ops.decode.read_frame`.

Before the decoder moved to `edgead.ops`, `run`'s folder reader auto-contrasted 16-bit frames
by their own maximum while `predict` and training scaled them by 255/65535, so one file got two
scores. Scores are compared exactly (rel 1e-6): the three paths must decode identical pixels.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from edgead.ops.decode import decode_frame, read_frame, read_image
from edgead.runtime import Detector
from tests.helpers.tiny_detectors import SIZE_PX, fitted_tiny, parity_images, synthetic_images


def _files(folder: Path) -> dict[str, Path]:
    """16-bit colour, 8-bit gray and RGBA PNGs of one synthetic part, 40 x 48 px (resized)."""
    base = cv2.resize(synthetic_images(1, seed=11, anomalous=True)[0], (48, 40))
    bgr = base[:, :, ::-1]
    dark16 = (bgr.astype(np.uint16) * 100).astype(np.uint16)  # max ~25,500 of 65,535
    files = {
        "sixteen_bit": (dark16, "a.png"),
        "gray": (cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), "b.png"),
        "rgba": (np.dstack([bgr, np.full(bgr.shape[:2], 128, np.uint8)]), "c.png"),
    }
    out = {}
    for kind, (pixels, name) in files.items():
        sub = folder / kind
        sub.mkdir(parents=True)
        assert cv2.imwrite(str(sub / name), pixels)
        out[kind] = sub / name
    return out


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgead.export import export_detector

    det, meta = fitted_tiny()
    out = tmp_path_factory.mktemp("bundle") / "color.edgead"
    meta = {**meta, "data": {"channels": "color"}}
    export_detector(
        det, meta, "onnx", "fp32", out, parity_inputs=parity_images()[:2], index={"index": "flat"}
    )
    return out


def test_decoder_rules(tmp_path: Path) -> None:
    files = _files(tmp_path)
    sixteen = read_frame(files["sixteen_bit"])
    raw16 = cv2.imread(str(files["sixteen_bit"]), cv2.IMREAD_UNCHANGED)
    assert raw16.dtype == np.uint16 and sixteen.dtype == np.uint8
    # scaled by 255/65535, never stretched to the frame's own maximum
    np.testing.assert_array_equal(sixteen, (raw16 / 257.0 + 0.5).astype(np.uint8))
    assert sixteen.max() < 120
    assert read_frame(files["gray"]).shape == (40, 48)  # gray stays one channel
    assert read_frame(files["rgba"]).shape == (40, 48, 3)  # alpha dropped
    assert read_image(files["gray"]).shape == (40, 48, 3)
    data = files["rgba"].read_bytes()
    np.testing.assert_array_equal(decode_frame(data), read_frame(files["rgba"]))


def test_predict_run_and_detector_agree(bundle: Path, tmp_path: Path) -> None:
    from edgead.cli.main import app

    files = _files(tmp_path / "in")
    runner = CliRunner()
    for kind, path in files.items():
        res = runner.invoke(app, ["predict", str(bundle), str(path), "--device", "cpu", "--json"])
        assert res.exit_code == 0, res.output
        predicted = json.loads(res.stdout)["results"][0]["raw_score"]
        out = tmp_path / f"run_{kind}"
        res = runner.invoke(
            app,
            [
                "run",
                str(bundle),
                "--source",
                str(path.parent),
                "--out",
                str(out),
                "--device",
                "cpu",
            ],
        )
        assert res.exit_code == 0, res.output
        lines = (out / "results.jsonl").read_text().splitlines()
        assert len(lines) == 1, lines
        ran = json.loads(lines[0])["raw_score"]
        with Detector.load(bundle, device="cpu") as det:
            direct = det(read_frame(path), channel_order="BGR").raw_score
        assert predicted == pytest.approx(direct, rel=1e-6), kind
        assert ran == pytest.approx(direct, rel=1e-6), kind


def test_colour_bundle_warns_once_on_gray_frames(
    bundle: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gray = np.full((SIZE_PX, SIZE_PX), 120, np.uint8)
    with Detector.load(bundle, device="cpu") as det:
        assert det.manifest.input.trained_channels == "color"
        with caplog.at_level(logging.WARNING, logger="edgead.runtime.detector"):
            det(gray)
            det([gray, gray])
            det(np.dstack([gray] * 3))
    warned = [r for r in caplog.records if "trained on colour images" in r.getMessage()]
    assert len(warned) == 1
