"""Unit tests: PaDiM, FastFlow, conv AE / VAE, image Deep SVDD and MAE on tiny synthetic images.

A tiny random backbone (strides and channels deliberately unlike EfficientNet's) stands in for
the real one, so the detectors are checked to size themselves from `feature_info`.
Parity tolerance: exported graphs must match the torch module within 1e-3 relative (fp32).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgead.errors import ConfigError, DataError, NotFittedError
from edgead.models.base import create_detector, get_detector_class, list_detectors
from tests.helpers.tiny_models import TINY_MAE_SIZES, gradient_images, register_tiny_backbone

TINY = register_tiny_backbone("tiny_test_image_methods")
SIZE = 32
RTOL = 1e-3


CONFIGS: dict[str, dict] = {
    "padim": {"image_size": SIZE, "backbone": TINY, "pretrained": False, "n_features": 12},
    "fastflow": {
        "image_size": SIZE,
        "backbone": TINY,
        "pretrained": False,
        "n_blocks": 2,
        "epochs": 3,
        "batch_size": 8,
    },
    "conv_ae": {
        "image_size": SIZE,
        "work_size": 16,
        "base_channels": 4,
        "latent_dim": 8,
        "epochs": 3,
        "batch_size": 8,
    },
    "conv_vae": {
        "image_size": SIZE,
        "work_size": 16,
        "base_channels": 4,
        "latent_dim": 8,
        "epochs": 3,
        "batch_size": 8,
    },
    "deep_svdd_image": {
        "image_size": SIZE,
        "work_size": 16,
        "base_channels": 4,
        "rep_dim": 8,
        "epochs": 3,
        "batch_size": 8,
    },
    "mae": {
        "image_size": SIZE,
        "target": "pixels",
        "work_size": 16,
        "patch_size": 4,
        **TINY_MAE_SIZES,
        "epochs": 10,
        "batch_size": 8,
    },
}
NAMES = sorted(CONFIGS)


def _images(n: int, seed: int, defect: bool = False) -> np.ndarray:
    """uint8 (n, SIZE, SIZE, 3) synthetic parts (see tests.helpers.tiny_models.gradient_images)."""
    return gradient_images(n, seed, SIZE, defect)


@pytest.fixture(scope="module")
def fitted() -> dict:
    """Each detector fitted once on 16 normal images (seed 0)."""
    train = _images(16, seed=1)
    detectors = {}
    for name in NAMES:
        det = create_detector(name, CONFIGS[name])
        det.fit(train, seed=0)
        detectors[name] = det
    return detectors


def test_registered_as_image_detectors() -> None:
    names = list_detectors("image")
    for name in NAMES:
        assert name in names
        assert get_detector_class(name).modality == "image"
    assert get_detector_class("conv-vae").name == "conv_vae"


@pytest.mark.parametrize("name", NAMES)
def test_score_shapes_and_separation(name: str, fitted: dict) -> None:
    det = fitted[name]
    normal, defective = _images(6, seed=2), _images(6, seed=3, defect=True)
    out = det.score(np.concatenate([normal, defective]))
    assert out.scores.shape == (12,) and out.scores.dtype == np.float32
    assert out.anomaly_maps.shape == (12, SIZE, SIZE) and out.anomaly_maps.dtype == np.float32
    assert np.all(np.isfinite(out.scores)) and np.all(np.isfinite(out.anomaly_maps))
    # A saturated 8x8 square is far from the training distribution for every method here.
    assert out.scores[6:].mean() > out.scores[:6].mean()


@pytest.mark.parametrize("name", NAMES)
def test_state_round_trip(name: str, fitted: dict) -> None:
    det = fitted[name]
    arrays = det.state_arrays()
    assert all(isinstance(a, np.ndarray) and a.dtype != object for a in arrays.values())
    clone = create_detector(name, CONFIGS[name])
    clone.load_state_arrays({k: v.copy() for k, v in arrays.items()})
    images = _images(4, seed=4, defect=True)
    np.testing.assert_allclose(clone.score(images).scores, det.score(images).scores, rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_onnx_and_openvino_parity(name: str, fitted: dict, tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    det = fitted[name]
    spec = det.export_spec()
    path = tmp_path / f"{name}.onnx"
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
    onnx = pytest.importorskip("onnx")
    onnx.checker.check_model(str(path), full_check=True)
    op_types = {node.op_type for node in onnx.load(str(path)).graph.node}
    from edgead.export.onnx_passes import uint8_inputs_not_cast

    assert uint8_inputs_not_cast(onnx.load(str(path))) == []  # TensorRT-importable input
    if name == "fastflow":  # the coupling ops: permutation, soft clamp, exp scale
        assert {"Gather", "Tanh", "Exp", "Conv"} <= op_types
    images = _images(3, seed=5, defect=True)
    with torch.inference_mode():
        expected = [t.numpy() for t in spec.module(torch.from_numpy(images))]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(list(spec.output_names), {spec.input_name: images})
    for want, have in zip(expected, got, strict=True):
        np.testing.assert_allclose(have, want, rtol=RTOL, atol=RTOL * np.abs(want).max())
    try:
        import openvino as ov
    except ImportError:
        return
    core = ov.Core()
    compiled = core.compile_model(
        core.read_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )  # explicit: OpenVINO defaults to bf16 on CPUs that have it
    result = compiled(images)
    for want, output in zip(expected, compiled.outputs, strict=True):
        np.testing.assert_allclose(result[output], want, rtol=RTOL, atol=RTOL * np.abs(want).max())


@pytest.mark.parametrize("name", NAMES)
def test_export_spec_contract(name: str, fitted: dict) -> None:
    spec = fitted[name].export_spec()
    assert spec.example_input.dtype == np.uint8 and spec.example_input.shape == (1, SIZE, SIZE, 3)
    kind = spec.postprocess["kind"]
    if kind == "map":
        assert spec.output_names == ("anomaly_map",) and spec.postprocess["score"] == "map_max"
    else:
        assert kind == "graph" and spec.output_names == ("score", "anomaly_map")


@pytest.mark.parametrize("name", NAMES)
def test_not_fitted_and_bad_input(name: str) -> None:
    det = create_detector(name, CONFIGS[name])
    with pytest.raises(NotFittedError):
        det.score(_images(1, seed=0))
    with pytest.raises(NotFittedError):
        det.export_spec()
    with pytest.raises(DataError, match="expected uint8"):
        det.fit(np.zeros((2, SIZE + 1, SIZE + 1, 3), dtype=np.uint8))


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="n_featurs"):
        create_detector("padim", {"n_featurs": 3})
    with pytest.raises(ConfigError, match="work_size"):
        create_detector("conv_ae", {"work_size": 100})
    with pytest.raises(ConfigError, match="multiple"):
        create_detector("deep_svdd_image", {"image_size": 200, "work_size": 128})


def test_padim_statistics_and_seeded_subset(fitted: dict) -> None:
    det = fitted["padim"]
    state = det.state_arrays()
    grid = SIZE // 4  # finest stride of the tiny backbone
    assert state["mean"].shape == (grid * grid, 12)
    assert state["precision"].shape == (grid * grid, 12, 12)
    np.testing.assert_allclose(
        state["precision"], state["precision"].transpose(0, 2, 1), rtol=1e-5, atol=1e-6
    )
    # Precision must invert the covariance + eps*I: eigenvalues positive and finite.
    assert np.linalg.eigvalsh(state["precision"].astype(np.float64)).min() > 0
    other = create_detector("padim", CONFIGS["padim"])
    other.fit(_images(16, seed=1), seed=0)
    np.testing.assert_array_equal(other.state_arrays()["channel_index"], state["channel_index"])
    assert det.describe()["statistics_mb"] >= 0


def test_padim_matches_numpy_mahalanobis(fitted: dict) -> None:
    det = fitted["padim"]
    images = _images(2, seed=6, defect=True)
    graph = det.export_spec().module
    with torch.inference_mode():
        emb = graph.embedding(torch.from_numpy(images)).numpy().astype(np.float64)
        got = graph(torch.from_numpy(images))[0].numpy()
    state = det.state_arrays()
    diff = emb.reshape(2, emb.shape[1], -1).transpose(0, 2, 1) - state["mean"]
    want = np.sqrt(np.einsum("bpd,pde,bpe->bp", diff, state["precision"], diff))
    np.testing.assert_allclose(got.reshape(2, -1), want, rtol=1e-4)


def test_padim_global_pooling_fits_one_gaussian_over_all_patches(tmp_path) -> None:
    cfg = {**CONFIGS["padim"], "pooling": "global", "n_features": 0}
    det = create_detector("padim", cfg)
    train = _images(16, seed=1)
    det.fit(train, seed=0)
    state = det.state_arrays()
    graph = det.export_spec().module
    with torch.inference_mode():
        emb = graph.embedding(torch.from_numpy(train)).numpy().astype(np.float64)
    dim = emb.shape[1]
    assert dim == det.total_channels_  # n_features = 0 keeps every channel
    patches = emb.transpose(0, 2, 3, 1).reshape(-1, dim)
    assert state["mean"].shape == (1, dim) and state["precision"].shape == (1, dim, dim)
    np.testing.assert_allclose(state["mean"][0], patches.mean(axis=0), rtol=1e-4, atol=1e-5)
    cov = np.cov(patches, rowvar=False) + cfg.get("eps", 0.01) * np.eye(dim)
    np.testing.assert_allclose(state["precision"][0], np.linalg.inv(cov), rtol=1e-3, atol=1e-3)
    test = _images(2, seed=6, defect=True)
    maps = det.grid_maps(test)
    with torch.inference_mode():
        test_emb = graph.embedding(torch.from_numpy(test)).numpy().astype(np.float64)
    diff = test_emb.transpose(0, 2, 3, 1).reshape(2, -1, dim) - state["mean"][0]
    want = np.sqrt(np.einsum("bpd,de,bpe->bp", diff, state["precision"][0], diff))
    np.testing.assert_allclose(maps.reshape(2, -1), want, rtol=1e-4)
    assert det.describe()["pooling"] == "global"
    ort = pytest.importorskip("onnxruntime")
    from edgead.export.graphs import export_onnx

    spec = det.export_spec()
    model = export_onnx(spec.module, spec.example_input, spec.input_name, spec.output_names)
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    onnx_maps = session.run(None, {spec.input_name: test})[0]
    np.testing.assert_allclose(onnx_maps, maps, rtol=RTOL, atol=RTOL * np.abs(maps).max())
    # The state only loads into a detector configured the same way.
    fresh = create_detector("padim", cfg)
    fresh.load_state_arrays(state)
    np.testing.assert_allclose(fresh.grid_maps(test), maps, rtol=1e-6)
    with pytest.raises(DataError, match="pooling"):
        create_detector("padim", {**cfg, "pooling": "position"}).load_state_arrays(state)
    with pytest.raises(ConfigError, match="pooling"):
        create_detector("padim", {**cfg, "pooling": "window"})


def test_fastflow_learns(fitted: dict) -> None:
    losses = fitted["fastflow"].train_losses_
    assert len(losses) == CONFIGS["fastflow"]["epochs"]
    assert losses[-1] < losses[0]


def test_training_is_seeded() -> None:
    train = _images(8, seed=1)
    scores = []
    for _ in range(2):
        det = create_detector("conv_vae", CONFIGS["conv_vae"])
        det.fit(train, seed=3)
        scores.append(det.score(train[:2]).scores)
    np.testing.assert_array_equal(scores[0], scores[1])


CLI_CASES = {
    "padim": ["--set", f"backbone={TINY}", "--set", "pretrained=false", "--set", "n_features=8"],
    "conv-vae": [
        "--set",
        "work_size=16",
        "--set",
        "base_channels=4",
        "--set",
        "latent_dim=8",
        "--set",
        "epochs=2",
    ],
}


@pytest.mark.parametrize("cli_name", sorted(CLI_CASES))
def test_cli_train_export_eval(cli_name: str, tmp_path) -> None:
    """`edgead train NAME` -> run dir -> `edgead export` -> the bundle evaluates like the run."""
    import json

    from typer.testing import CliRunner

    from edgead.cli.main import app
    from tests.helpers.data import make_synthetic_mvtec

    def invoke(*args: str):
        result = CliRunner().invoke(app, list(args), catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result

    data = make_synthetic_mvtec(tmp_path / "category")
    run, bundle = tmp_path / "run", tmp_path / "model.edgead"
    invoke(
        "train",
        cli_name,
        "--data",
        str(data),
        "--out",
        str(run),
        "--image-size",
        str(SIZE),
        *CLI_CASES[cli_name],
    )
    meta = json.loads((run / "run.json").read_text())
    assert meta["detector"] == cli_name.replace("-", "_")
    invoke("export", str(run), "--out", str(bundle))
    from_bundle = json.loads(invoke("eval", str(bundle), "--data", str(data), "--json").stdout)
    from_run = json.loads(invoke("eval", str(run), "--data", str(data), "--json").stdout)
    for key in ("image_auroc", "image_f1", "threshold", "n_test"):
        assert from_bundle[key] == pytest.approx(from_run[key], rel=1e-3), key


def test_mae_fixed_masks_cover_every_patch_and_score_is_deterministic(fitted: dict) -> None:
    det = fitted["mae"]
    net = det._fitted_net()  # noqa: SLF001 - checks the graph's constant masks
    hidden = net.hidden.numpy()
    assert hidden.shape == (4, 16) and (hidden.sum(axis=1) == 12).all()  # 75 % hidden per draw
    np.testing.assert_array_equal(hidden.sum(axis=0), np.full(16, 3))  # each patch hidden 3x
    images = _images(4, seed=5, defect=True)
    np.testing.assert_array_equal(det.score(images).scores, det.score(images).scores)
