"""Classical tabular detectors (knn, lof, kde, gmm, ocsvm): scores vs scikit-learn, exported
graphs on ONNX Runtime and OpenVINO vs the fitted model, self-match handling and bad input.

Tolerance ("1e-4 relative"): |got - ref| <= 1e-4 * |ref| + 1e-4 * max|ref| per row. The second
term matters only for scores that cross zero (OCSVM's decision function, KDE/GMM log densities),
where a pure relative error is undefined.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgead.errors import ConfigError, DataError, NotFittedError
from edgead.models.base import create_detector, list_detectors
from edgead.ops.nn_index import FaissIndex
from edgead.ops.rows_nn import score_rows_nn, scores_from_neighbors

RTOL = 1e-4
SCALES = np.array([1.0, 2.0, 3.0, 0.5, 5.0, 10.0], dtype=np.float32)
CASES = [
    ("knn", {}),
    ("knn", {"method": "mean", "k": 3}),
    ("lof", {"k": 10}),
    ("kde", {}),
    ("kde", {"bandwidth_rule": "silverman"}),
    ("gmm", {"n_components": 3}),
    ("gmm", {"n_components": 2, "covariance_type": "diag"}),
    ("ocsvm", {}),
    ("ocsvm", {"approximation": "nystroem", "n_components": 50}),
]


def _close(got: np.ndarray, ref: np.ndarray) -> None:
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    np.testing.assert_allclose(got, ref, rtol=RTOL, atol=RTOL * float(np.abs(ref).max()))


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    """(train (240, 6), test (60, 6)) float32: two correlated clusters, scaled, offset; the test
    rows mix normal rows, far outliers and exact copies of training rows."""
    rng = np.random.default_rng(7)
    mix = rng.normal(size=(6, 6)) * 0.4 + np.eye(6)
    normal = np.concatenate([rng.normal(size=(150, 6)), rng.normal(size=(120, 6)) + 3.0]) @ mix
    train = (normal[:240] * SCALES + 100.0).astype(np.float32)
    outliers = (rng.normal(size=(20, 6)) * 4.0 @ mix) * SCALES + 100.0
    test = np.concatenate([normal[240:] * SCALES + 100.0, outliers, train[:10]]).astype(np.float32)
    return train, test


def _sklearn_reference(det, train: np.ndarray, test: np.ndarray, seed: int) -> np.ndarray:
    """Scores from scikit-learn on the detector's standardised rows (float64)."""
    from scipy.special import logsumexp
    from sklearn.kernel_approximation import Nystroem
    from sklearn.linear_model import SGDOneClassSVM
    from sklearn.mixture import GaussianMixture
    from sklearn.neighbors import LocalOutlierFactor, NearestNeighbors
    from sklearn.svm import OneClassSVM

    z = det.standardizer.transform(train).astype(np.float64)
    q = det.standardizer.transform(test).astype(np.float64)
    cfg = det.config
    if det.name == "knn":
        dist, _ = NearestNeighbors(n_neighbors=cfg.k).fit(z).kneighbors(q)
        return dist[:, -1] if cfg.method == "largest" else dist.mean(axis=1)
    if det.name == "lof":
        return -LocalOutlierFactor(n_neighbors=cfg.k, novelty=True).fit(z).score_samples(q)
    if det.name == "kde":
        # exact sum; sklearn's tree-based KernelDensity under-estimates far-away points' scores
        h = det.bandwidth
        d2 = ((q[:, None, :] - z[None]) ** 2).sum(-1)
        return -(
            logsumexp(-0.5 * d2 / h**2, axis=1)
            - np.log(len(z))
            - 0.5 * z.shape[1] * np.log(2 * np.pi * h * h)
        )
    if det.name == "gmm":
        gm = GaussianMixture(
            cfg.n_components, covariance_type=cfg.covariance_type, random_state=seed
        ).fit(z)
        return -gm.score_samples(q)
    gamma = 1.0 / (z.shape[1] * z.var())
    if cfg.approximation == "exact":
        return -OneClassSVM(kernel="rbf", nu=cfg.nu, gamma=gamma).fit(z).decision_function(q)
    feats = Nystroem(gamma=gamma, n_components=cfg.n_components, random_state=seed).fit(z)
    svm = SGDOneClassSVM(nu=cfg.nu, random_state=seed).fit(feats.transform(z))
    return -svm.decision_function(feats.transform(q))


@pytest.fixture(scope="module")
def fitted(data):
    """{case id: fitted detector} for every case in CASES (seed 3)."""
    train, _ = data
    out = {}
    for name, cfg in CASES:
        det = create_detector(name, cfg)
        det.fit(train, seed=3)
        out[f"{name}-{cfg}"] = det
    return out


