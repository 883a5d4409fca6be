"""A few hundred seeded fuzz cases of `benchmarks/fuzz_bundle.py` on tiny exported bundles:
every case is refused by name or loads; none raises a raw exception, crashes or hangs, and no
refused case costs more than 300 MiB above the worker's RSS with a valid bundle loaded."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.tiny_detectors import run_meta, tiny_bundle

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
import fuzz_bundle  # noqa: E402 - the benchmark script is the harness under test


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    from edgead.export import export_detector
    from edgead.models.base import create_detector

    out = tmp_path_factory.mktemp("fuzz") / "knn.edgead"
    rng = np.random.default_rng(0)
    det = create_detector("knn", {})
    det.fit(rng.normal(size=(120, 5)).astype(np.float32))
    rows = rng.normal(size=(12, 5)).astype(np.float32) * 2
    export_detector(det, run_meta(det.score(rows).scores), "onnx", "fp32", out, parity_inputs=rows)
    bundles = [tiny_bundle("onnx"), out]
    try:
        import openvino  # noqa: F401

        bundles.append(tiny_bundle("openvino"))
    except ImportError:
        pass
    return bundles


def _assert_clean(report: dict) -> None:
    counts = report["counts"]
    assert sum(counts.get(k, 0) for k in ("raw", "crash", "hang")) == 0, report["examples"]
    for label, worst in report["worst_refused_peak"].items():
        assert worst["peak_above_baseline_mib"] <= 300, (label, worst)


def test_fuzz_cases_end_in_named_refusals_or_loads(seeds: list[Path]) -> None:
    report = fuzz_bundle.run_fuzz(
        seeds, cases=240, seed=15, timeout_s=120, bomb_mib=32, progress_every=0
    )
    _assert_clean(report)
    counts = report["counts"]
    assert counts.get("refused", 0) > 100 and counts.get("loaded", 0) > 10
    assert set(report["by_mutator"]) == set(fuzz_bundle.MUTATORS)


def test_fuzz_signed_bundles_refuse_every_tampered_case(seeds: list[Path]) -> None:
    report = fuzz_bundle.run_fuzz(
        seeds[:2], cases=80, seed=16, timeout_s=120, signed=True, bomb_mib=32, progress_every=0
    )
    _assert_clean(report)
    assert report["tampered_loaded"] == 0
