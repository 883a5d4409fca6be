"""edgead.calibrate is the one home of calibration: threshold policies, normalisation and the
re-fit export makes through a compressed index or a low-precision graph."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from edgead.bundle import read_bundle
from edgead.calibrate import (
    normalisation_from_scores,
    percentile_of,
    refit_through_bundle,
    runtime_raw_scores,
    threshold_from_normal,
)
from tests.helpers.tiny_detectors import fitted_tiny, parity_images, synthetic_images, tiny_bundle

PACKAGE = Path(__file__).resolve().parents[2] / "edgead"
POLICY_FUNCTIONS = {
    "threshold_from_normal",
    "threshold_from_labels",
    "threshold_for_fpr",
    "normalisation_from_scores",
    "refit_through_bundle",
}


def test_calibration_functions_are_defined_once_in_calibrate() -> None:
    homes: dict[str, list[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name in POLICY_FUNCTIONS:
                homes.setdefault(node.name, []).append(str(path.relative_to(PACKAGE)))
    assert homes == {name: ["calibrate.py"] for name in POLICY_FUNCTIONS}


def test_percentile_policy_is_parsed_and_other_policies_are_not() -> None:
    assert percentile_of("percentile:99") == 99.0 and percentile_of("percentile:97.5") == 97.5
    assert percentile_of("f1") is None and percentile_of("") is None


@pytest.fixture(scope="module")
def tiny() -> tuple[Path, object, np.ndarray, np.ndarray]:
    """(bundle, its manifest, parity inputs, their scores through the bundle)."""
    bundle = Path(tiny_bundle("onnx"))
    inputs = parity_images()
    return bundle, read_bundle(bundle).manifest, inputs, runtime_raw_scores(bundle, inputs, "image")


def test_refit_applies_the_runs_percentile_to_the_held_out_inputs(tiny: tuple) -> None:
    bundle, manifest, inputs, scores = tiny
    _, meta = fitted_tiny()
    normal = np.stack(synthetic_images(6, seed=7))
    new, record, change = refit_through_bundle(
        bundle, manifest, meta, "image", lambda: normal, {"factory": "SQ8"}, inputs, scores
    )
    normal_scores = runtime_raw_scores(bundle, normal, "image")
    want = threshold_from_normal(normal_scores, 99.0)
    assert record["method"] == "refit" and record["n_inputs"] == 6
    assert new.threshold == pytest.approx(want)
    assert new.normalisation == normalisation_from_scores(normal_scores, want)
    # the same bundle scored twice: nothing moved
    assert change["score_max_rel_change"] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    ("policy", "normal", "why"),
    [("percentile:99", None, "could not be reproduced"), ("f1", "images", "needs labelled")],
)
def test_without_usable_inputs_the_run_threshold_is_scaled_and_logged(
    tiny: tuple, policy: str, normal: str | None, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    bundle, manifest, inputs, scores = tiny
    _, meta = fitted_tiny()
    meta = {**meta, "threshold": {**meta["threshold"], "policy": policy}}
    images = np.stack(synthetic_images(3, seed=7)) if normal else None
    new, record, _ = refit_through_bundle(
        bundle,
        manifest,
        meta,
        "image",
        lambda: images,
        {"factory": "PQ4", "dist_ratio_median": 1.5},
        inputs,
        scores,
    )
    assert record["method"] == "scaled_by_dist_ratio_median" and why in record["reason"]
    assert new.threshold == pytest.approx(1.5 * meta["threshold"]["value"])
    assert new.normalisation["max"] == pytest.approx(1.5 * meta["normalisation"]["max"])
    assert why in caplog.text


def test_a_run_without_threshold_keeps_none_and_loads_no_inputs(tiny: tuple) -> None:
    bundle, manifest, inputs, scores = tiny

    def never() -> np.ndarray:
        raise AssertionError("the held-out inputs were loaded for nothing")

    new, record, _ = refit_through_bundle(
        bundle, manifest, {}, "image", never, {"factory": "SQ8"}, inputs, scores
    )
    assert record["method"] == "none" and new is manifest
