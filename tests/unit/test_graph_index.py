"""Exact search inside the graph (`--index graph`): same scores as the faiss path (fp32, ONNX
Runtime and OpenVINO f32), chunked banks, large banks export, maps optional per call."""

from __future__ import annotations

import resource
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgead.errors import ExportError
from edgead.export import export_detector
from edgead.export.graph_index import DISTANCES_OUTPUT, InGraphSearch, in_graph_spec
from edgead.export.graphs import export_onnx
from edgead.ops.nn_index import FaissIndex
from edgead.runtime.detector import Detector
from tests.helpers.tiny_detectors import TinyPatch, fitted_tiny, parity_images, synthetic_images


@pytest.fixture(scope="module")
def tiny() -> tuple[TinyPatch, dict[str, Any]]:
    return fitted_tiny()


@pytest.fixture(scope="module")
def bundles(tiny: tuple[TinyPatch, dict[str, Any]], tmp_path_factory: Any) -> dict[str, Path]:
    """fp32 OpenVINO-target bundles (both hold model.onnx): in-graph search and faiss Flat."""
    det, meta = tiny
    tmp = tmp_path_factory.mktemp("graph")
    out = {}
    for name in ("graph", "flat"):
        out[name] = tmp / f"{name}.edgead"
        export_detector(
            det,
            meta,
            "openvino",
            "fp32",
            out[name],
            parity_inputs=parity_images(),
            index={"index": name},
        )
    return out


def _scores(bundle: Path, backend: str, frames: list[np.ndarray], **kw: Any) -> list[Any]:
    with Detector.load(bundle, device="cpu", backend=backend) as det:
        if backend == "openvino":  # the parity below is an fp32 claim: OpenVINO must run f32
            assert det.backend_info["precision_hint_used"] == "f32"
        return det(frames, channel_order="RGB", **kw)  # type: ignore[return-value]


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_graph_index_scores_equal_the_faiss_path_fp32(
    bundles: dict[str, Path], backend: str
) -> None:
    frames = synthetic_images(3, seed=11) + synthetic_images(3, seed=12, anomalous=True)
    graph = _scores(bundles["graph"], backend, frames)
    flat = _scores(bundles["flat"], "onnxruntime", frames)
    g = np.array([r.raw_score for r in graph])
    f = np.array([r.raw_score for r in flat])
    np.testing.assert_allclose(g, f, rtol=1e-4)  # fp32 on both sides
    np.testing.assert_allclose(graph[0].anomaly_map, flat[0].anomaly_map, rtol=1e-3, atol=1e-4)
    assert g[3:].min() > g[:3].max()  # anomalies still score higher


def test_graph_bundle_has_no_faiss_file_and_records_the_search(
    bundles: dict[str, Path], tiny: tuple[TinyPatch, dict[str, Any]]
) -> None:
    from edgead.bundle import read_bundle

    m = read_bundle(bundles["graph"]).manifest
    assert m.index is None and m.postprocess["search"] == "graph"
    assert [o.name for o in m.outputs] == [DISTANCES_OUTPUT]
    assert m.export["index"]["name"] == "graph"
    assert m.export["index"]["n_vectors"] == len(tiny[0].bank_)
    # the exporter's own parity check (torch scores vs runtime scores, fp32 tolerance) passed
    assert m.export["parity"]["onnxruntime"]["score"]["max_rel_err"] <= 1e-3


def test_maps_false_skips_the_map_and_keeps_the_decision(bundles: dict[str, Path]) -> None:
    frames = synthetic_images(2, seed=13, anomalous=True)
    with_maps = _scores(bundles["graph"], "onnxruntime", frames)
    without = _scores(bundles["graph"], "onnxruntime", frames, maps=False)
    assert all(r.anomaly_map is None for r in without)
    assert with_maps[0].anomaly_map is not None
    assert [r.raw_score for r in without] == [r.raw_score for r in with_maps]
    assert [r.is_anomaly for r in without] == [r.is_anomaly for r in with_maps]


@pytest.mark.parametrize("k", [1, 3])
def test_chunked_search_matches_faiss_exactly(k: int) -> None:
    """Chunks of 7 rows over a 50-row bank: same k nearest distances as faiss Flat."""
    import torch

    rng = np.random.default_rng(0)
    bank = rng.normal(size=(50, 8)).astype(np.float32)
    queries = rng.normal(size=(2, 16, 8)).astype(np.float32)

    class Identity(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
            return (x,)

    module = InGraphSearch(Identity(), bank, k=k, chunk_rows=7).eval()
    assert module.n_chunks == 8
    with torch.no_grad():
        (got,) = module(torch.from_numpy(queries))
    want, _ = FaissIndex.build(bank, "Flat").search(queries.reshape(-1, 8), k)
    np.testing.assert_allclose(got.numpy().reshape(-1, k), want, rtol=1e-4, atol=1e-5)


def test_50k_bank_exports_and_runs_chunked(tmp_path: Path) -> None:
    """A 50,000 x 152 bank (fp32, ONNX Runtime): exports, runs, peak memory stays bounded."""
    import onnxruntime as ort
    import torch

    rng = np.random.default_rng(1)
    bank = rng.normal(size=(50_000, 152)).astype(np.float32)

    class Embed(torch.nn.Module):  # uint8 (B, 28, 28, 152) -> (B, 784, 152)
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
            y = x.to(torch.float32)
            return (y.reshape(y.shape[0], -1, 152) / 64.0,)

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    module = InGraphSearch(Embed(), bank).eval()
    example = rng.integers(0, 255, size=(1, 28, 28, 152), dtype=np.uint8)
    onnx_bytes = export_onnx(module, example, "images", (DISTANCES_OUTPUT,))
    assert len(onnx_bytes) > bank.nbytes  # the bank is a graph constant
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"images": example})
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before
    # unchunked, torch + ORT would each hold (784 x 50,000) float32 matrices (150 MiB apiece)
    assert grown < 1500, f"peak RSS grew by {grown:.0f} MiB"
    queries = example.reshape(-1, 152).astype(np.float32) / 64.0
    want, _ = FaissIndex.build(bank, "Flat").search(queries[:64], 1)
    np.testing.assert_allclose(got.reshape(-1, 1)[:64], want, rtol=1e-4)


def test_graph_index_refuses_reweight(tiny: tuple[TinyPatch, dict[str, Any]]) -> None:
    import dataclasses

    spec = tiny[0].export_spec()
    spec = dataclasses.replace(spec, postprocess={**spec.postprocess, "score": "reweight"})
    with pytest.raises(ExportError, match="reweight"):
        in_graph_spec(spec, spec.arrays["memory_bank"])


def test_cli_index_graph_and_precision_errors(
    tiny: tuple[TinyPatch, dict[str, Any]], tmp_path: Path
) -> None:
    import json

    from typer.testing import CliRunner

    from edgead.cli.main import app
    from edgead.rundir import save_run

    run_dir = save_run(tmp_path / "run", *tiny)
    out = tmp_path / "g.edgead"
    res = CliRunner().invoke(
        app, ["export", str(run_dir), "--out", str(out), "--index", "graph", "--json"]
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["index"]["name"] == "graph"
    res = CliRunner().invoke(
        app, ["export", str(run_dir), "--out", str(out), "--precision", "bf16"]
    )
    assert res.exit_code == 2 and "bf16 runs on OpenVINO" in res.output