@pytest.mark.parametrize(("name", "cfg"), CASES, ids=[f"{n}-{c}" for n, c in CASES])
def test_scores_match_sklearn(fitted, data, name, cfg):
    train, test = data
    det = fitted[f"{name}-{cfg}"]
    scores = det.score(test).scores
    assert scores.dtype == np.float32 and scores.shape == (len(test),)
    _close(scores, _sklearn_reference(det, train, test, seed=3))
    # far outliers (rows 30..49) score above the held-out normal rows (0..29) on average
    assert scores[30:50].mean() > scores[:30].mean()


def _run_onnx(det, rows: np.ndarray, tmp_path) -> dict[str, tuple[np.ndarray, ...]]:
    """Export with edgead's exporter (torch.onnx.export, opset 17, dynamic batch); run the
    graph on ONNX Runtime and OpenVINO (CPU, f32). Returns {backend: outputs}."""
    import onnxruntime as ort

    from edgead.export.graphs import export_onnx

    spec = det.export_spec()
    onnx_bytes = export_onnx(spec.module, spec.example_input, spec.input_name, spec.output_names)
    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    out = {"onnxruntime": tuple(sess.run(None, {spec.input_name: rows}))}
    try:
        import openvino as ov
    except ImportError:
        return out
    path = tmp_path / f"{det.name}.onnx"
    path.write_bytes(onnx_bytes)
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    res = compiled(rows)
    out["openvino"] = tuple(np.asarray(res[o]).copy() for o in compiled.outputs)
    return out


@pytest.mark.parametrize(("name", "cfg"), CASES, ids=[f"{n}-{c}" for n, c in CASES])
def test_export_parity(fitted, data, tmp_path, name, cfg):
    train, test = data
    det = fitted[f"{name}-{cfg}"]
    spec = det.export_spec()
    reference = _sklearn_reference(det, train, test, seed=3)
    # a batch size other than the traced one checks the dynamic batch axis
    outputs = _run_onnx(det, test, tmp_path)
    assert "onnxruntime" in outputs
    for backend, (out,) in outputs.items():
        if spec.output_names == ("embedding",):
            assert spec.postprocess["kind"] == "rows_nn_index" and out.shape == test.shape
            index = FaissIndex.build(spec.arrays["memory_bank"], "Flat")
            arrays = {k: v for k, v in spec.arrays.items() if k != "memory_bank"}
            got = score_rows_nn(index, out, spec.postprocess, arrays)
        else:
            assert spec.postprocess == {"kind": "rows"} and out.shape == (len(test),)
            got = out
        _close(got, det.score(test).scores)
        _close(got, reference)
        assert backend in ("onnxruntime", "openvino")


def test_training_scores_exclude_self(data):
    from sklearn.neighbors import LocalOutlierFactor, NearestNeighbors

    train, _ = data
    knn = create_detector("knn", {"k": 4})
    knn.fit(train)
    z = knn.standardizer.transform(train).astype(np.float64)
    dist, _ = NearestNeighbors(n_neighbors=4).fit(z).kneighbors()  # no query: self excluded
    _close(knn.train_scores, dist[:, -1])
    # scored as new rows, the same rows see themselves at distance 0 (3rd neighbour is the
    # k-th training neighbour of the self-excluded list)
    own = knn.score(train).scores
    _close(own, dist[:, 2])
    assert np.all(own <= knn.train_scores + 1e-6)
    lof = create_detector("lof", {"k": 8})
    lof.fit(train)
    ref = LocalOutlierFactor(n_neighbors=8).fit(z)
    _close(lof.train_scores, -ref.negative_outlier_factor_)


def test_duplicate_training_rows_lof_is_finite():
    rng = np.random.default_rng(0)
    train = np.concatenate(
        [np.repeat(rng.normal(size=(1, 3)), 6, axis=0), rng.normal(size=(40, 3))]
    ).astype(np.float32)
    det = create_detector("lof", {"k": 5})
    det.fit(train)
    scores = det.score(train[:8]).scores
    assert np.isfinite(scores).all() and np.isfinite(det.train_scores).all()


@pytest.mark.parametrize("name", ["knn", "lof"])
def test_too_few_rows_refused(name):
    det = create_detector(name, {"k": 5})
    rows = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    with pytest.raises(DataError, match="at least 6"):
        det.fit(rows)
    det.fit(np.concatenate([rows, rows[:1] + 1.0]))  # k + 1 rows are enough
    assert det.is_fitted


