"""Time series: loader, sliding windows and ring buffer, window detectors, window bundles, and
`edgead predict` / `edgead run` on a sensor CSV (tiny synthetic data, a few epochs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from edgead.data.timeseries import detect_delimiter, load_series, series_options
from edgead.errors import ConfigError, DataError
from edgead.models.base import create_detector
from edgead.ops.windows import RingBuffer, sliding_windows, window_end_rows

torch.set_num_threads(1)

WINDOW_MODELS = ("window_ae", "window_vae", "conv_ae_1d", "mae_1d")
TINY = {"window": 8, "epochs": 2, "batch_size": 16}
#: mae_1d: 4 time patches of 2 rows, half hidden per draw, a 16-wide encoder
TINY_MAE = {**TINY, "patch_rows": 2, "score_draws": 4, "embed_dim": 16, "decoder_dim": 8}


def _tiny(name: str) -> dict:
    return TINY_MAE if name == "mae_1d" else TINY


FEATURES = ("flow", "pressure", "temp")


def _rows(n: int = 96, seed: int = 0) -> np.ndarray:
    """float32 (n, 3): two sines and a slow ramp, plus noise (a toy sensor recording)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=np.float64)
    rows = np.stack([np.sin(t / 4), np.cos(t / 6), 20 + t / 50], axis=1)
    return (rows + 0.05 * rng.normal(size=rows.shape)).astype(np.float32)


def _write_csv(path: Path, rows: np.ndarray, labels: np.ndarray | None, sep: str = ";") -> Path:
    header = ["datetime", *FEATURES] + (["anomaly"] if labels is not None else [])
    lines = [sep.join(header)]
    for i, row in enumerate(rows):
        cells = [f"2020-01-01 00:{i // 60:02d}:{i % 60:02d}", *(f"{v:.6f}" for v in row)]
        if labels is not None:
            cells.append(str(int(labels[i])))
        lines.append(sep.join(cells))
    path.write_text("\n".join(lines) + "\n")
    return path


# ---------------------------------------------------------------- windows and ring buffer
@pytest.mark.parametrize("stride", [1, 3])
def test_windows_end_rows_and_ring_buffer_agree(stride: int) -> None:
    rows = _rows(30)
    windows = sliding_windows(rows, 5, stride)
    ends = window_end_rows(len(rows), 5, stride)
    assert windows.shape == (len(ends), 5, 3) and ends[0] == 4
    for window, end in zip(windows, ends, strict=True):
        np.testing.assert_array_equal(window, rows[end - 4 : end + 1])  # nothing after `end`
    buffer = RingBuffer(5, 3, stride)
    pushed = [(i, buffer.push(row)) for i, row in enumerate(rows)]
    emitted = [(i, w) for i, w in pushed if w is not None]
    assert [i for i, _ in emitted] == ends.tolist()
    for (_, got), want in zip(emitted, windows, strict=True):
        np.testing.assert_array_equal(got, want)


def test_ring_buffer_and_windows_reject_bad_input() -> None:
    with pytest.raises(DataError, match="3 finite numbers"):
        RingBuffer(4, 3).push([1.0, 2.0])
    with pytest.raises(DataError, match="NaN"):
        RingBuffer(4, 3).push([1.0, np.nan, 2.0])
    with pytest.raises(DataError, match="fewer than one window"):
        sliding_windows(_rows(3), 5)
    with pytest.raises(ConfigError, match="length must be >= 2"):
        window_end_rows(10, 1)


# ---------------------------------------------------------------- loader
@pytest.mark.parametrize("sep", [";", ",", "\t"])
def test_load_series_detects_delimiter_time_and_labels(tmp_path: Path, sep: str) -> None:
    rows = _rows(20)
    labels = np.zeros(20, dtype=int)
    labels[12:15] = 1
    path = _write_csv(tmp_path / "rec.csv", rows, labels, sep)
    assert detect_delimiter(path) == sep
    series = load_series(path, label_column="anomaly")
    assert series.feature_names == FEATURES
    assert series.times is not None and series.times[0] == "2020-01-01 00:00:00"
    np.testing.assert_allclose(series.values, rows, atol=1e-5)
    np.testing.assert_array_equal(series.labels, labels)
    picked = load_series(path, feature_columns=["temp", "flow"], drop_columns=["anomaly"])
    assert picked.feature_names == ("temp", "flow") and picked.labels is None


