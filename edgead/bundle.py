"""The bundle: one `.edgead` zip file holding a manifest, graph(s) and arrays. Torch-free.

This is the only code shared by `edgead.export` (writes) and `edgead.runtime` (reads), so the two
sides cannot drift apart. A bundle is untrusted input: `read_bundle` checks the zip magic, the
member names (no absolute paths, no `..`), sizes before inflating (`edgead.bundle_checks`), the
signature when keys are trusted, the typed manifest and the sha256 of every member before
anything is used. Nothing is ever unpickled (`np.load(allow_pickle=False)`).

Layout of a bundle::

    manifest.json        Manifest (below), with {member: {sha256, size}} for every other member
    manifest.sig         optional Ed25519 signature of manifest.json's bytes (`sign_bundle`,
                         checked by `read_bundle(..., trusted_keys=...)`; see edgead.signing)
    model.onnx           graph for ONNX Runtime / TensorRT (always present)
    model.xml, model.bin OpenVINO IR (target openvino)
    memory_bank.faiss    faiss index (PatchCore, kNN/LOF)
    arrays/<name>.npy    extra arrays named in the manifest's `arrays`
    reference/*.npy      reference inputs and fp32 outputs named in the manifest's `reference`
                         (`edgead.runtime.reference`: backends are checked against them)
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import struct
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from edgead._io import atomic_open
from edgead.bundle_checks import (
    MAX_MANIFEST_BYTES,
    MAX_MEMBER_BYTES,
    check_manifest_dict,
    check_member_hash,
    check_npy_header,
    parse_json,
    read_member,
)
from edgead.errors import BundleError

logger = logging.getLogger(__name__)

BUNDLE_FORMAT = "edgead-bundle"
SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.sig"  # optional: Ed25519 signature of the manifest bytes
MAX_MEMBERS = 64
MAX_BUNDLE_BYTES = 3 * 1024**3  # the whole file, read once
_ZIP_MAGIC = b"PK\x03\x04"


@dataclass(frozen=True, kw_only=True)
class InputSpec:
    """What the graph takes.

    Images: uint8, NHWC, RGB, shape (B, H, W, 3) with H, W = `image_size`; the runtime resizes
    frames to `image_size` with `resize` (OpenCV interpolation name) and the graph normalises with
    `mean`/`std` (on 0..1 RGB). Tabular: float32 (B, n_features) raw feature values; the graph
    standardises them.
    """

    name: str
    dtype: str  # "uint8" | "float32"
    shape: tuple[int | None, ...]  # None marks the dynamic batch axis
    layout: str = "NHWC"  # "NHWC" for images, "NC" for tabular
    channel_order: str = "RGB"
    image_size: tuple[int, int] | None = None  # (H, W) px
    resize: str = "area"  # OpenCV interpolation used to reach image_size
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    feature_names: tuple[str, ...] | None = None
    trained_channels: str | None = None  # images: "gray" | "color" files at training; None unknown


@dataclass(frozen=True, kw_only=True)
class OutputSpec:
    """One named graph output: shape with None for the batch axis."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str = "float32"


