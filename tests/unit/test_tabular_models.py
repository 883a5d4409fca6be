"""Unit tests for the tabular detectors: ae, vae, deep_svdd, iforest (tiny synthetic data).

Parity tolerances: ONNX Runtime / OpenVINO vs the torch (or node-array) scores within 1e-4
relative; the IForest node-array walk and its torch graph vs scikit-learn within 1e-5 relative.
"""

from __future__ import annotations

import io
import logging
import warnings
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from edgead.errors import ConfigError, DataError, NotFittedError
from edgead.models._tabular import Standardizer, split_validation, train_network
from edgead.models.base import create_detector, list_detectors

TABULAR = ("ae", "vae", "deep_svdd", "iforest")
# one network trained exactly `epochs` (the defaults add a step floor and, for ae, 3 seeds)
SINGLE: dict[str, Any] = {"min_steps": 0, "n_members": 1}
FAST: dict[str, dict[str, Any]] = {
    "ae": {"epochs": 4, **SINGLE},
    "vae": {"epochs": 4, **SINGLE},
    "deep_svdd": {"epochs": 4},
    "iforest": {"n_estimators": 30},
}
# the PyOD-style blocks (Linear -> BatchNorm -> ReLU -> dropout) of the LODO grid (issue 20)
BLOCKS: dict[str, tuple[str, dict[str, Any]]] = {
    "ae_bn": ("ae", {"epochs": 4, "batch_norm": True, "latent_activation": True, **SINGLE}),
    "vae_bn": (
        "vae",
        {"epochs": 4, "batch_norm": True, "dropout": 0.2, "kl_weight": 0.0, "score_kl_weight": 0}
        | SINGLE,
    ),
    # a seed ensemble (issue 20): one graph averaging the members' standardised scores
    "ae_ens": ("ae", {"epochs": 4, "min_steps": 0, "n_members": 3}),
}


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    """Correlated normal rows (train), and a test set of normal + shifted anomalous rows."""
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(6, 6))
    train = (rng.normal(size=(300, 6)) @ mix + 10.0).astype(np.float32)
    normal = (rng.normal(size=(60, 6)) @ mix + 10.0).astype(np.float32)
    anomalous = (rng.normal(size=(20, 6)) * 4.0 + 10.0).astype(np.float32)
    return {
        "train": train,
        "test": np.concatenate([normal, anomalous]),
        "labels": np.r_[np.zeros(60), np.ones(20)],
    }


@pytest.fixture(scope="module")
def fitted(data: dict[str, np.ndarray]) -> dict[str, Any]:
    """One detector per name, fitted once with seed 0."""
    torch.set_num_threads(1)
    out = {}
    for name in TABULAR:
        det = create_detector(name, FAST[name])
        det.fit(data["train"], seed=0)
        out[name] = det
    for key, (name, overrides) in BLOCKS.items():
        out[key] = create_detector(name, overrides)
        out[key].fit(data["train"], seed=0)
    return out


