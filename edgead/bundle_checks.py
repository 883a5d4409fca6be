"""Checks that keep a hostile bundle from costing more than it is allowed to. Torch-free.

`edgead.bundle.read_bundle` calls these before it uses anything:

- `read_member`: one zip member, refused *before inflating* when its compression method, its
  sizes in the zip headers and in the manifest disagree or its inflation ratio is that of a zip
  bomb; then read in 1 MiB chunks that stop at the declared size.
- `parse_json`: JSON with a size limit, a nesting-depth limit (checked on the raw bytes, before
  the recursive parser runs) and no NaN / Infinity / overflowing numbers.
- `check_manifest_dict`: the manifest's exact types and ranges (the schema version an exact
  integer, finite floats, positive bounded sizes and counts, known enumerations).
- `check_npy_header`: a `.npy` member's header against the member's size before numpy allocates.

Every failure is a `BundleError` that names the member and what was wrong.
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import re
import struct
import zipfile
import zlib
from typing import Any

import numpy as np

from edgead.errors import BundleError
from edgead.ops.image import INTERPOLATIONS
from edgead.ops.scoring import NN_SCORES

MAX_MEMBER_BYTES = 2 * 1024**3  # 2 GiB: larger than any edge model, smaller than an edge box
MAX_TOTAL_BYTES = 3 * 1024**3  # all members together
MAX_MANIFEST_BYTES = 4 * 1024**2
MAX_JSON_DEPTH = 32
#: Members above this many bytes may inflate at most MAX_INFLATE_RATIO times their compressed
#: size (deflate can reach ~1032x; real weights, indexes and arrays stay far below 100x).
SMALL_MEMBER_BYTES = 1024**2
MAX_INFLATE_RATIO = 100
READ_CHUNK_BYTES = 1024**2
MAX_IMAGE_SIDE_PX = 4096
MAX_NAME_CHARS = 256
_SHA256 = re.compile(r"[0-9a-f]{64}")
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


# ---------------------------------------------------------------------------------- zip members
def read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, declared_size: int) -> bytes:
    """Bytes of member `info`, checked against `declared_size` (the manifest's) before inflating.

    Raises:
        BundleError: encrypted or unknown compression, sizes that disagree, a zip-bomb ratio, or
            data that is damaged or longer / shorter than declared.
    """
    name = info.filename
    if info.flag_bits & 0x1:
        raise BundleError(f"bundle member {name!r} is encrypted; bundles are never encrypted")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise BundleError(
            f"bundle member {name!r} uses zip compression method {info.compress_type}; "
            "bundles use stored or deflate only"
        )
    if info.file_size != declared_size:
        raise BundleError(
            f"bundle member {name!r} is {info.file_size} bytes in the zip directory but "
            f"{declared_size} in the manifest; the bundle was modified or damaged"
        )
    stored_ratio = info.file_size / max(1, info.compress_size)
    if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
        raise BundleError(f"bundle member {name!r} is stored but its sizes differ; damaged")
    if info.file_size > SMALL_MEMBER_BYTES and stored_ratio > MAX_INFLATE_RATIO:
        raise BundleError(
            f"bundle member {name!r} would inflate {stored_ratio:.0f}x "
            f"({info.compress_size} -> {info.file_size} bytes; at most {MAX_INFLATE_RATIO}x "
            "for members over 1 MiB): refusing a likely zip bomb"
        )
    chunks: list[bytes] = []
    total = 0
    try:
        with zf.open(info) as fh:
            while True:
                chunk = fh.read(READ_CHUNK_BYTES)
                if not chunk:
                    break
                total += len(chunk)
                if total > declared_size:
                    raise BundleError(
                        f"bundle member {name!r} inflates past its declared {declared_size} bytes"
                    )
                chunks.append(chunk)
    except BundleError:
        raise
    except (
        zipfile.BadZipFile,
        zlib.error,
        EOFError,
        OSError,
        ValueError,
        struct.error,
        RuntimeError,
        NotImplementedError,
    ) as exc:
        raise BundleError(
            f"bundle member {name!r} cannot be read ({type(exc).__name__}: "
            f"{str(exc)[:200]}); the file is damaged, copy or re-export it"
        ) from exc
    if total != declared_size:
        raise BundleError(
            f"bundle member {name!r} holds {total} bytes, declared {declared_size}; damaged"
        )
    return b"".join(chunks)


def check_member_hash(name: str, data: bytes, expected: dict[str, Any]) -> None:
    """BundleError unless `data` has the manifest's size and sha256."""
    if len(data) != expected["size"] or hashlib.sha256(data).hexdigest() != expected["sha256"]:
        raise BundleError(
            f"bundle member {name!r} fails its sha256/size check; the bundle was modified "
            "or damaged; re-export or copy it again"
        )


# ---------------------------------------------------------------------------------- JSON
def _reject_constant(value: str) -> Any:
    raise ValueError(f"non-finite number {value} is not allowed")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} overflows a 64-bit float")
    return value


