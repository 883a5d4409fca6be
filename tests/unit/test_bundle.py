"""Bundle verification: every way a `.edgead` file can be wrong is refused with a BundleError."""

from __future__ import annotations

import dataclasses
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edgead.bundle import (
    SCHEMA_VERSION,
    InputSpec,
    Manifest,
    OutputSpec,
    array_to_npy_bytes,
    read_bundle,
    write_bundle,
)
from edgead.errors import BundleError


def _manifest() -> Manifest:
    return Manifest(
        schema_version=SCHEMA_VERSION,
        edgead_version="0.1.0",
        detector="x",
        modality="tabular",
        target="onnx",
        precision="fp32",
        graphs={"onnx": "model.onnx"},
        input=InputSpec(name="rows", dtype="float32", shape=(None, 3), layout="NC"),
        outputs=(OutputSpec(name="score", shape=(None,)),),
        postprocess={"kind": "rows"},
        threshold=1.0,
        normalisation={"method": "minmax_threshold", "min": 0.0, "max": 2.0, "threshold": 1.0},
        arrays={"w": "arrays/w.npy"},
    )


MEMBERS = {
    "model.onnx": b"not really onnx but hashed" * 10,
    "arrays/w.npy": array_to_npy_bytes(np.arange(6, dtype=np.float32)),
}


@pytest.fixture()
def good(tmp_path: Path) -> Path:
    path = tmp_path / "good.edgead"
    write_bundle(path, _manifest(), MEMBERS)
    return path


def _rewrite(
    src: Path, dst: Path, *, members: dict[str, bytes] | None = None, manifest: dict | None = None
) -> Path:
    """Copy a bundle, replacing member bytes and/or the manifest JSON (no re-hashing)."""
    with zipfile.ZipFile(src) as zf:
        data = {name: zf.read(name) for name in zf.namelist()}
    if manifest is not None:
        data["manifest.json"] = json.dumps(manifest).encode()
    if members is not None:
        data = {"manifest.json": data["manifest.json"], **members}
    with zipfile.ZipFile(dst, "w") as zf:
        for name, content in data.items():
            zf.writestr(name, content)
    return dst


def _manifest_dict(path: Path) -> dict:
    with zipfile.ZipFile(path) as zf:
        return json.loads(zf.read("manifest.json"))


def test_round_trip_keeps_manifest_and_members(good: Path) -> None:
    bundle = read_bundle(good)
    assert bundle.manifest == dataclasses.replace(_manifest(), files=bundle.manifest.files)
    assert bundle.members == MEMBERS
    np.testing.assert_array_equal(bundle.array("w"), np.arange(6, dtype=np.float32))
    assert set(bundle.manifest.files) == set(MEMBERS)
    assert len(bundle.sha256) == 64


def test_wrong_magic_is_refused(good: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.edgead"
    bad.write_bytes(b"GIF89a" + good.read_bytes()[6:])
    with pytest.raises(BundleError, match="wrong magic"):
        read_bundle(bad)


def test_truncated_file_is_refused(good: Path, tmp_path: Path) -> None:
    bad = tmp_path / "cut.edgead"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(BundleError, match="truncated|damaged|cannot be read"):
        read_bundle(bad)


def test_tampered_member_fails_its_hash(good: Path, tmp_path: Path) -> None:
    tampered = dict(MEMBERS, **{"model.onnx": MEMBERS["model.onnx"][:-1] + b"X"})
    bad = _rewrite(good, tmp_path / "bad.edgead", members=tampered)
    with pytest.raises(BundleError, match="'model.onnx' fails its sha256"):
        read_bundle(bad)


def test_missing_member_is_refused(good: Path, tmp_path: Path) -> None:
    bad = _rewrite(good, tmp_path / "bad.edgead", members={"model.onnx": MEMBERS["model.onnx"]})
    with pytest.raises(BundleError, match=r"missing member\(s\) \['arrays/w.npy'\]"):
        read_bundle(bad)


def test_unlisted_extra_member_is_refused(good: Path, tmp_path: Path) -> None:
    bad = _rewrite(good, tmp_path / "bad.edgead", members={**MEMBERS, "extra.bin": b"1"})
    with pytest.raises(BundleError, match="not listed"):
        read_bundle(bad)


@pytest.mark.parametrize(
    "name", ["../evil.txt", "a/../../evil.txt", "/etc/passwd", "C:evil", "a\\b"]
)
def test_unsafe_member_names_are_refused(good: Path, tmp_path: Path, name: str) -> None:
    bad = _rewrite(good, tmp_path / "bad.edgead", members={**MEMBERS, name: b"x"})
    with pytest.raises(BundleError, match="unsafe"):
        read_bundle(bad)
    with pytest.raises(BundleError, match="unsafe"):
        write_bundle(tmp_path / "w.edgead", _manifest(), {name: b"x"})


def test_unknown_schema_version_is_refused(good: Path, tmp_path: Path) -> None:
    manifest = _manifest_dict(good)
    manifest["schema_version"] = SCHEMA_VERSION + 1
    bad = _rewrite(good, tmp_path / "bad.edgead", manifest=manifest)
    with pytest.raises(BundleError, match=f"schema_version {SCHEMA_VERSION + 1} is not supported"):
        read_bundle(bad)


def test_not_a_manifest_is_refused(good: Path, tmp_path: Path) -> None:
    manifest = _manifest_dict(good)
    manifest["format"] = "something-else"
    with pytest.raises(BundleError, match="not an edgead bundle manifest"):
        read_bundle(_rewrite(good, tmp_path / "f.edgead", manifest=manifest))
    manifest = _manifest_dict(good)
    manifest["surprise"] = 1
    with pytest.raises(BundleError, match="unknown keys"):
        read_bundle(_rewrite(good, tmp_path / "k.edgead", manifest=manifest))


def test_graph_pointing_at_absent_member_is_refused(good: Path, tmp_path: Path) -> None:
    manifest = _manifest_dict(good)
    manifest["graphs"]["openvino"] = "model.xml"
    with pytest.raises(BundleError, match="graph 'openvino' names member 'model.xml'"):
        read_bundle(_rewrite(good, tmp_path / "g.edgead", manifest=manifest))


def test_pickled_array_is_refused(tmp_path: Path) -> None:
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    path = tmp_path / "p.edgead"
    write_bundle(path, _manifest(), {"model.onnx": b"m", "arrays/w.npy": buf.getvalue()})
    with pytest.raises(BundleError, match="not a valid .npy"):
        read_bundle(path).array("w")


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="bundle not found"):
        read_bundle(tmp_path / "nope.edgead")