def test_load_series_errors_name_the_problem(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "rec.csv", _rows(10), None)
    with pytest.raises(DataError, match="non-numeric column.*datetime"):
        load_series(path, time_column=None)
    with pytest.raises(DataError, match="feature column.*'nope'"):
        load_series(path, feature_columns=["nope"])
    with pytest.raises(DataError, match="no label column 'anomaly'"):
        load_series(path, label_column="anomaly")
    with pytest.raises(ConfigError, match="unknown time-series data option"):
        series_options({"fit_row": 3})


# ---------------------------------------------------------------- detectors and bundles
@pytest.mark.parametrize("name", WINDOW_MODELS)
def test_window_detector_fit_score_state_and_bundle(name: str, tmp_path: Path) -> None:
    from edgead.export.exporter import export_detector
    from edgead.runtime import Detector

    rows = _rows()
    det = create_detector(name, _tiny(name))
    det.fit(rows, seed=0)
    scores = det.score(rows).scores
    assert scores.shape == (len(rows) - 7,) and np.isfinite(scores).all()
    np.testing.assert_allclose(det.score(det.windows_of(rows)).scores, scores, rtol=1e-6)
    again = create_detector(name, _tiny(name))
    again.load_state_arrays(det.state_arrays())
    np.testing.assert_allclose(again.score(rows).scores, scores, rtol=1e-6)

    threshold = float(np.quantile(scores, 0.9))
    meta = {
        "threshold": {"value": threshold, "policy": "test"},
        "normalisation": {"min": 0.0, "max": float(scores.max()), "threshold": threshold},
    }
    bundle = tmp_path / "w.edgead"
    manifest = export_detector(det, meta, "onnx", "fp32", bundle)
    assert manifest.modality == "timeseries" and manifest.input.shape == (None, 8, 3)
    assert manifest.postprocess == {"kind": "window", "window": 8, "stride": 1}
    with Detector.load(bundle, device="cpu", backend="onnxruntime", threads=1) as runtime:
        series = runtime.score_series(rows)
        np.testing.assert_array_equal(series.rows, np.arange(7, len(rows)))
        np.testing.assert_allclose(series.raw_scores, scores, rtol=1e-4, atol=1e-6)
        np.testing.assert_array_equal(series.is_anomaly, series.raw_scores >= threshold)
        pushed = [runtime.push(row, stream="a") for row in rows]
        assert all(r is None for r in pushed[:7])
        # batch 1 vs batch 256 through the graph: float32 rounding only
        np.testing.assert_allclose(
            [r.raw_score for r in pushed[7:]], series.raw_scores, rtol=1e-5, atol=1e-7
        )
        assert runtime.push(rows[0], stream="b") is None  # each stream has its own buffer
        with pytest.raises(DataError, match="score_series"):
            runtime.score_rows(rows)


def test_conv_ae_1d_flags_a_level_shift() -> None:
    rows = _rows(160)
    det = create_detector("conv_ae_1d", {"window": 8, "epochs": 40, "batch_size": 16})
    det.fit(rows[:120], seed=0)
    normal = det.score(rows[:120]).scores
    shifted = rows[120:].copy()
    shifted[:, 0] += 3.0  # flow jumps by ~4 standard deviations
    anomalous = det.score(np.concatenate([rows[112:120], shifted])).scores
    assert np.median(anomalous) > np.max(normal)


def test_mae_1d_fixed_masks_and_a_level_shift() -> None:
    rows = _rows(160)
    det = create_detector("mae_1d", {**TINY_MAE, "epochs": 40})
    det.fit(rows[:120], seed=0)
    hidden = det.net.hidden.numpy()  # the graph's constant masks: 4 draws over 4 patches
    assert hidden.shape == (4, 4) and (hidden.sum(axis=1) == 2).all()  # half hidden per draw
    np.testing.assert_array_equal(hidden.sum(axis=0), np.full(4, 2))  # each patch twice
    normal = det.score(rows[:120]).scores
    np.testing.assert_array_equal(normal, det.score(rows[:120]).scores)  # no random masks
    shifted = rows[120:].copy()
    shifted[:, 0] += 3.0
    anomalous = det.score(np.concatenate([rows[112:120], shifted])).scores
    assert np.median(anomalous) > np.max(normal)