def _onnx(module: torch.nn.Module, example: np.ndarray) -> bytes:
    """Export with opset 17 and a dynamic batch axis (TorchScript exporter)."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (torch.from_numpy(example),),
            buf,
            input_names=["rows"],
            output_names=["score"],
            opset_version=17,
            dynamo=False,
            dynamic_axes={"rows": {0: "batch"}, "score": {0: "batch"}},
        )
    return buf.getvalue()


def _rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.max(np.abs(got - ref) / np.maximum(np.abs(ref), 1e-12)))


def test_registered_as_tabular() -> None:
    assert set(TABULAR) <= set(list_detectors("tabular"))
    with pytest.raises(ConfigError, match="unknown key"):
        create_detector("ae", {"epoch": 3})
    with pytest.raises(ConfigError, match="out of range"):
        create_detector("vae", {"lr": 0})
    assert create_detector("deep-svdd").name == "deep_svdd"


@pytest.mark.parametrize("name", TABULAR)
def test_detects_shifted_rows(
    name: str, fitted: dict[str, Any], data: dict[str, np.ndarray]
) -> None:
    scores = fitted[name].score(data["test"]).scores
    assert scores.dtype == np.float32 and scores.shape == (80,)
    assert np.isfinite(scores).all()
    assert roc_auc_score(data["labels"], scores) > 0.9


@pytest.mark.parametrize("name", TABULAR)
def test_state_roundtrip_without_pickle(
    name: str, fitted: dict[str, Any], data: dict[str, np.ndarray]
) -> None:
    buf = io.BytesIO()
    np.savez(buf, **fitted[name].state_arrays())
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    restored = create_detector(name, FAST[name])
    restored.load_state_arrays(arrays)
    np.testing.assert_array_equal(
        restored.score(data["test"]).scores, fitted[name].score(data["test"]).scores
    )


@pytest.mark.parametrize("name", TABULAR)
def test_not_fitted_and_wrong_columns(name: str, fitted: dict[str, Any]) -> None:
    with pytest.raises(NotFittedError):
        create_detector(name).score(np.zeros((2, 6), np.float32))
    with pytest.raises(DataError, match="5 columns but the detector was trained on 6"):
        fitted[name].score(np.zeros((2, 5), np.float32))
    with pytest.raises(DataError, match="NaN"):
        fitted[name].fit(np.full((20, 6), np.nan, np.float32))


@pytest.mark.parametrize("name", ["ae", "vae", "deep_svdd"])
def test_seeded_training_is_deterministic(name: str, data: dict[str, np.ndarray]) -> None:
    runs = []
    for seed in (1, 1, 2):
        det = create_detector(name, {"epochs": 2} | (SINGLE if name != "deep_svdd" else {}))
        det.fit(data["train"][:200], seed=seed)
        runs.append(det.score(data["test"]).scores)
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


def test_batch_norm_blocks_train_and_separate(
    fitted: dict[str, Any], data: dict[str, np.ndarray]
) -> None:
    """BN blocks train (an epoch's 1-row tail batch is skipped) and score anomalies higher."""
    for key in BLOCKS:
        auroc = roc_auc_score(data["labels"], fitted[key].score(data["test"]).scores)
        assert auroc > 0.9, key
    net = fitted["ae_bn"].net
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in net.modules())
    det = create_detector(
        "ae", {"epochs": 2, "batch_norm": True, "batch_size": 32, "val_fraction": 0.0, **SINGLE}
    )
    det.fit(data["train"][:65], seed=0)  # 32 + 32 + 1 rows: the last batch is dropped
    assert np.isfinite(det.score(data["test"]).scores).all()
    assert det.history["train_loss"] > 0


@pytest.mark.parametrize("name", [*TABULAR, *BLOCKS])
def test_onnx_parity_ort_and_openvino(
    name: str, fitted: dict[str, Any], data: dict[str, np.ndarray]
) -> None:
    ort = pytest.importorskip("onnxruntime")
    spec = fitted[name].export_spec()
    assert spec.input_name == "rows" and spec.output_names == ("score",)
    assert spec.postprocess == {"kind": "rows"}
    model = _onnx(spec.module, spec.example_input)
    ops = {node.op_type for node in __import__("onnx").load_from_string(model).graph.node}
    assert not any(op.startswith("TreeEnsemble") for op in ops)
    assert "Dropout" not in ops  # the AE trains with dropout; the exported graph has none
    ref = fitted[name].score(data["test"]).scores
    np.testing.assert_array_equal(fitted[name].score(data["test"]).scores, ref)  # eval mode
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    for rows, want in ((data["test"], ref), (data["test"][:1], ref[:1])):  # dynamic batch
        got = sess.run(["score"], {"rows": rows})[0]
        assert got.shape == want.shape
        assert _rel_err(got, want) < 1e-4
    try:
        import openvino as ov
    except ImportError:
        return
    core = ov.Core()
    compiled = core.compile_model(
        core.read_model(model=model, weights=b""), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )
    got = compiled(data["test"])[0]
    assert _rel_err(np.asarray(got).reshape(-1), ref) < 1e-4


def test_iforest_equals_sklearn(data: dict[str, np.ndarray]) -> None:
    rng = np.random.default_rng(5)
    train = np.round(data["train"] * 3) / 3  # many ties between rows and thresholds
    test = np.concatenate(
        [
            train[:50],
            np.round(data["test"] * 3) / 3,
            rng.normal(size=(30, 6)).astype(np.float32) * 50,
        ]
    )
    for cfg in ({"n_estimators": 40}, {"max_features": 0.5, "n_estimators": 20, "max_samples": 64}):
        det = create_detector("iforest", cfg)
        det.fit(train, seed=3)
        ref = -det.sklearn_model.score_samples(test)
        assert _rel_err(det.score(test).scores, ref) < 1e-5
        with torch.no_grad():
            graph = det.export_spec().module(torch.from_numpy(test))[0].numpy()
        assert _rel_err(graph, ref) < 1e-5


