"""A bundle is hostile input: every defect of issue 15 ends in a named error, within bounded
memory, and signed bundles refuse tampering (including re-hashed members) before parsing."""

from __future__ import annotations

import hashlib
import json
import struct
import tracemalloc
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from edgead.bundle import npy_bytes_to_array, read_bundle, sign_bundle
from edgead.bundle_checks import json_depth
from edgead.cli.main import app
from edgead.errors import BackendRuntimeError, BundleError, ConfigError
from edgead.ops.nn_index import validate_index_bytes
from edgead.runtime import detector as detector_mod
from edgead.runtime.detector import Detector
from edgead.signing import generate_keypair
from tests.helpers.tiny_detectors import SIZE_PX, tiny_bundle


@pytest.fixture(scope="module")
def bundle() -> Path:
    return tiny_bundle("onnx")


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def _write(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _with_manifest(src: Path, dst: Path, edit: Any, rehash: dict[str, bytes] | None = None) -> Path:
    """Copy `src` with its manifest edited by `edit(dict)` and members replaced (re-hashed)."""
    members = _members(src)
    manifest = json.loads(members["manifest.json"])
    for name, data in (rehash or {}).items():
        members[name] = data
        manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    edit(manifest)
    members["manifest.json"] = json.dumps(manifest).encode()
    return _write(dst, members)


def _local_header(raw: bytes, name: str) -> int:
    pos = raw.find(b"PK\x03\x04")
    while pos >= 0:
        n_len = struct.unpack_from("<H", raw, pos + 26)[0]
        if raw[pos + 30 : pos + 30 + n_len] == name.encode():
            return pos
        pos = raw.find(b"PK\x03\x04", pos + 4)
    raise AssertionError(f"{name} not found")


# ------------------------------------------------------------------ zip layer
def test_corrupt_deflate_data_is_a_bundle_error(bundle: Path, tmp_path: Path) -> None:
    raw = bytearray(bundle.read_bytes())
    pos = _local_header(bytes(raw), "model.onnx")
    n_len, e_len = struct.unpack_from("<HH", raw, pos + 26)
    raw[pos + 30 + n_len + e_len] = 0xFF  # BTYPE 11: reserved -> zlib.error on inflate
    bad = tmp_path / "deflate.edgead"
    bad.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="model.onnx"):
        read_bundle(bad)


def test_unknown_compression_method_is_a_bundle_error(bundle: Path, tmp_path: Path) -> None:
    raw = bytearray(bundle.read_bytes())
    pos = _local_header(bytes(raw), "model.onnx")
    struct.pack_into("<H", raw, pos + 8, 99)
    central = raw.find(b"PK\x01\x02")
    while central >= 0:
        n_len = struct.unpack_from("<H", raw, central + 28)[0]
        if raw[central + 46 : central + 46 + n_len] == b"model.onnx":
            struct.pack_into("<H", raw, central + 10, 99)
        central = raw.find(b"PK\x01\x02", central + 4)
    bad = tmp_path / "method.edgead"
    bad.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="compression method 99"):
        read_bundle(bad)


def _patch_uncompressed_size(raw: bytes, name: str, size: int) -> bytes:
    out = bytearray(raw)
    for magic, name_at, size_at in ((b"PK\x03\x04", 30, 22), (b"PK\x01\x02", 46, 24)):
        pos = out.find(magic)
        while pos >= 0:
            n_len = struct.unpack_from("<H", out, pos + (26 if name_at == 30 else 28))[0]
            if out[pos + name_at : pos + name_at + n_len] == name.encode():
                struct.pack_into("<I", out, pos + size_at, size)
            pos = out.find(magic, pos + 4)
    return bytes(out)


def test_member_declared_small_that_inflates_huge_is_refused_without_inflating(
    bundle: Path, tmp_path: Path
) -> None:
    zeros = bytes(64 * 1024**2)
    members = _members(bundle)
    manifest = json.loads(members["manifest.json"])
    manifest["files"]["model.onnx"] = {"sha256": hashlib.sha256(zeros).hexdigest(), "size": 1000}
    members["manifest.json"] = json.dumps(manifest).encode()
    members["model.onnx"] = zeros
    raw = _write(tmp_path / "bomb.edgead", members).read_bytes()
    bad = tmp_path / "bomb_small.edgead"
    bad.write_bytes(_patch_uncompressed_size(raw, "model.onnx", 1000))  # the zip lies too
    tracemalloc.start()
    try:
        with pytest.raises(BundleError, match="model.onnx"):
            read_bundle(bad)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024**2, f"{peak / 2**20:.0f} MiB allocated while refusing a zip bomb"


