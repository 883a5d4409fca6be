"""Unit tests: PatchCore on tiny synthetic images with random-weight backbones.

A tiny backbone (strides 4 / 8, 6 / 10 channels: unlike EfficientNet) checks that the embedder
sizes itself from `feature_info`; one test runs the default efficientnet_lite0 with random
weights. Parity tolerance for ONNX Runtime / OpenVINO: 1e-4 relative to the largest value (fp32).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgead.errors import ConfigError, DataError, NotFittedError
from edgead.models.base import create_detector
from edgead.models.patchcore import PatchCore, PatchCoreEmbedder
from edgead.ops.scoring import reweight_scores
from tests.helpers.tiny_models import TinyBackbone, gradient_images, register_tiny_backbone

TINY = register_tiny_backbone("tiny_test_patchcore")
SIZE = 32
PARITY_RTOL = 1e-4


CONFIG = {"backbone": TINY, "pretrained": False, "image_size": SIZE, "coreset_ratio": 0.25}


def _images(n: int, seed: int, defect: bool = False) -> np.ndarray:
    """uint8 (n, SIZE, SIZE, 3) synthetic parts (see tests.helpers.tiny_models.gradient_images)."""
    return gradient_images(n, seed, SIZE, defect)


@pytest.fixture(scope="module")
def fitted() -> PatchCore:
    det = create_detector("patchcore", CONFIG)
    det.fit(_images(12, seed=1), seed=0)
    return det  # type: ignore[return-value]


def test_embedder_sizes_itself_from_feature_info() -> None:
    embedder = PatchCoreEmbedder(TinyBackbone().freeze(), SIZE)
    assert embedder.grid_hw == (SIZE // 4, SIZE // 4) and embedder.embedding_dim == 16
    (emb,) = embedder(torch.from_numpy(_images(2, seed=0)))
    assert emb.dtype == torch.float32 and emb.shape == (2, (SIZE // 4) ** 2, 16)


def test_embedding_is_pooled_and_upsampled_features() -> None:
    backbone = TinyBackbone().freeze()
    embedder = PatchCoreEmbedder(backbone, SIZE).eval()
    images = _images(1, seed=2)
    with torch.inference_mode():
        (emb,) = embedder(torch.from_numpy(images))
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
        x = (x - torch.tensor(backbone.mean).view(1, 3, 1, 1)) / torch.tensor(backbone.std).view(
            1, 3, 1, 1
        )
        fine, coarse = backbone(x)
        fine = F.avg_pool2d(fine, 3, 1, 1)
        coarse = F.interpolate(
            F.avg_pool2d(coarse, 3, 1, 1),
            size=fine.shape[-2:],
            mode="bilinear",
            align_corners=False,
        )
        want = torch.cat([fine, coarse], 1).flatten(2).transpose(1, 2)
    torch.testing.assert_close(emb, want, rtol=1e-5, atol=1e-5)


def test_default_backbone_random_weights() -> None:
    det = create_detector(
        "patchcore", {"pretrained": False, "image_size": 64, "coreset_ratio": 0.5}
    )
    det.fit(_images_at(4, 64), seed=0)
    out = det.score(_images_at(2, 64))
    grid = det.describe()["grid"]
    assert grid[0] == grid[1] and 64 % grid[0] == 0  # stride from feature_info
    assert out.anomaly_maps.shape == (2, 64, 64) and np.all(np.isfinite(out.scores))


def _images_at(n: int, size: int) -> np.ndarray:
    rng = np.random.default_rng(n)
    return rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def test_memory_bank_size_and_describe(fitted: PatchCore) -> None:
    n_patches = 12 * (SIZE // 4) ** 2
    bank = fitted.memory_bank_
    assert bank is not None and bank.dtype == np.float32
    assert bank.shape == (round(n_patches * 0.25), 16)
    facts = fitted.describe()
    assert facts["n_train_patches"] == n_patches and facts["memory_bank_size"] == bank.shape[0]
    assert set(fitted.fit_timings_) == {"feature_extraction_s", "coreset_s", "crossfit_s"}


def test_defects_score_higher_and_maps_localise(fitted: PatchCore) -> None:
    normal = fitted.score(_images(6, seed=3))
    rng = np.random.default_rng(9)
    defective = _images(6, seed=4)
    masks = np.zeros((6, SIZE, SIZE), bool)
    for image, mask in zip(defective, masks, strict=True):
        y, x = rng.integers(2, SIZE - 10, size=2)
        image[y : y + 8, x : x + 8] = 255
        mask[y : y + 8, x : x + 8] = True
    bad = fitted.score(defective)
    assert bad.scores.dtype == np.float32 and bad.anomaly_maps.shape == (6, SIZE, SIZE)
    assert bad.scores.min() > normal.scores.max()
    for anomaly_map, mask in zip(bad.anomaly_maps, masks, strict=True):
        assert anomaly_map[mask].mean() > anomaly_map[~mask].mean()


def test_scores_are_l2_nearest_neighbour_distances(fitted: PatchCore) -> None:
    images = _images(2, seed=5, defect=True)
    emb = fitted.embed(images)
    bank = fitted.memory_bank_
    dists = np.sqrt(((emb[:, :, None, :].astype(np.float64) - bank[None, None]) ** 2).sum(-1))
    nearest = dists.min(axis=2)  # (B, P), L2 not squared
    patch, ids = fitted.patch_distances(emb)
    np.testing.assert_allclose(patch.reshape(2, -1), nearest, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(ids, dists.argmin(axis=2))
    top3 = np.sort(nearest, axis=1)[:, -3:].mean(axis=1)  # the default score, top_k 3
    np.testing.assert_allclose(fitted.score(images).scores, top3, rtol=1e-4)


def test_top_k_score_is_the_mean_of_the_largest_patch_distances(fitted: PatchCore) -> None:
    """top_k 3: image score = mean of the three largest nearest-neighbour distances, which lies
    between the third largest and the max; top_k must not exceed the grid."""
    images = _images(2, seed=5, defect=True)
    patch, _ = fitted.patch_distances(fitted.embed(images))
    flat = np.sort(patch.reshape(2, -1), axis=1)
    det = create_detector("patchcore", {**CONFIG, "top_k": 3})
    det.load_state_arrays(fitted.state_arrays())
    got = det.score(images).scores
    np.testing.assert_allclose(got, flat[:, -3:].mean(axis=1), rtol=1e-5)
    assert np.all(got < flat[:, -1]) and np.all(got > flat[:, -3])
    with pytest.raises(ConfigError, match="top_k"):
        create_detector("patchcore", {**CONFIG, "top_k": 0})
    with pytest.raises(ConfigError, match="exceeds"):  # refused before any fit
        create_detector("patchcore", {**CONFIG, "top_k": (SIZE // 4) ** 2 + 1})
    from edgead.errors import BundleError
    from edgead.ops.scoring import parse_postprocess

    with pytest.raises(BundleError, match="top_k"):
        parse_postprocess({"kind": "nn_index", "grid": [2, 2], "score": "top_mean", "top_k": 5})


def test_full_bank_scores_training_images_zero() -> None:
    det = create_detector("patchcore", {**CONFIG, "coreset_ratio": 1.0})
    train = _images(3, seed=6)
    det.fit(train)
    assert float(det.score(train).scores.max()) < 1e-3


def test_reweighting_follows_the_paper() -> None:
    det = create_detector("patchcore", {**CONFIG, "reweight": True, "num_neighbors": 3})
    det.fit(_images(8, seed=1))
    images = _images(3, seed=7, defect=True)
    emb = det.embed(images)
    bank = det.memory_bank_
    patch, ids = det.patch_distances(emb)
    flat = patch.reshape(3, -1)
    got = det.score(images).scores
    np.testing.assert_allclose(
        got, reweight_scores(emb, flat, ids, bank, det._nn_index(), 3), rtol=1e-5
    )
    for b in range(3):  # eq. 7 by hand with brute-force neighbours
        worst = int(np.argmax(flat[b]))
        anchor = bank[ids[b, worst]]
        support = np.argsort(np.linalg.norm(bank - anchor, axis=1))[:3]
        d = np.linalg.norm(bank[support] - emb[b, worst], axis=1).astype(np.float64)
        weight = 1.0 - np.exp(d[0]) / np.exp(d).sum()
        np.testing.assert_allclose(got[b], weight * flat[b, worst], rtol=1e-4)
    assert np.all(got < flat.max(axis=1))


def test_state_round_trip(fitted: PatchCore) -> None:
    clone = create_detector("patchcore", CONFIG)
    clone.load_state_arrays(fitted.state_arrays())
    images = _images(3, seed=8, defect=True)
    np.testing.assert_array_equal(clone.score(images).scores, fitted.score(images).scores)
    with pytest.raises(DataError, match="memory bank has shape"):
        clone.load_state_arrays({"memory_bank": np.zeros((4, 7), np.float32)})
    with pytest.raises(DataError, match="lacks 'memory_bank'"):
        clone.load_state_arrays({})


def test_export_spec_contract(fitted: PatchCore) -> None:
    spec = fitted.export_spec()
    assert spec.output_names == ("embedding",) and spec.input_name == "images"
    assert spec.example_input.dtype == np.uint8 and spec.example_input.shape == (1, SIZE, SIZE, 3)
    assert spec.postprocess == {
        "kind": "nn_index",
        "grid": [SIZE // 4, SIZE // 4],
        "k": 1,
        "blur_sigma": 4.0,
        "score": "top_mean",  # the default image score: mean of the 3 largest distances
        "num_neighbors": 1,
        "top_k": 3,
    }
    np.testing.assert_array_equal(spec.arrays["memory_bank"], fitted.memory_bank_)


def test_onnx_and_openvino_parity(fitted: PatchCore, tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    spec = fitted.export_spec()
    path = tmp_path / "patchcore.onnx"
    torch.onnx.export(
        spec.module,
        (torch.from_numpy(spec.example_input),),
        str(path),
        input_names=[spec.input_name],
        output_names=list(spec.output_names),
        opset_version=17,
        dynamo=False,
        dynamic_axes={spec.input_name: {0: "batch"}},
    )
    images = _images(3, seed=5, defect=True)
    with torch.inference_mode():
        want = spec.module(torch.from_numpy(images))[0].numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(list(spec.output_names), {spec.input_name: images})
    np.testing.assert_allclose(got, want, rtol=PARITY_RTOL, atol=PARITY_RTOL * np.abs(want).max())
    try:
        import openvino as ov
    except ImportError:
        return
    core = ov.Core()
    compiled = core.compile_model(
        core.read_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )  # explicit: OpenVINO defaults to bf16 on CPUs that have it
    got_ov = compiled(images)[compiled.outputs[0]]
    np.testing.assert_allclose(got_ov, want, rtol=1e-3, atol=1e-3 * np.abs(want).max())


def test_not_fitted_bad_input_and_config() -> None:
    det = create_detector("patchcore", CONFIG)
    with pytest.raises(NotFittedError):
        det.score(_images(1, seed=0))
    with pytest.raises(NotFittedError):
        det.export_spec()
    with pytest.raises(DataError, match="expected uint8"):
        det.fit(_images(2, seed=0).astype(np.float32))
    with pytest.raises(ConfigError, match="num_neighbors >= 2"):
        create_detector("patchcore", {"reweight": True, "pretrained": False})
    with pytest.raises(ConfigError, match="coreset_ratio"):
        create_detector("patchcore", {"coreset_ratio": 0.0, "pretrained": False})
    with pytest.raises(ConfigError, match="epochs"):
        create_detector("patchcore", {"epochs": 3})


@pytest.mark.parametrize(("reweight", "top_k"), [(False, 1), (True, 1), (False, 3)])
def test_run_export_measurement_and_runtime_give_the_same_scores(
    reweight: bool, top_k: int, tmp_path: Path
) -> None:
    """One scorer per post-processing kind: the fitted model, the exporter's index measurement
    (`edgead.export.index.score_images`, exact Flat search) and the runtime `Detector` give the
    same raw scores and maps, with the max, the paper's re-weighted score and the top-k mean."""
    from edgead.export import export_detector
    from edgead.export.index import score_images, validation_from_images
    from edgead.runtime import Detector

    cfg = {**CONFIG, "reweight": reweight, "num_neighbors": 3, "top_k": top_k}
    det = create_detector("patchcore", cfg)
    det.fit(_images(8, seed=1), seed=0)
    images = np.concatenate([_images(2, seed=7), _images(2, seed=8, defect=True)])
    run = det.score(images)
    spec = det.export_spec()
    want = "reweight" if reweight else ("top_mean" if top_k > 1 else "max")
    assert spec.postprocess["score"] == want
    validation = validation_from_images(det.embed, images, None, None, spec.postprocess)
    measured, measured_maps = score_images(validation, det._nn_index(), k=1)
    np.testing.assert_allclose(measured, run.scores, rtol=1e-6)
    np.testing.assert_allclose(measured_maps, run.anomaly_maps, rtol=1e-6, atol=1e-6)
    thr = float(run.scores.max())
    meta = {
        "threshold": {"value": thr, "policy": "test"},
        "normalisation": {"method": "minmax_threshold", "min": 0.0, "max": thr, "threshold": thr},
    }
    out = tmp_path / f"pc_{reweight}_{top_k}.edgead"
    export_detector(det, meta, "onnx", "fp32", out, parity_inputs=images, index={"index": "flat"})
    with Detector.load(out, device="cpu", backend="onnxruntime") as runtime:
        results = runtime(list(images), channel_order="RGB")
    np.testing.assert_allclose([r.raw_score for r in results], run.scores, rtol=1e-4)
    np.testing.assert_allclose(
        np.stack([r.anomaly_map for r in results]), run.anomaly_maps, rtol=1e-4, atol=1e-4
    )