def test_window_configs_are_checked() -> None:
    with pytest.raises(ConfigError, match="patch_rows dividing window"):
        create_detector("mae_1d", {"window": 8, "patch_rows": 3})
    with pytest.raises(ConfigError, match="dividing window / patch_rows"):
        create_detector("mae_1d", {"window": 10, "patch_rows": 2, "mask_ratio": 0.75})
    with pytest.raises(ConfigError, match="multiple of 4"):
        create_detector("conv_ae_1d", {"window": 10})
    with pytest.raises(ConfigError, match="window length"):
        create_detector("window_ae", {"window": 1})
    det = create_detector("window_ae", TINY)
    with pytest.raises(DataError, match="at least window"):
        det.fit(_rows(9))


# ---------------------------------------------------------------- CLI
def _invoke(*args: str) -> object:
    from edgead.cli.main import app

    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_cli_train_export_predict_and_run_give_the_same_row_scores(tmp_path: Path) -> None:
    rows = _rows(120)
    labels = np.zeros(120, dtype=int)
    labels[100:] = 1
    rows[100:, 0] += 3.0
    csv = _write_csv(tmp_path / "rec.csv", rows, labels)
    run, bundle = tmp_path / "run", tmp_path / "w.edgead"
    _invoke(
        "train", "conv-ae-1d", "--data", str(csv), "--out", str(run), "--label-column",
        "anomaly", "--data-option", "fit_rows=80", "--set", "window=8", "--set", "epochs=3",
    )  # fmt: skip
    meta = json.loads((run / "run.json").read_text())
    assert meta["data"]["n_train"] + meta["data"]["n_val"] == 80
    _invoke("export", str(run), "--out", str(bundle))
    predicted = json.loads(_invoke("predict", str(bundle), str(csv), "--json").stdout)["results"]
    replay = _invoke("run", str(bundle), "--source", str(csv), "--device", "cpu", "--fps", "0")
    ran = [json.loads(line) for line in replay.stdout.splitlines() if line.startswith("{")]
    assert [p["row"] for p in predicted] == [r["row"] for r in ran] == list(range(7, 120))
    np.testing.assert_allclose(
        [p["raw_score"] for p in predicted], [r["raw_score"] for r in ran], rtol=1e-6
    )
    assert ran[0]["time"] == "2020-01-01 00:00:07"
    # JSON lines on stdin, keyed by feature names, through the same ring buffer
    records = [dict(zip(FEATURES, map(float, r), strict=True)) for r in rows]
    lines = "".join(json.dumps(record) + "\n" for record in records)
    from edgead.cli.main import app

    stdin_run = CliRunner().invoke(app, ["run", str(bundle), "--source", "-"], input=lines)
    assert stdin_run.exit_code == 0, stdin_run.output
    streamed = [json.loads(x) for x in stdin_run.stdout.splitlines() if x.startswith("{")]
    np.testing.assert_allclose(
        [s["raw_score"] for s in streamed], [r["raw_score"] for r in ran], rtol=1e-6
    )


_TORCH_FREE = r"""
import sys
for name in ("torch", "torchvision", "sklearn", "timm", "scipy"):
    sys.modules[name] = None
import numpy as np
from edgead.runtime import Detector
from edgead.cli._series import csv_replay
from edgead.runtime.rows_source import run_rows
det = Detector.load(sys.argv[1], device="cpu", threads=1)
out = []
summary = run_rows(det, csv_replay(sys.argv[2], det.manifest.input.feature_names), out.append)
print(summary.scored, summary.waiting, out[-1]["raw_score"])
"""


def test_row_replay_runs_without_torch(tmp_path: Path) -> None:
    from edgead.export.exporter import export_detector

    rows = _rows(40)
    det = create_detector("window_ae", TINY)
    det.fit(rows)
    bundle = tmp_path / "w.edgead"
    export_detector(det, {}, "onnx", "fp32", bundle)
    csv = _write_csv(tmp_path / "rec.csv", rows, None)
    proc = subprocess.run(
        [sys.executable, "-c", _TORCH_FREE, str(bundle), str(csv)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    scored, waiting, last = proc.stdout.split()
    assert (int(scored), int(waiting)) == (33, 7)
    assert float(last) == pytest.approx(float(det.score(rows).scores[-1]), rel=1e-4)
