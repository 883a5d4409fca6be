"""ExportConfig: the export's options, validated before any graph is traced."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from edgead.errors import ExportError
from edgead.export.exporter import ExportConfig, run_export
from tests.helpers.tiny_detectors import TinyRows, TinyRowsConfig, fitted_tiny


def test_aliases_are_stored_under_the_canonical_target() -> None:
    assert ExportConfig(target="engine").target == "tensorrt"
    assert ExportConfig(target="ov").target == "openvino"
    assert ExportConfig().target == "onnx" and ExportConfig().precision == "fp32"


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"target": "coreml"}, "unknown target"),
        ({"precision": "fp8"}, "unknown precision"),
        ({"target": "onnx", "precision": "bf16"}, "openvino"),
        ({"target": "onnx", "precision": "fp16"}, "--target openvino"),
        ({"threads": 0}, "threads"),
        ({"threads": True}, "threads"),
    ],
)
def test_bad_options_are_refused_at_construction(options: dict, words: str) -> None:
    with pytest.raises(ExportError, match=words):
        ExportConfig(**options)


def test_config_is_frozen_and_owns_its_index_options() -> None:
    index = {"index": "flat"}
    config = ExportConfig(index=index)
    index["index"] = "pq4"
    assert config.index == {"index": "flat"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.target = "openvino"  # type: ignore[misc]


def test_tabular_detectors_refuse_tensorrt_before_any_tracing(tmp_path: Path) -> None:
    det = TinyRows(TinyRowsConfig())
    det.fit(np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32))
    with pytest.raises(ExportError, match="TensorRT"):
        ExportConfig(target="tensorrt").check_detector(det)
    assert not (tmp_path / "x.edgead").exists()


def test_run_export_leaves_auto_to_export_detector(tmp_path: Path) -> None:
    det, meta = fitted_tiny()
    with pytest.raises(ExportError, match="auto"):
        run_export(det, meta, ExportConfig(precision="auto"), tmp_path / "x.edgead")
    assert not (tmp_path / "x.edgead").exists()


def test_run_export_makes_the_same_bundle_as_export_detector(tmp_path: Path) -> None:
    from edgead.bundle import read_bundle
    from edgead.export import export_detector

    det, meta = fitted_tiny()
    a = export_detector(det, meta, "onnx", "fp32", tmp_path / "a.edgead", index={"index": "flat"})
    b = run_export(det, meta, ExportConfig(index={"index": "flat"}), tmp_path / "b.edgead")
    assert a.index == b.index and a.threshold == b.threshold and a.input == b.input
    members_a, members_b = read_bundle(tmp_path / "a.edgead"), read_bundle(tmp_path / "b.edgead")
    assert members_a.members["model.onnx"] == members_b.members["model.onnx"]