@pytest.mark.parametrize("name", ["knn", "lof", "kde", "gmm", "ocsvm"])
def test_bad_input(name, data):
    train, test = data
    det = create_detector(name)
    with pytest.raises(NotFittedError):
        det.score(test)
    bad = train.copy()
    bad[3, 2] = np.nan
    with pytest.raises(DataError, match="NaN"):
        det.fit(bad)
    det.fit(train[:60])
    with pytest.raises(DataError, match="columns"):
        det.score(test[:, :4])
    with pytest.raises(DataError):
        det.score(np.zeros((0, 6), dtype=np.float32))


@pytest.mark.parametrize(
    ("name", "cfg"),
    [
        ("knn", {"method": "median"}),
        ("knn", {"k": 0}),
        ("lof", {"k": 0}),
        ("kde", {"bandwidth_rule": "x"}),
        ("gmm", {"covariance_type": "x"}),
        ("ocsvm", {"nu": 0.0}),
        ("ocsvm", {"bogus": 1}),
    ],
)
def test_bad_config(name, cfg):
    with pytest.raises(ConfigError):
        create_detector(name, cfg)


@pytest.mark.parametrize(("name", "cfg"), CASES, ids=[f"{n}-{c}" for n, c in CASES])
def test_state_round_trip(fitted, data, name, cfg):
    _, test = data
    det = fitted[f"{name}-{cfg}"]
    arrays = det.state_arrays()
    assert all(isinstance(v, np.ndarray) and v.dtype != object for v in arrays.values())
    fresh = create_detector(name, cfg)
    fresh.load_state_arrays({k: v.copy() for k, v in arrays.items()})
    np.testing.assert_array_equal(fresh.score(test).scores, det.score(test).scores)


def test_constant_column_and_registry(data):
    train, test = data
    assert {"knn", "lof", "kde", "gmm", "ocsvm"} <= set(list_detectors("tabular"))
    train = train.copy()
    train[:, 1] = 5.0
    for name in ("knn", "kde", "gmm", "ocsvm"):
        det = create_detector(name)
        det.fit(train)
        assert np.isfinite(det.score(test).scores).all()


def test_kde_cv_bandwidth_between_grid_edges(data):
    train, _ = data
    det = create_detector("kde", {"bandwidth_rule": "cv", "cv_grid": 6})
    det.fit(train, seed=0)
    scott = len(train) ** (-1.0 / (train.shape[1] + 4))
    assert 0.05 * scott <= det.bandwidth <= 5.0 * scott


def test_rows_nn_rejects_malformed_postprocess():
    from edgead.errors import BundleError

    dist = np.ones((2, 3), dtype=np.float32)
    ids = np.zeros((2, 3), dtype=np.int64)
    with pytest.raises(BundleError):
        scores_from_neighbors(dist, ids, {"kind": "rows_nn_index", "k": 3, "method": "max"})
    with pytest.raises(BundleError):
        scores_from_neighbors(dist, ids, {"kind": "rows_nn_index", "k": 4, "method": "mean"})
    with pytest.raises(BundleError, match="lof"):
        scores_from_neighbors(dist, ids, {"kind": "rows_nn_index", "k": 3, "method": "lof"})
    lof = {"kind": "rows_nn_index", "k": 3, "method": "lof", "lof": {}}
    with pytest.raises(BundleError, match="k_distance"):
        scores_from_neighbors(dist, ids, lof, {})
    with pytest.raises(BundleError, match="outside"):
        scores_from_neighbors(dist, ids - 1, lof, {"k_distance": np.ones(3), "lrd": np.ones(3)})


@pytest.mark.parametrize(
    ("name", "cfg"),
    [("knn", {}), ("lof", {"k": 10}), ("kde", {}), ("gmm", {"n_components": 3}), ("ocsvm", {})],
)
def test_bundle_round_trip(fitted, data, tmp_path, name, cfg):
    """export_detector (ONNX, parity-checked) -> runtime Detector.score_rows on ONNX Runtime.

    (OpenVINO runs the same graphs in test_export_parity; converting IR here too costs ~10 s.)"""
    from edgead.export import export_detector
    from edgead.runtime import Detector

    train, test = data
    det = fitted[f"{name}-{cfg}"]
    val = det.score(train[:60]).scores
    thr = float(np.percentile(val, 99))
    meta = {
        "threshold": {"value": thr, "policy": "percentile:99"},
        "config": cfg,
        "normalisation": {
            "method": "minmax_threshold",
            "min": float(val.min()),
            "max": float(val.max()),
            "threshold": thr,
        },
    }
    out = tmp_path / f"{name}.edgead"
    export_detector(det, meta, "onnx", "fp32", out, parity_inputs=test[:16])
    expected = det.score(test).scores
    with Detector.load(out, device="cpu", backend="onnxruntime") as runtime:
        got = runtime.score_rows(test)
    _close(got.raw_scores, expected)
    np.testing.assert_array_equal(got.is_anomaly, expected >= np.float32(thr))
