"""The inspection station on tiny data: good-only training, calibrate, threshold overrides,
predict's per-item errors, run's restarts / mixed sizes / rotation, modality checks."""

from __future__ import annotations

import json
import re
import shutil
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner, Result

from edgead import calibrate
from edgead.bundle import read_bundle
from edgead.cli.main import app
from edgead.data.datasets import load_image_dataset
from edgead.data.folders import NormalFolders
from edgead.data.images import MVTecFolder
from edgead.errors import BackendUnavailableError, ConfigError, DataError
from edgead.runtime import Detector
from edgead.runtime import detector as detector_module
from edgead.runtime.loop import JsonlWriter
from tests.helpers.data import SYNTHETIC_DEFECTS, SYNTHETIC_TRAIN, make_synthetic_mvtec
from tests.helpers.tiny_detectors import synthetic_images, tiny_bundle


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def _write_rgb(folder: Path, images: list[np.ndarray], prefix: str = "img") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        assert cv2.imwrite(str(folder / f"{prefix}_{i:03d}.png"), image[:, :, ::-1])
    return folder


@pytest.fixture(scope="module")
def bundle() -> Path:
    return tiny_bundle("onnx")


# ------------------------------------------------------------------------- good parts only


def test_good_only_layouts_load(tmp_path: Path) -> None:
    root = make_synthetic_mvtec(tmp_path / "cat")
    shutil.rmtree(root / "test")
    shutil.rmtree(root / "ground_truth")
    data = load_image_dataset(root, 32)  # MVTec layout with train/good only
    assert isinstance(data, MVTecFolder) and len(data.train_images()) == SYNTHETIC_TRAIN
    assert len(data.test_set()) == 0 and not data.has_masks
    flat = load_image_dataset(root / "train" / "good", 32)  # a plain folder of good images
    assert isinstance(flat, NormalFolders) and len(flat.train_paths) == SYNTHETIC_TRAIN


def test_custom_folder_names_with_masks(tmp_path: Path) -> None:
    root = make_synthetic_mvtec(tmp_path / "cat")
    data = load_image_dataset(
        root / "train" / "good",
        32,
        normal_test_dir=str(root / "test" / "good"),
        abnormal_dir=str(root / "test" / "scratch"),
        mask_dir=str(root / "ground_truth" / "scratch"),
    )
    test = data.test_set()
    assert list(test.labels) == [0, 0, 0] + [1] * SYNTHETIC_DEFECTS["scratch"]
    assert test.masks_array().shape == (len(test), 32, 32) and test.masks_array()[-1].any()
    assert data.describe()["kind"] == "folders"
    (root / "ground_truth" / "scratch" / "001_mask.png").unlink()
    with pytest.raises(DataError, match="no mask for .*001"):
        NormalFolders(
            root / "train" / "good",
            32,
            abnormal_dir=root / "test" / "scratch",
            mask_dir=root / "ground_truth" / "scratch",
        )
    with pytest.raises(ConfigError, match="--abnormal-dir"):
        NormalFolders(root / "train" / "good", 32, mask_dir=root / "ground_truth")


def test_cli_trains_and_exports_from_good_images_only(tmp_path: Path) -> None:
    root = make_synthetic_mvtec(tmp_path / "cat")
    good = root / "train" / "good"
    run = tmp_path / "run"
    result = _invoke(
        "train",
        "patchcore",
        "--normal-dir",
        str(good),
        "--out",
        str(run),
        "--image-size",
        "32",
        "--set",
        "pretrained=false",
        "--set",
        "val_fraction=0.3",
        "--coreset-ratio",
        "0.5",
        "--json",
    )
    assert result.exit_code == 0, result.output
    meta = json.loads(result.stdout)
    assert meta["data"]["kind"] == "folders" and meta["data"]["n_val"] == 2
    assert meta["threshold"]["policy"].startswith("percentile")
    out = tmp_path / "m.edgead"
    exported = _invoke("export", str(run), "--out", str(out), "--index", "flat")
    assert exported.exit_code == 0, exported.output
    assert read_bundle(out).manifest.metrics == {}  # no labelled test data: no metrics
    evaluated = _invoke("eval", str(run))
    assert evaluated.exit_code == 2 and "no labelled test images" in " ".join(
        evaluated.stderr.split()
    )
    both = _invoke("train", "patchcore", "--data", str(root), "--normal-dir", str(good), "-o", "x")
    assert both.exit_code == 2 and "not both" in " ".join(both.stderr.split())


# ------------------------------------------------------------------------------- calibrate