@dataclass(frozen=True, kw_only=True)
class IndexSpec:
    """A nearest-neighbour index stored in the bundle (faiss's own file format)."""

    file: str
    factory: str  # faiss index_factory string, e.g. "Flat", "SQ8", "PCA64,PQ16"
    metric: str  # "l2" (faiss returns squared L2; the runtime takes the square root)
    dim: int  # dimension of the vectors the graph outputs (before any PCA in the index)
    n_vectors: int
    nprobe: int | None = None
    k: int = 1
    rerank: int = 0  # 0: no re-ranking; else exact re-rank of the top-`rerank` candidates
    rerank_array: str | None = None  # array name (fp16 copy of the bank) used for re-ranking


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """Everything the device needs besides the member files themselves."""

    schema_version: int
    edgead_version: str
    detector: str  # registry name, e.g. "patchcore"
    modality: str  # "image" | "tabular" | "timeseries"
    target: str  # "onnx" | "openvino" | "tensorrt"
    precision: str  # "fp32" | "fp16"
    graphs: dict[str, str]  # format -> member, e.g. {"onnx": "model.onnx", "openvino": "model.xml"}
    input: InputSpec
    outputs: tuple[OutputSpec, ...]
    postprocess: dict[str, Any]  # how the runtime turns graph outputs into score + map
    threshold: float | None  # raw-score units; decision = raw >= threshold
    normalisation: dict[str, Any]  # {"method": "minmax_threshold", "min", "max", "threshold"}
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # member -> {sha256, size}
    backbone: str | None = None
    index: IndexSpec | None = None
    arrays: dict[str, str] = field(default_factory=dict)  # array name -> member (.npy)
    metrics: dict[str, Any] = field(default_factory=dict)  # measured at export
    export: dict[str, Any] = field(default_factory=dict)  # opset, parity errors, timings
    build: dict[str, Any] = field(default_factory=dict)  # e.g. TensorRT engine build settings
    config: dict[str, Any] = field(default_factory=dict)  # the detector's resolved config
    reference: dict[str, Any] = field(default_factory=dict)  # see edgead.runtime.reference
    format: str = BUNDLE_FORMAT

    def to_json(self) -> str:
        """The manifest as JSON text (tuples become lists)."""
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        """Parse a manifest dict; raises BundleError on a wrong format, schema or shape."""
        if not isinstance(data, dict) or data.get("format") != BUNDLE_FORMAT:
            raise BundleError(
                f"not an edgead bundle manifest (format={data.get('format')!r} "
                f"if a dict, expected {BUNDLE_FORMAT!r})"
                if isinstance(data, dict)
                else "manifest.json is not a JSON object"
            )
        check_manifest_dict(data, SCHEMA_VERSION)
        try:
            fields = {f.name for f in dataclasses.fields(cls)}
            unknown = set(data) - fields
            if unknown:
                raise BundleError(f"manifest has unknown keys {sorted(unknown)}")
            kwargs = dict(data)
            kwargs["input"] = _build(InputSpec, data["input"])
            kwargs["outputs"] = tuple(_build(OutputSpec, o) for o in data["outputs"])
            if data.get("index") is not None:
                kwargs["index"] = _build(IndexSpec, data["index"])
            return cls(**kwargs)
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"manifest.json is malformed: {exc!r}") from exc


def _build(cls: type, data: dict[str, Any]) -> Any:
    """Build a nested spec dataclass, turning lists into tuples."""
    hints = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - hints
    if unknown:
        raise BundleError(f"manifest {cls.__name__} has unknown keys {sorted(unknown)}")
    clean = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    return cls(**clean)


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of `data`."""
    return hashlib.sha256(data).hexdigest()


def array_to_npy_bytes(array: np.ndarray) -> bytes:
    """Serialise an array to .npy bytes (no pickle)."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def npy_bytes_to_array(data: bytes, name: str) -> np.ndarray:
    """Read .npy bytes with pickles refused and the header checked against the byte count
    before numpy allocates; BundleError names the member on failure."""
    check_npy_header(data, name)
    try:
        return np.asarray(np.load(io.BytesIO(data), allow_pickle=False))
    except (ValueError, OSError, EOFError) as exc:
        raise BundleError(f"bundle member '{name}' is not a valid .npy array: {exc}") from exc


def _check_member_name(name: str) -> None:
    path = PurePosixPath(name)
    if (
        not name
        or name.startswith("/")
        or "\\" in name
        or ".." in path.parts
        or ":" in name
        or path.is_absolute()
    ):
        raise BundleError(f"bundle member name {name!r} is unsafe (absolute or '..'); refusing it")