def test_standardizer_constant_columns(caplog: pytest.LogCaptureFixture) -> None:
    rows = np.c_[np.arange(10.0), np.full(10, 7.0), np.arange(10.0) * 2].astype(np.float32)
    with caplog.at_level(logging.WARNING):
        std = Standardizer.fit(rows)
    assert std.constant_columns.tolist() == [1] and std.scale[1] == 1.0
    assert "constant column" in caplog.text
    z = std.transform(rows)
    assert np.allclose(z[:, 1], 0.0) and np.allclose(z[:, 0].std(), 1.0)
    det = create_detector("ae", {"epochs": 2, **SINGLE})
    det.fit(np.tile(rows, (3, 1)), seed=0)
    assert np.isfinite(det.score(rows).scores).all()
    assert det.describe()["constant_columns"] == [1]


def test_deep_svdd_has_no_bias_and_fixed_centre(
    fitted: dict[str, Any], data: dict[str, np.ndarray]
) -> None:
    net = fitted["deep_svdd"].net
    names = [n for n, _ in net.named_parameters()]
    assert names and not any("bias" in n for n in names)
    assert not any(isinstance(m, (torch.nn.BatchNorm1d, torch.nn.LayerNorm)) for m in net.modules())
    centre = net.center.clone()
    assert (centre.abs() >= 0.1 - 1e-7).all()
    # the centre is the mean initial embedding (with the eps push), and training leaves it fixed
    det = create_detector("deep_svdd", {"epochs": 1, "lr": 1e-9})
    det.fit(data["train"], seed=0)
    assert not any(n.startswith("center") for n, _ in det.net.named_parameters())
    with torch.no_grad():
        z = torch.from_numpy(det.standardizer.transform(data["train"]))
        _, val_idx = split_validation(len(z), det.config.val_fraction, 0)
        keep = np.setdiff1d(np.arange(len(z)), val_idx)
        mean = det.net.phi(z[keep]).mean(0)
    expected = torch.where(mean.abs() < 0.1, torch.where(mean < 0, -0.1, 0.1), mean)
    assert torch.allclose(det.net.center, expected, atol=1e-4)


def test_vae_score_is_deterministic_recon_plus_weighted_kl(
    fitted: dict[str, Any], data: dict[str, np.ndarray]
) -> None:
    """Default (PyOD's, no KL term): score = SSE at z = mu; with KL: SSE + score_kl_weight * KL."""
    kl_vae = create_detector(
        "vae", {"epochs": 2, "kl_weight": 1.0, "score_kl_weight": 0.5, **SINGLE}
    )
    kl_vae.fit(data["train"], seed=0)
    for det, weight in ((fitted["vae"], 0.0), (kl_vae, 0.5)):
        first = det.score(data["test"]).scores
        np.testing.assert_array_equal(first, det.score(data["test"]).scores)
        with torch.no_grad():
            x = torch.from_numpy(det.standardizer.transform(data["test"]))
            mu, logvar = det.net.encode(x)
            sse = ((x - det.net.decoder(mu)) ** 2).sum(1)
            kl = 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(1)
        np.testing.assert_allclose(first, (sse + weight * kl).numpy(), rtol=1e-5)


def test_ae_score_is_reconstruction_mse(
    fitted: dict[str, Any], data: dict[str, np.ndarray]
) -> None:
    det = fitted["ae"]
    with torch.no_grad():
        x = torch.from_numpy(det.standardizer.transform(data["test"]))
        mse = ((x - det.net.decoder(det.net.encoder(x))) ** 2).mean(1).numpy()
    np.testing.assert_allclose(det.score(data["test"]).scores, mse, rtol=1e-5)


def test_early_stopping_and_progress() -> None:
    net = torch.nn.Linear(3, 1)
    calls: list[tuple[int, int, str]] = []
    rows = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    history = train_network(
        net,
        lambda m, b: (m(b)[:, 0] - 1.0) ** 2,
        rows[:40],
        rows[40:],
        epochs=50,
        batch_size=8,
        lr=0.0,
        weight_decay=0.0,
        patience=3,
        seed=0,
        progress=lambda d, t, s: calls.append((d, t, s)),
    )
    assert history["best_epoch"] == 1 and history["epochs_run"] == 4
    assert calls == [(e, 50, "train") for e in range(1, 5)]