def test_threshold_for_fpr() -> None:
    scores = np.arange(2000, dtype=np.float64)
    for fpr in (0.0, 0.005, 0.05, 0.2):  # >= 10 expected above the threshold: empirical
        thr = calibrate.threshold_for_fpr(scores, fpr)
        assert np.mean(scores >= thr) == pytest.approx(fpr)
    small = np.random.default_rng(0).normal(10.0, 1.0, size=14)
    thr = calibrate.threshold_for_fpr(small, 0.01)  # 14 scores at 1 %: the Gaussian tail
    assert thr == pytest.approx(small.mean() + 2.3263 * small.std(ddof=1), rel=1e-4)
    assert thr > small.max()
    with pytest.raises(ConfigError):
        calibrate.threshold_for_fpr(scores, 1.0)


def test_calibrate_rewrites_only_the_manifest(bundle: Path, tmp_path: Path) -> None:
    good = _write_rgb(tmp_path / "good", synthetic_images(40, seed=11))
    bad = _write_rgb(tmp_path / "bad", synthetic_images(10, seed=12, anomalous=True))
    out = tmp_path / "site.edgead"
    result = _invoke(
        "calibrate",
        str(bundle),
        "--good",
        str(good),
        "--defects",
        str(bad),
        "--target-fpr",
        "0.05",
        "--out",
        str(out),
        "--json",
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["policy"] == "target-fpr:0.05" and record["n_good"] == 40
    assert record["fpr_on_good"] <= 0.05 and record["recall_on_defects"] >= 0.9
    assert sum(record["histogram"]["good"]) == 40 and sum(record["histogram"]["defects"]) == 10
    old, new = read_bundle(bundle), read_bundle(out)  # verified: hashes re-made
    assert new.manifest.threshold == pytest.approx(record["new_threshold"])
    assert new.manifest.export["site_calibration"]["old_threshold"] == old.manifest.threshold
    assert new.manifest.normalisation["threshold"] == new.manifest.threshold
    assert old.members == new.members  # graphs, index and arrays byte for byte
    with zipfile.ZipFile(out) as zf:
        assert sorted(zf.namelist()) == sorted([*old.members, "manifest.json"])
    with Detector.load(out, device="cpu") as det:
        flagged = [r.is_anomaly for r in det(synthetic_images(40, seed=11), channel_order="RGB")]
    assert np.mean(flagged) == pytest.approx(record["fpr_on_good"])


def test_calibrate_option_errors(bundle: Path, tmp_path: Path) -> None:
    good = _write_rgb(tmp_path / "good", synthetic_images(4, seed=1))
    out = str(tmp_path / "o.edgead")
    cases = [
        (["--policy", "f1"], "needs defective images"),
        (["--policy", "median"], "f1 or percentile"),
        (["--policy", "f1", "--target-fpr", "0.1"], "not both"),
        (["--target-fpr", "1.5"], r"\[0, 1\)"),
    ]
    for extra, message in cases:
        result = _invoke("calibrate", str(bundle), "--good", str(good), "--out", out, *extra)
        assert result.exit_code == 2, (extra, result.output)
        assert re.search(message, " ".join(result.stderr.split())), (extra, result.stderr)
    missing = _invoke("calibrate", str(bundle), "--good", str(tmp_path / "nope"), "--out", out)
    assert missing.exit_code == 2 and "does not exist" in missing.stderr
    assert not Path(out).exists()


# ---------------------------------------------------------------------- threshold overrides


def test_threshold_and_sensitivity_overrides(bundle: Path) -> None:
    images = synthetic_images(6, seed=3) + synthetic_images(6, seed=4, anomalous=True)
    with Detector.load(bundle, device="cpu") as det:
        base = det(images, channel_order="RGB")
        thr, norm = det.manifest.threshold, det.manifest.normalisation
    raw = np.array([r.raw_score for r in base])
    with Detector.load(bundle, device="cpu", sensitivity=0.5) as det:
        assert det.manifest.threshold == pytest.approx(thr)
    middle = float(np.median(raw))
    with Detector.load(bundle, device="cpu", threshold=middle) as det:
        res = det(images, channel_order="RGB")
    assert [r.is_anomaly for r in res] == list(raw >= middle)
    assert all((r.score >= 0.5) == r.is_anomaly for r in res)
    with Detector.load(bundle, device="cpu", sensitivity=1.0) as det:
        span = float(norm["max"]) - float(norm["min"])
        assert det.manifest.threshold == pytest.approx(thr - 0.5 * span)
    with pytest.raises(ConfigError, match="not both"):
        Detector.load(bundle, threshold=1.0, sensitivity=0.5)
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        Detector.load(bundle, sensitivity=2.0)


def test_wrong_modality_is_refused_before_any_backend_loads(
    bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(*_args: object) -> None:
        raise AssertionError("a backend was loaded")

    for name in list(detector_module.BACKEND_FACTORIES):
        monkeypatch.setitem(detector_module.BACKEND_FACTORIES, name, never)
    with pytest.raises(ConfigError, match="image bundle .* table rows were given"):
        Detector.load(bundle, modality="tabular")
    result = _invoke("predict", str(bundle), "rows.csv")
    assert result.exit_code == 2 and "table rows were given" in " ".join(result.stderr.split())


def test_auto_device_fallbacks_are_info(
    bundle: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def absent(*_args: object) -> None:
        raise BackendUnavailableError("no GPU here")

    monkeypatch.setitem(detector_module.BACKEND_FACTORIES, "openvino", absent)
    with caplog.at_level("INFO", logger="edgead.runtime.detector"):
        Detector.load(bundle, device="auto").close()
    fallback = [r for r in caplog.records if "fallback" in r.getMessage()]
    assert fallback and all(r.levelname == "INFO" for r in fallback)


# --------------------------------------------------------------------------------- predict


def test_predict_reports_bad_items_and_scores_the_rest(bundle: Path, tmp_path: Path) -> None:
    folder = _write_rgb(tmp_path / "in", synthetic_images(2, seed=5))
    (folder / "img_bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    result = _invoke("predict", str(bundle), str(folder), "--json", "--device", "cpu")
    assert result.exit_code == 1
    out = json.loads(result.stdout)
    assert out["n_failed"] == 1 and len(out["results"]) == 3
    bad = [r for r in out["results"] if "error" in r]
    assert bad[0]["item"].endswith("img_bad.png") and "truncated or corrupt" in bad[0]["error"]
    assert sum(r.get("raw_score") is not None for r in out["results"]) == 2
    deep = tmp_path / ("a_very_long_folder_name_" * 6) / "in"
    shutil.copytree(folder, deep)
    table = _invoke("predict", str(bundle), str(deep / "img_000.png"), "--device", "cpu")
    assert table.exit_code == 0 and "img_000.png" in table.stdout  # names kept from the right


# ------------------------------------------------------------------------------------- run


def test_run_folder_mixed_sizes_corrupt_file_restart(bundle: Path, tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    _write_rgb(frames, synthetic_images(3, seed=6), "a")
    big = [cv2.resize(im, (48, 40)) for im in synthetic_images(2, seed=7, anomalous=True)]
    _write_rgb(frames, big, "b")  # a second image size in the same folder
    (frames / "c_broken.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    common = ["--source", str(frames), "--out", str(out), "--device", "cpu", "--status-every", "0"]
    first = _invoke("run", str(bundle), *common, "--max-frames", "3", "--threshold", "0.0")
    assert first.exit_code == 0, first.output
    second = _invoke("run", str(bundle), *common, "--resume", "--threshold", "0.0")
    assert second.exit_code == 0, second.output
    lines = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["source"] for r in lines) == sorted(p.name for p in frames.iterdir())
    assert len({r["run_id"] for r in lines}) == 2
    assert [r["status"] for r in lines].count("corrupt") == 1
    ok = [r for r in lines if r["status"] == "ok"]
    assert all(r["is_anomaly"] for r in ok)  # threshold 0: every scored frame is flagged
    images = [r["image"] for r in ok]
    assert len(images) == len(set(images)) == 5 == len(list((out / "anomalies").glob("*.jpg")))


def test_results_rotate_by_size(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    writer = JsonlWriter(path, rotate_bytes=200, rotate_keep=2)
    for i in range(40):
        writer.write({"seq": i, "pad": "x" * 20})
    writer.close()
    kept = [path.with_name("results.jsonl.2"), path.with_name("results.jsonl.1"), path]
    assert all(p.exists() for p in kept) and not path.with_name("results.jsonl.3").exists()
    seqs = [json.loads(x)["seq"] for p in kept for x in p.read_text().splitlines()]
    assert seqs == list(range(seqs[0], 40)) and all(p.stat().st_size <= 200 for p in kept)


def test_cli_run_publishes_every_result_to_mqtt(bundle: Path, tmp_path: Path) -> None:
    from tests._broker import Mosquitto, Subscriber, first_occurrences

    frames = _write_rgb(tmp_path / "frames", synthetic_images(4, seed=8))
    broker = Mosquitto(tmp_path / "broker").start()
    subscriber = Subscriber(broker.port, "cell/7")
    try:
        out = tmp_path / "out"
        result = _invoke(
            "run",
            str(bundle),
            "--source",
            str(frames),
            "--out",
            str(out),
            "--device",
            "cpu",
            "--status-every",
            "0",
            "--mqtt",
            f"{broker.url_base}/cell/7",
        )
        assert result.exit_code == 0, result.output
        lines = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
        got = subscriber.wait_for(len(lines), timeout_s=20)
        assert first_occurrences(got) == [(r["run_id"], r["seq"]) for r in lines]
        assert got[0] == lines[0]  # the same record on both outputs
        assert list((out / "outbox" / "mqtt").iterdir()) == []  # all delivered
    finally:
        subscriber.close()
        broker.stop()
    bad = _invoke("run", str(bundle), "--source", str(frames), "--mqtt", "mqtt://h:1883/t")
    assert bad.exit_code == 2 and "--out or --outbox" in " ".join(bad.stderr.split())