def json_depth(data: bytes) -> int:
    """Deepest nesting of [ and { in JSON bytes (strings skipped); no recursion."""
    skeleton = np.frombuffer(_STRINGS.sub(b'""', data), dtype=np.uint8)
    step = np.zeros(len(skeleton), dtype=np.int64)
    step[(skeleton == ord("[")) | (skeleton == ord("{"))] = 1
    step[(skeleton == ord("]")) | (skeleton == ord("}"))] = -1
    return int(np.cumsum(step).max(initial=0))


def parse_json(data: bytes, what: str, max_bytes: int = MAX_MANIFEST_BYTES) -> Any:
    """Parse JSON bytes with size, depth and number limits; BundleError naming `what`."""
    if len(data) > max_bytes:
        raise BundleError(f"{what} is {len(data)} bytes (at most {max_bytes}); refusing it")
    depth = json_depth(data)
    if depth > MAX_JSON_DEPTH:
        raise BundleError(f"{what} nests {depth} levels deep (at most {MAX_JSON_DEPTH})")
    try:
        return json.loads(data, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:
        raise BundleError(f"{what} is not valid JSON: {str(exc)[:200]}") from exc


# ---------------------------------------------------------------------------------- .npy
def check_npy_header(data: bytes, name: str) -> None:
    """BundleError unless `data` is a .npy v1-3 file whose header fits the member's size.

    The header is parsed with `ast.literal_eval` (no pickles, no object dtypes) and its
    shape x itemsize must equal the bytes after the header exactly.
    """
    bad = f"bundle member {name!r} is not a valid .npy array:"
    if data[:6] != b"\x93NUMPY" or len(data) < 10:
        raise BundleError(f"{bad} bad magic")
    major = data[6]
    if major == 1:
        (hlen,), start = struct.unpack("<H", data[8:10]), 10
    elif major in (2, 3) and len(data) >= 12:
        (hlen,), start = struct.unpack("<I", data[8:12]), 12
    else:
        raise BundleError(f"{bad} unknown .npy version {major}")
    if hlen > 65536 or start + hlen > len(data):
        raise BundleError(f"{bad} .npy header length {hlen} is implausible")
    try:
        header = ast.literal_eval(data[start : start + hlen].decode("latin1"))
        dtype = np.dtype(header["descr"])
        shape = tuple(header["shape"])
        fortran = header["fortran_order"]
    except (ValueError, SyntaxError, TypeError, KeyError, MemoryError, RecursionError) as exc:
        raise BundleError(f"{bad} .npy header is malformed: {exc}") from exc
    if (
        not isinstance(header, dict)
        or dtype.hasobject
        or dtype.kind not in "biuf"
        or not isinstance(fortran, bool)
        or len(shape) > 8
        or not all(type(s) is int and 0 <= s <= MAX_MEMBER_BYTES for s in shape)
    ):
        raise BundleError(f"{bad} .npy header {str(header)[:200]} is not a plain numeric array")
    n_bytes = math.prod(shape) * dtype.itemsize
    if n_bytes != len(data) - start - hlen:
        raise BundleError(
            f"{bad} .npy header declares {shape} {dtype} ({n_bytes} bytes) "
            f"but {len(data) - start - hlen} bytes follow it"
        )


# ---------------------------------------------------------------------------------- manifest
def _fail(key: str, expected: str, value: Any) -> BundleError:
    shown = repr(value)
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    return BundleError(
        f"manifest.json: {key} must be {expected}, got {shown} ({type(value).__name__}); "
        "the bundle was modified or made by an incompatible edgead: re-export it"
    )


def _int(value: Any, key: str, lo: int, hi: int) -> int:
    if type(value) is not int or not lo <= value <= hi:
        raise _fail(key, f"an integer in {lo}..{hi}", value)
    return value


def _num(value: Any, key: str, lo: float = -1e300, hi: float = 1e300) -> float:
    if type(value) not in (int, float) or not lo <= value <= hi:
        raise _fail(key, f"a finite number in [{lo:g}, {hi:g}]", value)
    return float(value)


def _str(value: Any, key: str, choices: tuple[str, ...] | None = None) -> str:
    if type(value) is not str or len(value) > MAX_NAME_CHARS or (choices and value not in choices):
        raise _fail(key, f"one of {choices}" if choices else "a short string", value)
    return value


def _dict(value: Any, key: str) -> dict[str, Any]:
    if type(value) is not dict:
        raise _fail(key, "a JSON object", value)
    return value


def _list(value: Any, key: str, lo: int, hi: int) -> list[Any]:
    if type(value) is not list or not lo <= len(value) <= hi:
        raise _fail(key, f"a list of {lo}..{hi} items", value)
    return value


def _opt(value: Any, check: Any, *args: Any) -> None:
    if value is not None:
        check(value, *args)


def _shape(value: Any, key: str) -> None:
    for i, dim in enumerate(_list(value, key, 1, 8)):
        _opt(dim, _int, f"{key}[{i}]", 1, 1 << 24)


def check_manifest_dict(data: dict[str, Any], schema_version: int) -> None:
    """Exact types and ranges of every manifest field the runtime reads; BundleError otherwise.

    Unknown keys are left to `Manifest.from_dict`, which refuses them by name.
    """
    if type(data.get("schema_version")) is not int or data["schema_version"] != schema_version:
        raise BundleError(
            f"bundle schema_version {data.get('schema_version')!r} is not supported by this "
            f"edgead (supports the integer {schema_version}); re-export the model with a "
            "matching edgead version"
        )
    for key in ("edgead_version", "detector"):
        _str(data.get(key), key)
    _str(data.get("modality"), "modality", ("image", "tabular", "timeseries"))
    _str(data.get("target"), "target", ("onnx", "openvino", "tensorrt"))
    _str(data.get("precision"), "precision", ("fp32", "fp16", "bf16", "int8"))
    _opt(data.get("backbone"), _str, "backbone")
    graphs = _dict(data.get("graphs"), "graphs")
    if "onnx" not in graphs or len(graphs) > 4:
        raise _fail("graphs", "an object with an 'onnx' member and at most 4 formats", graphs)
    for fmt, member in graphs.items():
        _str(member, f"graphs.{fmt}")
    files = _dict(data.get("files", {}), "files")
    total = 0
    for name, entry in files.items():
        entry = _dict(entry, f"files.{name}")
        if set(entry) != {"sha256", "size"} or type(entry["sha256"]) is not str:
            raise _fail(f"files.{name}", "{sha256: hex string, size: int}", entry)
        if not _SHA256.fullmatch(entry["sha256"]):
            raise _fail(f"files.{name}.sha256", "64 lowercase hex digits", entry["sha256"])
        total += _int(entry["size"], f"files.{name}.size", 0, MAX_MEMBER_BYTES)
    if total > MAX_TOTAL_BYTES:
        raise BundleError(
            f"manifest.json declares {total} bytes of members (at most {MAX_TOTAL_BYTES})"
        )
    _check_input(_dict(data.get("input"), "input"))
    outputs = _list(data.get("outputs"), "outputs", 1, 16)
    for i, out in enumerate(outputs):
        out = _dict(out, f"outputs[{i}]")
        _str(out.get("name"), f"outputs[{i}].name")
        _shape(out.get("shape"), f"outputs[{i}].shape")
        _str(out.get("dtype", "float32"), f"outputs[{i}].dtype", ("float32", "float16"))
    _check_postprocess(_dict(data.get("postprocess"), "postprocess"))
    _opt(data.get("threshold"), _num, "threshold")
    _check_normalisation(_dict(data.get("normalisation"), "normalisation"))
    _opt(data.get("index"), _check_index)
    for name, member in _dict(data.get("arrays", {}), "arrays").items():
        _str(member, f"arrays.{name}")
    for key in ("metrics", "export", "build", "config"):
        _dict(data.get(key, {}), key)
    trt = data.get("build", {}).get("tensorrt")
    if trt is not None:
        _str(_dict(trt, "build.tensorrt").get("precision", "fp32"), "build.tensorrt.precision")
    run = data.get("export", {}).get("run")
    if run is not None and _dict(run, "export.run").get("data") is not None:
        _dict(run["data"], "export.run.data")


def _check_input(spec: dict[str, Any]) -> None:
    _str(spec.get("name"), "input.name")
    _str(spec.get("dtype"), "input.dtype", ("uint8", "float32"))
    _shape(spec.get("shape"), "input.shape")
    _str(spec.get("layout", "NHWC"), "input.layout", ("NHWC", "NC", "NTC"))
    _str(spec.get("channel_order", "RGB"), "input.channel_order", ("RGB", "BGR", ""))
    resizes = (*INTERPOLATIONS, "")  # every resize the runtime knows, "" for tabular
    _str(spec.get("resize", "area"), "input.resize", resizes)
    size = spec.get("image_size")
    if size is not None:
        for i, side in enumerate(_list(size, "input.image_size", 2, 2)):
            _int(side, f"input.image_size[{i}]", 1, MAX_IMAGE_SIDE_PX)
    for key in ("mean", "std"):
        if spec.get(key) is not None:
            for i, v in enumerate(_list(spec[key], f"input.{key}", 1, 4)):
                _num(v, f"input.{key}[{i}]", 1e-12 if key == "std" else -1e6, 1e6)
    if spec.get("feature_names") is not None:
        for i, v in enumerate(_list(spec["feature_names"], "input.feature_names", 0, 1 << 16)):
            _str(v, f"input.feature_names[{i}]")


def _check_postprocess(post: dict[str, Any]) -> None:
    kind = _str(post.get("kind"), "postprocess.kind")
    if "blur_sigma" in post:
        _num(post["blur_sigma"], "postprocess.blur_sigma", 0.0, 64.0)
    if kind == "nn_index" and "grid" not in post:
        raise _fail("postprocess.grid", "the (h, w) patch grid of an nn_index bundle", None)
    if "grid" in post:
        for i, v in enumerate(_list(post["grid"], "postprocess.grid", 2, 2)):
            _int(v, f"postprocess.grid[{i}]", 1, MAX_IMAGE_SIDE_PX)
    for key in ("k", "num_neighbors", "top_k"):
        if key in post:
            _int(post[key], f"postprocess.{key}", 1, 4096)
    if "score" in post:
        _str(post["score"], "postprocess.score", NN_SCORES)
    if kind == "rows_nn_index":
        _str(post.get("method"), "postprocess.method", ("largest", "mean", "lof"))
        if post.get("lof") is not None:
            lof = _dict(post["lof"], "postprocess.lof")
            for key in ("k_distance", "lrd"):
                if key in lof:
                    _str(lof[key], f"postprocess.lof.{key}")
            if "eps" in lof:
                _num(lof["eps"], "postprocess.lof.eps", 0.0, 1.0)


def _check_normalisation(norm: dict[str, Any]) -> None:
    for key in ("min", "max", "threshold"):
        if key in norm:  # absent: uncalibrated; present: a finite number, never null
            _num(norm[key], f"normalisation.{key}")
    _opt(norm.get("method"), _str, "normalisation.method")


def _check_index(spec: Any) -> None:
    spec = _dict(spec, "index")
    _str(spec.get("file"), "index.file")
    _str(spec.get("factory"), "index.factory")
    _str(spec.get("metric"), "index.metric", ("l2",))
    _int(spec.get("dim"), "index.dim", 1, 1 << 16)
    _int(spec.get("n_vectors"), "index.n_vectors", 1, 1 << 31)
    _opt(spec.get("nprobe"), _int, "index.nprobe", 1, 1 << 20)
    _int(spec.get("k", 1), "index.k", 1, 4096)
    _int(spec.get("rerank", 0), "index.rerank", 0, 1 << 16)
    _opt(spec.get("rerank_array"), _str, "index.rerank_array")