def test_honest_zip_bomb_is_refused_by_its_ratio(bundle: Path, tmp_path: Path) -> None:
    zeros = bytes(64 * 1024**2)
    bad = _with_manifest(bundle, tmp_path / "honest.edgead", lambda m: None, {"model.onnx": zeros})
    tracemalloc.start()
    try:
        with pytest.raises(BundleError, match="zip bomb"):
            read_bundle(bad)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024**2


# ------------------------------------------------------------------ manifest types
def _set(path: tuple[str, ...], value: Any) -> Any:
    def edit(manifest: dict) -> None:
        node = manifest
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return edit


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("graphs",), ["model.onnx"], "graphs"),
        (("threshold",), "0.5", "threshold"),
        (("files", "model.onnx"), "deadbeef", "files.model.onnx"),
        (("index", "dim"), [8], "index.dim"),
        (("schema_version",), 1.0, "schema_version"),
        (("schema_version",), True, "schema_version"),
        (("normalisation",), [0.0, 1.0], "normalisation"),
        (("input", "image_size"), [100000, 100000], "image_size"),
        (("postprocess", "grid"), [4, "4"], "grid"),
        (("outputs",), {"name": "embedding"}, "outputs"),
        (("normalisation", "min"), None, "normalisation.min"),
        (("build",), {"tensorrt": 5}, "build.tensorrt"),
    ],
)
def test_wrong_manifest_types_are_refused_at_load(
    bundle: Path, tmp_path: Path, path: tuple[str, ...], value: Any, message: str
) -> None:
    bad = _with_manifest(bundle, tmp_path / "types.edgead", _set(path, value))
    with pytest.raises(BundleError, match=message):
        read_bundle(bad)


def test_threshold_overflowing_to_inf_is_refused(bundle: Path, tmp_path: Path) -> None:
    members = _members(bundle)
    text = members["manifest.json"].decode()
    manifest = json.loads(text)
    manifest["threshold"] = "__T__"
    members["manifest.json"] = json.dumps(manifest).replace('"__T__"', "1e400").encode()
    with pytest.raises(BundleError, match="manifest"):
        read_bundle(_write(tmp_path / "inf.edgead", members))


def test_deeply_nested_manifest_is_refused_without_recursion(bundle: Path, tmp_path: Path) -> None:
    members = _members(bundle)
    manifest = json.loads(members["manifest.json"])
    manifest["metrics"] = "__DEEP__"
    deep = "[" * 100_000 + "]" * 100_000
    members["manifest.json"] = json.dumps(manifest).replace('"__DEEP__"', deep).encode()
    with pytest.raises(BundleError, match="nests 100001 levels"):
        read_bundle(_write(tmp_path / "deep.edgead", members))
    assert json_depth(b'{"a": "[[[[", "b": [[1]]}') == 3  # brackets in strings do not count


# ------------------------------------------------------------------ member contents
def test_npy_header_declaring_1e11_elements_is_refused_before_allocating() -> None:
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (100000000000,), }".ljust(117)
    data = b"\x93NUMPY\x01\x00" + struct.pack("<H", 118) + header.encode() + b"\n" + bytes(64)
    with pytest.raises(BundleError, match=r"arrays/bank.npy.*\(100000000000,\)"):
        npy_bytes_to_array(data, "arrays/bank.npy")


def test_faiss_flat_length_field_is_checked_before_faiss_allocates(bundle: Path) -> None:
    data = bytearray(_members(bundle)["memory_bank.faiss"])
    assert data[:4] == b"IxF2"
    struct.pack_into("<Q", data, 37, 2**40)  # the vector-count field after the 37-byte header
    with pytest.raises(BundleError, match="flat vectors holds 1099511627776 items, expected 1024"):
        validate_index_bytes(bytes(data))