def write_bundle(path: str | Path, manifest: Manifest, members: dict[str, bytes]) -> Manifest:
    """Write `manifest` and `members` as one zip file at `path`, atomically.

    Fills `manifest.files` with the sha256 and size of every member. Returns the manifest written.
    """
    for name in members:
        _check_member_name(name)
        if name in (MANIFEST_NAME, SIGNATURE_NAME):
            raise BundleError(f"members may not be called {name}")
    files = {
        name: {"sha256": sha256_bytes(data), "size": len(data)} for name, data in members.items()
    }
    manifest = dataclasses.replace(manifest, files=files)
    with atomic_open(path, "wb") as fh:
        with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
            zf.writestr(MANIFEST_NAME, manifest.to_json())
            for name, data in members.items():
                zf.writestr(name, data)
    return manifest


@dataclass(frozen=True)
class Bundle:
    """A verified bundle: its manifest and member bytes (all hashes checked)."""

    path: Path
    manifest: Manifest
    members: dict[str, bytes]
    sha256: str  # of the whole bundle file

    def member(self, name: str) -> bytes:
        """Bytes of member `name`; BundleError when the manifest names a member that is absent."""
        try:
            return self.members[name]
        except KeyError as exc:
            raise BundleError(f"bundle {self.path} has no member '{name}'") from exc

    def array(self, name: str) -> np.ndarray:
        """The extra array `name` listed in the manifest's `arrays`."""
        if name not in self.manifest.arrays:
            raise BundleError(f"bundle {self.path} has no array '{name}'")
        member = self.manifest.arrays[name]
        return npy_bytes_to_array(self.member(member), member)


def read_bundle(path: str | Path, trusted_keys: Sequence[Any] | None = None) -> Bundle:
    """Open and verify a bundle: magic, member names and sizes, signature, schema, sha256s.

    Nothing is inflated before its compressed and declared sizes were checked against the zip
    directory and the manifest (`edgead.bundle_checks`). With `trusted_keys` (Ed25519 public
    keys or paths to their PEM files, see `edgead.signing`) the bundle must carry a signature of
    its manifest bytes by one of them, checked before the manifest is parsed; the manifest holds
    every member's sha256, so the signature covers the whole bundle.

    Raises:
        BundleError: anything about the file is wrong; the message says what and what to do.
    """
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"bundle not found: {path}")
    size = path.stat().st_size
    if size > MAX_BUNDLE_BYTES:
        raise BundleError(f"{path} is {size} bytes (at most {MAX_BUNDLE_BYTES}); refusing it")
    raw = path.read_bytes()
    if raw[:4] != _ZIP_MAGIC:
        raise BundleError(
            f"{path} is not an edgead bundle (wrong magic {raw[:4]!r}); "
            "make one with `edgead export RUN --out MODEL.edgead`"
        )
    zf, infos = _open_zip(path, raw)
    manifest_raw = read_member(zf, infos[MANIFEST_NAME], infos[MANIFEST_NAME].file_size)
    if trusted_keys is not None:
        from edgead.signing import MAX_SIGNATURE_BYTES, verify_manifest

        signature = infos.get(SIGNATURE_NAME)
        if signature is not None and signature.file_size > MAX_SIGNATURE_BYTES:
            raise BundleError(
                f"{path}: {SIGNATURE_NAME} is {signature.file_size} bytes (a signature has at "
                f"most {MAX_SIGNATURE_BYTES}); refusing it"
            )
        verify_manifest(
            manifest_raw,
            None if signature is None else read_member(zf, signature, signature.file_size),
            trusted_keys,
            path,
        )
    manifest = Manifest.from_dict(parse_json(manifest_raw, f"{path}: manifest.json"))
    listed = set(manifest.files)
    present = set(infos) - {MANIFEST_NAME, SIGNATURE_NAME}
    if listed - present:
        raise BundleError(
            f"{path} is missing member(s) {sorted(listed - present)} named in its manifest"
        )
    if present - listed:
        raise BundleError(
            f"{path} has member(s) {sorted(present - listed)} not listed in its manifest"
        )
    members: dict[str, bytes] = {}
    for name in sorted(listed):
        expected = manifest.files[name]
        data = read_member(zf, infos[name], expected["size"])
        check_member_hash(name, data, expected)
        members[name] = data
    for fmt, member in manifest.graphs.items():
        if member not in members:
            raise BundleError(f"{path}: graph '{fmt}' names member {member!r}, which is absent")
    if "openvino" in manifest.graphs and not manifest.graphs["openvino"].endswith(".xml"):
        raise BundleError(f"{path}: the OpenVINO graph must be an .xml member")
    for name, member in manifest.arrays.items():
        if member not in members or not member.endswith(".npy"):
            raise BundleError(f"{path}: array {name!r} names member {member!r}: absent or not .npy")
    if manifest.index is not None and manifest.index.file not in members:
        raise BundleError(f"{path}: index file {manifest.index.file!r} is absent")
    return Bundle(path=path, manifest=manifest, members=members, sha256=sha256_bytes(raw))