@pytest.mark.parametrize(
    "factory",
    [
        "Flat",
        "SQfp16",
        "SQ8",
        "PQ4np",
        "PQ8x4fs",
        "IVF4,PQ4np",
        "HNSW8,SQ8",
        "PCA8,PQ4x4fs",
        "RR16,SQ8",
    ],
)
def test_every_index_type_the_exporter_writes_passes_the_layout_check(factory: str) -> None:
    import faiss

    from edgead.ops.faiss_check import check_index_bytes

    vectors = np.random.default_rng(0).normal(size=(600, 16)).astype(np.float32)
    index = faiss.index_factory(16, factory)
    faiss.omp_set_num_threads(1)
    index.train(vectors)
    index.add(vectors[:300])
    data = faiss.serialize_index(index).tobytes()
    assert check_index_bytes(data)[1:] == (16, 300)
    with pytest.raises(BundleError):
        check_index_bytes(data[:-1])
    with pytest.raises(BundleError):
        check_index_bytes(data + b"\0")


def test_graph_failing_at_run_time_raises_a_named_error(
    bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Broken:
        name = "fake/CPU"
        info: dict = {}
        max_batch = None

        def run(self, batch: np.ndarray) -> dict:
            raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : boom")

        def close(self) -> None:
            pass

    monkeypatch.setitem(detector_mod.BACKEND_FACTORIES, "onnxruntime", lambda b, d, t: Broken())
    det = Detector.load(bundle, device="cpu", backend="onnxruntime")
    frame = np.zeros((SIZE_PX, SIZE_PX, 3), np.uint8)
    with pytest.raises(BackendRuntimeError, match=r"fake/CPU.*'images'.*RuntimeError: \[ONNX"):
        det(frame)
    result = CliRunner().invoke(app, ["predict", str(bundle), str(_png(bundle.parent, frame))])
    assert result.exit_code == 2 and "fake/CPU failed" in result.output


def _png(folder: Path, frame: np.ndarray) -> Path:
    import cv2

    path = folder / "frame.png"
    cv2.imwrite(str(path), frame)
    return path


# ------------------------------------------------------------------ signatures
@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    folder = tmp_path_factory.mktemp("keys")
    private, public = generate_keypair(folder / "signer.key")
    _, other_public = generate_keypair(folder / "other.key")
    return private, public, other_public


@pytest.fixture()
def signed(bundle: Path, keys: tuple[Path, Path, Path], tmp_path: Path) -> Path:
    return sign_bundle(bundle, keys[0], tmp_path / "signed.edgead")


def test_signed_bundle_loads_with_its_key_only(
    signed: Path, bundle: Path, keys: tuple[Path, Path, Path]
) -> None:
    _, public, other = keys
    assert read_bundle(signed, trusted_keys=[public]).manifest.detector == "_tiny_patch"
    assert read_bundle(signed).manifest.detector == "_tiny_patch"  # no keys: not checked
    with pytest.raises(BundleError, match="does not verify"):
        read_bundle(signed, trusted_keys=[other])
    with pytest.raises(BundleError, match="not signed"):
        read_bundle(bundle, trusted_keys=[public])
    assert keys[0].stat().st_mode & 0o077 == 0  # the private key is private


@pytest.mark.parametrize("target", ["model.onnx", "memory_bank.faiss", "threshold"])
def test_rehashed_tampering_is_refused_with_a_trusted_key(
    signed: Path, keys: tuple[Path, Path, Path], tmp_path: Path, target: str
) -> None:
    members = _members(signed)
    if target == "threshold":
        bad = _with_manifest(signed, tmp_path / "t.edgead", _set(("threshold",), 1e9))
    else:
        data = bytearray(members[target])
        data[len(data) // 2] ^= 0x01
        bad = _with_manifest(signed, tmp_path / "t.edgead", lambda m: None, {target: bytes(data)})
    assert read_bundle(bad).manifest is not None  # hashes alone do not notice
    with pytest.raises(BundleError, match="does not verify"):
        read_bundle(bad, trusted_keys=[keys[1]])


def test_signature_is_checked_before_the_manifest_is_parsed(
    signed: Path, keys: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    members = _members(signed)
    members["manifest.json"] = b"[" * 100_000 + b"]" * 100_000
    bad = _write(tmp_path / "deep_signed.edgead", members)
    with pytest.raises(BundleError, match="does not verify"):
        read_bundle(bad, trusted_keys=[keys[1]])


def test_cli_keygen_sign_and_trusted_key(bundle: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    key = tmp_path / "k" / "station.key"
    assert runner.invoke(app, ["keygen", str(key)]).exit_code == 0
    assert key.exists() and key.with_name("station.key.pub").exists()
    again = runner.invoke(app, ["keygen", str(key)])
    assert again.exit_code == 2 and "refusing to overwrite" in again.output
    out = tmp_path / "signed.edgead"
    result = runner.invoke(app, ["sign", str(bundle), "--key", str(key), "--out", str(out)])
    assert result.exit_code == 0, result.output
    frame = _png(tmp_path, np.full((SIZE_PX, SIZE_PX, 3), 100, np.uint8))
    pub = str(key.with_name("station.key.pub"))
    ok = runner.invoke(app, ["predict", str(out), str(frame), "--trusted-key", pub, "--json"])
    assert ok.exit_code == 0, ok.output
    refused = runner.invoke(app, ["predict", str(bundle), str(frame), "--trusted-key", pub])
    assert refused.exit_code == 2 and "not signed" in refused.output


def test_trusted_key_must_be_an_ed25519_public_key(
    signed: Path, keys: tuple, tmp_path: Path
) -> None:
    junk = tmp_path / "junk.pub"
    junk.write_text("not a key")
    with pytest.raises(ConfigError, match="not a PEM public key"):
        read_bundle(signed, trusted_keys=[junk])
    with pytest.raises(ConfigError, match="trusted_keys is empty"):
        read_bundle(signed, trusted_keys=[])


def test_signature_member_name_is_reserved(bundle: Path, tmp_path: Path) -> None:
    from edgead.bundle import Manifest, write_bundle

    manifest = Manifest.from_dict(json.loads(_members(bundle)["manifest.json"]))
    with pytest.raises(BundleError, match="manifest.sig"):
        write_bundle(tmp_path / "x.edgead", manifest, {"manifest.sig": b"x"})


def test_grid_that_does_not_fit_the_graph_output_is_a_bundle_error(
    bundle: Path, tmp_path: Path
) -> None:
    bad = _with_manifest(bundle, tmp_path / "grid.edgead", _set(("postprocess", "grid"), [3, 5]))
    with Detector.load(bad, device="cpu") as det:  # 16 patches per image, the grid says 15
        with pytest.raises(BundleError, match="'embedding'.*1 x 15 x D"):
            det(np.zeros((SIZE_PX, SIZE_PX, 3), np.uint8))


def test_oversized_signature_member_is_refused_before_reading(
    signed: Path, keys: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    members = _members(signed)
    members["manifest.sig"] = b" " * 100_000
    bad = _write(tmp_path / "bigsig.edgead", members)
    with pytest.raises(BundleError, match="manifest.sig is 100000 bytes"):
        read_bundle(bad, trusted_keys=[keys[1]])


@pytest.mark.parametrize(
    "args",
    [
        ["predict", "{b}", "{img}"],
        ["run", "{b}", "--source", "{dir}", "--out", "{tmp}/run"],
        ["eval", "{b}", "--data", "{dir}"],
        ["bench", "{b}", "--no-isolate", "--frames", "1"],
        ["build-engine", "{b}"],
        ["calibrate", "{b}", "--good", "{dir}", "--out", "{tmp}/c.edgead"],
        ["batch", "{b}", "--data", "{dir}", "--out", "{tmp}/r.parquet"],
        ["serve", "{b}", "--port", "0"],
    ],
    ids=lambda a: a[0],
)
def test_every_command_that_loads_a_bundle_takes_trusted_keys(
    bundle: Path, keys: tuple[Path, Path, Path], tmp_path: Path, args: list[str]
) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    img = _png(folder, np.full((SIZE_PX, SIZE_PX, 3), 90, np.uint8))
    fill = {"b": str(bundle), "img": str(img), "dir": str(folder), "tmp": str(tmp_path)}
    argv = [a.format(**fill) for a in args] + ["--trusted-key", str(keys[1])]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 2, result.output
    assert "not signed" in result.output


def test_openvino_reader_value_error_falls_back_by_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from types import SimpleNamespace

    from edgead.runtime.backends import openvino as ov_backend

    class Core:
        available_devices = ["CPU"]

        def read_model(self, **kwargs: Any) -> None:  # what a fuzzed model.xml did
            raise UnicodeDecodeError("utf-8", b"\xad", 0, 1, "invalid start byte")

    bundle = tiny_bundle("openvino")  # exported (and parity-checked) before the fake
    fake = SimpleNamespace(Core=Core, Tensor=lambda array: array)
    monkeypatch.setattr(ov_backend, "_import_openvino", lambda: fake)
    with Detector.load(bundle, device="cpu") as det:
        assert det.backend.startswith("onnxruntime/")
        assert any("utf-8" in reason for reason in det.fallbacks), det.fallbacks