def _open_zip(path: Path, raw: bytes) -> tuple[zipfile.ZipFile, dict[str, zipfile.ZipInfo]]:
    """The zip archive and its members by name, after count, name and size checks."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(raw))
        infos = zf.infolist()
    except (
        zipfile.BadZipFile,
        EOFError,
        OSError,
        ValueError,
        struct.error,
        NotImplementedError,
        RuntimeError,
    ) as exc:
        raise BundleError(f"{path} is truncated or not a valid zip archive: {exc}") from exc
    if len(infos) > MAX_MEMBERS:
        raise BundleError(f"{path} has {len(infos)} members (at most {MAX_MEMBERS}); refusing it")
    names = [info.filename for info in infos]
    if len(set(names)) != len(names):
        raise BundleError(f"{path} has duplicate member names; refusing it")
    for info in infos:
        _check_member_name(info.filename)
        if info.file_size > MAX_MEMBER_BYTES:
            raise BundleError(
                f"{path}: member {info.filename!r} is {info.file_size} bytes; refusing it"
            )
    if MANIFEST_NAME not in names:
        raise BundleError(f"{path} has no {MANIFEST_NAME}; it is not an edgead bundle")
    if zf.getinfo(MANIFEST_NAME).file_size > MAX_MANIFEST_BYTES:
        raise BundleError(
            f"{path}: manifest.json is too large ({zf.getinfo(MANIFEST_NAME).file_size} bytes)"
        )
    return zf, {info.filename: info for info in infos}


def sign_bundle(bundle: str | Path, key: str | Path, out: str | Path | None = None) -> Path:
    """Sign the manifest of a verified bundle with the Ed25519 private key in `key`.

    Writes `out` (default: the bundle itself, replaced atomically) with the manifest and every
    member copied byte for byte and a `manifest.sig` member (see `edgead.signing`) added; an old
    signature is replaced. Returns the path written.

    Raises:
        BundleError: the bundle fails verification.
        ConfigError: the key is missing or not an Ed25519 private key.
    """
    from edgead.signing import key_id, load_private_key, signature_bytes

    private_key = load_private_key(key)
    verified = read_bundle(bundle)
    out_path = Path(out) if out is not None else verified.path
    with zipfile.ZipFile(verified.path) as src:
        info = src.getinfo(MANIFEST_NAME)
        manifest_bytes = read_member(src, info, info.file_size)
    with atomic_open(out_path, "wb") as fh:
        with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED) as dst:
            dst.writestr(MANIFEST_NAME, manifest_bytes)
            dst.writestr(SIGNATURE_NAME, signature_bytes(manifest_bytes, private_key))
            for name, data in verified.members.items():
                dst.writestr(name, data)
    logger.info("signed %s with key %s", out_path, key_id(private_key.public_key()))
    return out_path
