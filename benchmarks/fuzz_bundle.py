"""Fuzz the bundle loader: seeded mutations of real bundles, each loaded and scored in a worker.

    python benchmarks/fuzz_bundle.py --bundles a.edgead b.edgead ... --cases 10000 [--seed 0]
        [--timeout-s 60] [--mem-limit-mib 1024] [--signed] [--json benchmarks/results/x.json]

Each case is one mutated copy of one seed bundle (made by the project's exporter), written to a
temporary file and handed to a worker process that loads it with `Detector.load(device="cpu")`
(OpenVINO bundles run on OpenVINO, the others on ONNX Runtime) and scores one frame or a few rows.
Mutations (`MUTATORS`): random byte flips, truncation, member swaps (with and without re-hashed
manifest entries), manifest value and type mutations (wrong types, non-finite and huge numbers,
deleted / unknown keys, deep nesting), re-hashed member mutations (flipped bytes, inflated length
fields in faiss and .npy headers, truncation; the manifest's sha256 updated so only the
loader's own checks stand between the bytes and the parsers) and zip bombs (256 MiB of zeros,
declared honestly, declared small in the manifest, or declared small in the zip headers too).

Workers are reused (the per-case peak RSS is measured after resetting the kernel's high-water
mark through /proc/self/clear_refs) and limited with `resource.setrlimit(RLIMIT_AS)` to their
size after warm-up plus --mem-limit-mib; one that times out is killed and counted as a hang, one
that dies as a crash. Outcomes per case:

    refused     an EdgeadError at load (or at scoring): the named, clean refusal
    loaded      loaded and scored (e.g. a changed threshold: integrity is not authenticity)
    raw         any other exception: a bug, printed with its traceback's last line
    crash       the worker died (signal or exit)
    hang        no answer within --timeout-s

With --signed every seed bundle is signed with a fresh Ed25519 key and every case is loaded with
that key trusted: a case that loads although its manifest or a member differs from the seed's
counts as `tampered_loaded` (the floor is 0).

The report (table on stdout, JSON in benchmarks/results/) gives counts per outcome, per mutator
and per seed bundle, the baseline RSS of each seed (after loading it once in the worker) and the
largest peak RSS above that baseline among refused cases.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import io
import json
import logging
import multiprocessing as mp
import os
import random
import resource
import struct
import sys
import tempfile
import time
import traceback
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
BOMB_BYTES = 256 * 1024**2

logger = logging.getLogger("fuzz_bundle")


# ----------------------------------------------------------------------------- seeds
@dataclass
class Seed:
    """A seed bundle: its members in zip order (manifest first) and parsed manifest."""

    path: Path
    label: str
    members: list[tuple[str, bytes]]
    manifest: dict[str, Any]
    content_hash: str = ""
    bomb_bytes: int = BOMB_BYTES
    bombs: dict[str, bytes] = field(default_factory=dict)

    def member(self, name: str) -> bytes:
        return dict(self.members)[name]


def load_seed(path: Path) -> Seed:
    with zipfile.ZipFile(path) as zf:
        members = [(info.filename, zf.read(info.filename)) for info in zf.infolist()]
    manifest = json.loads(dict(members)[MANIFEST])
    label = f"{manifest['detector']}/{manifest['target']}"
    index = manifest.get("index")
    if index:
        label += f"/{index['factory']}"
    seed = Seed(path=path, label=label, members=members, manifest=manifest)
    seed.content_hash = content_hash(members)
    return seed


def content_hash(members: list[tuple[str, bytes]]) -> str:
    """sha256 over the manifest and every member except the signature (what a loader uses)."""
    h = hashlib.sha256()
    for name, data in sorted(members):
        if name != SIGNATURE:
            h.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()


def write_zip(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return buf.getvalue()


def _rehash(manifest: dict[str, Any], name: str, data: bytes) -> None:
    files = manifest.get("files")
    if isinstance(files, dict) and isinstance(files.get(name), dict):
        files[name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def _with_manifest(seed: Seed, manifest_text: str | bytes, members: Any = None) -> bytes:
    raw = manifest_text.encode() if isinstance(manifest_text, str) else manifest_text
    rest = [(n, d) for n, d in (members or seed.members) if n != MANIFEST]
    return write_zip([(MANIFEST, raw), *rest])


# ----------------------------------------------------------------------------- mutators
def mut_byte_flips(seed: Seed, rng: random.Random) -> bytes:
    raw = bytearray(seed.path.read_bytes())
    region = rng.random()
    for _ in range(rng.randint(1, 8)):
        if region < 0.3:  # the central directory and end record live at the end
            pos = len(raw) - 1 - rng.randrange(min(len(raw), 400))
        elif region < 0.4:  # local header of the manifest
            pos = rng.randrange(min(len(raw), 80))
        else:
            pos = rng.randrange(len(raw))
        raw[pos] ^= 1 << rng.randrange(8)
    return bytes(raw)


def mut_truncate(seed: Seed, rng: random.Random) -> bytes:
    raw = seed.path.read_bytes()
    return raw[: rng.randrange(len(raw))]


def mut_member_swap(seed: Seed, rng: random.Random) -> bytes:
    names = [n for n, _ in seed.members if n not in (MANIFEST, SIGNATURE)]
    if len(names) < 2:
        return mut_byte_flips(seed, rng)
    a, b = rng.sample(names, 2)
    data = dict(seed.members)
    members = [(n, data[b] if n == a else data[a] if n == b else d) for n, d in seed.members]
    manifest = copy.deepcopy(seed.manifest)
    if rng.random() < 0.6:
        _rehash(manifest, a, data[b])
        _rehash(manifest, b, data[a])
    if rng.random() < 0.2:  # swap names in the manifest's pointers instead
        text = json.dumps(manifest).replace(a, "\0").replace(b, a).replace("\0", b)
        return _with_manifest(seed, text, members)
    return _with_manifest(seed, json.dumps(manifest, indent=2), members)


_RAW_TOKENS = ["1e400", "-1e400", "NaN", "Infinity", "1.0", "true", "1" + "0" * 5000, "-0"]
_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    1,
    2,
    2**31,
    2**63,
    -(2**63),
    1e308,
    -1e308,
    0.5,
    1e-300,
    "",
    "x",
    "model.onnx",
    "../../etc/passwd",
    "A" * 5000,
    [],
    {},
    [1, 2],
    [None],
    ["a", "b"],
    {"a": 1},
    [[1, 2], [3, 4]],
    100000,
    [100000, 100000],
]


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def _set(root: Any, path: tuple[Any, ...], value: Any) -> None:
    node = root
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


def _get(root: Any, path: tuple[Any, ...]) -> Any:
    node = root
    for key in path:
        node = node[key]
    return node


def _mutated_value(old: Any, rng: random.Random) -> Any:
    if isinstance(old, bool) or rng.random() < 0.5:
        return copy.deepcopy(rng.choice(_VALUES))
    if isinstance(old, (int, float)):
        return rng.choice([-old, old * 10 ** rng.choice([3, 6, 9, 12]), old + 1, old - 1, 0])
    if isinstance(old, str):
        return rng.choice([old + "x", old.upper(), old[::-1], old * 3, str(len(old))])
    if isinstance(old, list):
        return rng.choice([old * 2, old[:-1], [*old, old[0] if old else 1], list(reversed(old))])
    if isinstance(old, dict):
        return {} if rng.random() < 0.5 else {**old, "unknown_key": 1}
    return copy.deepcopy(rng.choice(_VALUES))


def mut_manifest(seed: Seed, rng: random.Random) -> bytes:
    manifest = copy.deepcopy(seed.manifest)
    paths = _paths(manifest)
    op = rng.random()
    raw_token = None
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        path = rng.choice(paths)
        try:
            old = _get(manifest, path)
        except (KeyError, IndexError, TypeError):
            continue
        if op < 0.1:  # delete the key / element
            parent = _get(manifest, path[:-1]) if len(path) > 1 else manifest
            if isinstance(parent, dict):
                parent.pop(path[-1], None)
            elif isinstance(parent, list) and path[-1] < len(parent):
                parent.pop(path[-1])
        elif op < 0.2:  # a raw JSON token the json module would not write
            raw_token = rng.choice(_RAW_TOKENS)
            _set(manifest, path, "__RAW_TOKEN__")
        else:
            _set(manifest, path, _mutated_value(old, rng))
        paths = _paths(manifest) or [("format",)]
    if rng.random() < 0.05:
        manifest[rng.choice(["extra", "graphs2", "__proto__"])] = 1
    text = json.dumps(manifest, indent=rng.choice([None, 2]))
    if raw_token is not None:
        text = text.replace('"__RAW_TOKEN__"', raw_token, 1)
    return _with_manifest(seed, text)


def mut_manifest_deep(seed: Seed, rng: random.Random) -> bytes:
    depth = rng.choice([40, 1000, 100_000])
    manifest = copy.deepcopy(seed.manifest)
    marker = "__DEEP__"
    manifest[rng.choice(["metrics", "config", "export"])] = marker
    text = json.dumps(manifest).replace(f'"{marker}"', "[" * depth + "]" * depth)
    if rng.random() < 0.3:
        text = text + " " * (5 * 1024**2)  # past the manifest size limit
    return _with_manifest(seed, text)


def _inflate_length_field(data: bytes, rng: random.Random) -> bytes:
    raw = bytearray(data)
    if len(raw) < 16:
        return bytes(raw) + b"\xff" * 8
    pos = rng.randrange(0, min(len(raw) - 8, 4096)) & ~7 if rng.random() < 0.7 else 0
    pos = max(pos, 0)
    value = rng.choice([2**40, 2**62, 10**9, 2**31, 2**33 + 7, 0, 2**64 - 1])
    raw[pos : pos + 8] = struct.pack("<Q", value)
    return bytes(raw)


def _npy_huge_header(data: bytes, rng: random.Random) -> bytes:
    n = rng.choice([10**11, 2**40, 2**62, 10**5])
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + str(n) + ", 16), }"
    header = header.ljust(118) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + data[128:]


def mut_rehashed_member(seed: Seed, rng: random.Random) -> bytes:
    names = [n for n, _ in seed.members if n not in (MANIFEST, SIGNATURE)]
    weights = [4 if n.endswith((".faiss", ".npy")) else 2 for n in names]
    name = rng.choices(names, weights=weights)[0]
    data = seed.member(name)
    op = rng.random()
    if op < 0.35:
        raw = bytearray(data)
        for _ in range(rng.randint(1, 16)):
            if raw:
                raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
        new = bytes(raw)
    elif op < 0.6:
        new = _inflate_length_field(data, rng)
    elif op < 0.7 and name.endswith(".npy"):
        new = _npy_huge_header(data, rng)
    elif op < 0.85:
        new = data[: rng.randrange(len(data) + 1)]
    else:
        new = data + bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    manifest = copy.deepcopy(seed.manifest)
    _rehash(manifest, name, new)
    members = [(n, new if n == name else d) for n, d in seed.members]
    return _with_manifest(seed, json.dumps(manifest, indent=2), members)


def _bomb_template(seed: Seed, name: str, declared_small: bool) -> bytes:
    """Seed bundle with member `name` replaced by 256 MiB of zeros (cached); the manifest gives
    the zeros' true sha256 and either their true size or the original member's size."""
    key = f"{name}:{declared_small}"
    if key not in seed.bombs:
        zeros = bytes(seed.bomb_bytes)
        manifest = copy.deepcopy(seed.manifest)
        _rehash(manifest, name, zeros)
        if declared_small:
            manifest["files"][name]["size"] = len(seed.member(name))
        members = [(n, zeros if n == name else d) for n, d in seed.members if n != MANIFEST]
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
            zf.writestr(MANIFEST, json.dumps(manifest, indent=2))
            for n, d in members:
                zf.writestr(n, d)
        seed.bombs[key] = buf.getvalue()
    return seed.bombs[key]


def _patch_sizes(raw: bytes, name: str, size: int) -> bytes:
    """Set the uncompressed size of member `name` to `size` in its local and central headers."""
    out = bytearray(raw)
    encoded = name.encode()
    pos = 0
    while True:
        pos = out.find(b"PK\x03\x04", pos)
        if pos < 0:
            break
        n_len = struct.unpack_from("<H", out, pos + 26)[0]
        if bytes(out[pos + 30 : pos + 30 + n_len]) == encoded:
            struct.pack_into("<I", out, pos + 22, size)
        pos += 4
    pos = 0
    while True:
        pos = out.find(b"PK\x01\x02", pos)
        if pos < 0:
            break
        n_len = struct.unpack_from("<H", out, pos + 28)[0]
        if bytes(out[pos + 46 : pos + 46 + n_len]) == encoded:
            struct.pack_into("<I", out, pos + 24, size)
        pos += 4
    return bytes(out)


def mut_zip_bomb(seed: Seed, rng: random.Random) -> bytes:
    names = sorted(n for n, _ in seed.members if n not in (MANIFEST, SIGNATURE))
    name = rng.choice(names[:3])  # a few templates per seed keep the cache small
    variant = rng.choice(["honest", "manifest_small", "headers_small"])
    bomb = _bomb_template(seed, name, declared_small=variant != "honest")
    if variant == "headers_small":  # the zip directory lies too: only inflating tells
        return _patch_sizes(bomb, name, len(seed.member(name)))
    return bomb


MUTATORS = {
    "byte_flips": (mut_byte_flips, 20),
    "truncate": (mut_truncate, 8),
    "member_swap": (mut_member_swap, 8),
    "manifest_value": (mut_manifest, 30),
    "manifest_deep": (mut_manifest_deep, 3),
    "rehashed_member": (mut_rehashed_member, 28),
    "zip_bomb": (mut_zip_bomb, 3),
}


def make_case(seed: Seed, mutator: str, rng: random.Random) -> bytes:
    """The bytes of one mutated bundle (a signed seed keeps its now-stale signature)."""
    return MUTATORS[mutator][0](seed, rng)


# ----------------------------------------------------------------------------- worker
def _status_kib(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:  # not Linux / not allowed: peaks are then process-lifetime maxima
        pass


def _load_and_score(path: str, trusted_keys: list[str] | None) -> tuple[str, str, str | None]:
    """(outcome, detail, content hash of what loaded)."""
    import numpy as np

    from edgead.errors import EdgeadError
    from edgead.runtime.detector import Detector

    stage = "load"
    try:
        det = Detector.load(path, device="cpu", threads=1, trusted_keys=trusted_keys)
        stage = "score"
        with det:
            loaded = det._bundle  # noqa: SLF001 - the harness checks what was accepted
            members = [(MANIFEST, b"")] + sorted(loaded.members.items())
            with zipfile.ZipFile(path) as zf:
                members[0] = (MANIFEST, zf.read(MANIFEST))
            digest = content_hash(members)
            rng = np.random.default_rng(0)
            if det.manifest.modality == "image":
                det(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8))
            else:
                n_features = det.manifest.input.shape[-1]
                n_features = n_features if isinstance(n_features, int) else 8
                det.score_rows(rng.normal(size=(4, n_features)))
        return "loaded", "", digest
    except EdgeadError as exc:
        return "refused", f"{stage}: {type(exc).__name__}: {str(exc)[:160]}", None
    except BaseException as exc:  # noqa: BLE001 - what the fuzz is here to find
        last = traceback.extract_tb(exc.__traceback__)[-1]
        where = f"{Path(last.filename).name}:{last.lineno}"
        return "raw", f"{stage}: {type(exc).__name__} at {where}: {str(exc)[:200]}", None


def worker_main(conn: Any, seeds: list[str], mem_limit_mib: int, trusted: list[str] | None) -> None:
    """Warm up on every seed (baseline RSS), set the memory limit, then serve cases."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    logging.disable(logging.CRITICAL)
    import warnings

    warnings.filterwarnings("ignore")
    baselines = {}
    for _ in range(2):  # the second pass measures each seed with every library loaded
        for path in seeds:
            outcome, detail, _ = _load_and_score(path, trusted)
            if outcome != "loaded":
                conn.send(("error", f"seed {path} does not load: {outcome} {detail}"))
                return
            baselines[path] = _status_kib("VmRSS")
    limit = (_status_kib("VmSize") + mem_limit_mib * 1024) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    conn.send(("ready", baselines))
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        case_id, path = msg
        _reset_peak()
        rss_before = _status_kib("VmRSS")
        start = time.perf_counter()
        outcome, detail, digest = _load_and_score(path, trusted)
        conn.send(
            (
                case_id,
                outcome,
                detail,
                digest,
                _status_kib("VmHWM"),
                rss_before,
                time.perf_counter() - start,
            )
        )


class Worker:
    """One reusable worker process (restarted after a hang, a crash or `recycle` cases)."""

    def __init__(self, seeds: list[str], mem_limit_mib: int, trusted: list[str] | None) -> None:
        self.args = (seeds, mem_limit_mib, trusted)
        self.baselines: dict[str, int] = {}
        self.proc: Any = None
        self.served = 0
        self.start()

    def start(self) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=worker_main, args=(child, *self.args), daemon=True)
        self.proc.start()
        child.close()
        if not self.conn.poll(600):
            raise RuntimeError("worker did not warm up within 600 s")
        kind, payload = self.conn.recv()
        if kind != "ready":
            raise RuntimeError(payload)
        self.baselines = payload
        self.served = 0

    def stop(self) -> None:
        if self.proc is not None and self.proc.is_alive():
            try:
                self.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
            self.proc.join(5)
            if self.proc.is_alive():
                self.proc.kill()
                self.proc.join(5)

    def run(self, case_id: int, path: str, timeout_s: float) -> tuple[Any, ...]:
        self.conn.send((case_id, path))
        if not self.conn.poll(timeout_s):
            self.proc.kill()
            self.proc.join(5)
            self.start()
            return (case_id, "hang", f"no answer within {timeout_s} s", None, 0, 0, timeout_s)
        try:
            reply = self.conn.recv()
        except EOFError:
            self.proc.join(5)
            code = self.proc.exitcode
            self.start()
            return (case_id, "crash", f"worker died (exit code {code})", None, 0, 0, 0.0)
        self.served += 1
        return reply


# ----------------------------------------------------------------------------- driver
def sign_seeds(paths: list[Path], out_dir: Path) -> tuple[list[Path], str]:
    """Signed copies of the seed bundles and the path of the trusted public key."""
    from edgead.bundle import sign_bundle
    from edgead.signing import generate_keypair

    key, pub = generate_keypair(out_dir / "fuzz.key")
    signed = [sign_bundle(p, key, out_dir / f"signed_{i}_{p.name}") for i, p in enumerate(paths)]
    return signed, str(pub)


def run_fuzz(
    bundles: list[Path],
    cases: int,
    seed: int = 0,
    timeout_s: float = 60.0,
    mem_limit_mib: int = 1024,
    signed: bool = False,
    recycle: int = 500,
    progress_every: int = 200,
    work_dir: Path | None = None,
    bomb_mib: int = BOMB_BYTES // 1024**2,
) -> dict[str, Any]:
    """Run `cases` seeded mutations over `bundles`; returns the JSON-ready report."""
    tmp = tempfile.TemporaryDirectory(prefix="edgead-fuzz-", dir=work_dir)
    tmp_dir = Path(tmp.name)
    trusted = None
    paths = [Path(b) for b in bundles]
    if signed:
        paths, pub = sign_seeds(paths, tmp_dir)
        trusted = [pub]
    seeds = [load_seed(p) for p in paths]
    for s in seeds:
        s.bomb_bytes = bomb_mib * 1024**2
    worker = Worker([str(p) for p in paths], mem_limit_mib, trusted)
    names = list(MUTATORS)
    weights = [MUTATORS[n][1] for n in names]
    counts: dict[str, int] = {}
    by_mutator: dict[str, dict[str, int]] = {}
    by_seed: dict[str, dict[str, int]] = {}
    worst_refused: dict[str, Any] = {}
    examples: dict[str, list[str]] = {}
    tampered_loaded = 0
    start = time.perf_counter()
    try:
        for case_id in range(cases):
            rng = random.Random(seed * 1_000_003 + case_id)
            s = seeds[case_id % len(seeds)]
            mutator = rng.choices(names, weights=weights)[0]
            data = make_case(s, mutator, rng)
            case_path = tmp_dir / f"case_{case_id}.edgead"
            case_path.write_bytes(data)
            _, outcome, detail, digest, peak_kib, before_kib, _ = worker.run(
                case_id, str(case_path), timeout_s
            )
            case_path.unlink()
            if outcome == "loaded" and signed and digest != s.content_hash:
                tampered_loaded += 1
                examples.setdefault("tampered_loaded", []).append(f"{case_id} {mutator}")
            counts[outcome] = counts.get(outcome, 0) + 1
            by_mutator.setdefault(mutator, {}).setdefault(outcome, 0)
            by_mutator[mutator][outcome] += 1
            by_seed.setdefault(s.label, {}).setdefault(outcome, 0)
            by_seed[s.label][outcome] += 1
            if outcome in ("raw", "crash", "hang"):
                line = f"{case_id} {mutator} {s.label}: {detail}"
                logger.warning("%s: %s", outcome, line)
                if len(examples.get(outcome, [])) < 30:
                    examples.setdefault(outcome, []).append(line)
            if outcome == "refused" and peak_kib:
                above = (peak_kib - worker.baselines[str(s.path)]) / 1024
                entry = worst_refused.get(s.label)
                if entry is None or above > entry["peak_above_baseline_mib"]:
                    worst_refused[s.label] = {
                        "peak_above_baseline_mib": round(above, 1),
                        "peak_rss_mib": round(peak_kib / 1024, 1),
                        "case": case_id,
                        "mutator": mutator,
                        "detail": detail[:160],
                    }
            if worker.served >= recycle:
                worker.stop()
                worker.start()
            if progress_every and (case_id + 1) % progress_every == 0:
                logger.info(
                    "%d/%d cases, %.0f s: %s",
                    case_id + 1,
                    cases,
                    time.perf_counter() - start,
                    counts,
                )
    finally:
        worker.stop()
        tmp.cleanup()
    return {
        "cases": cases,
        "seed": seed,
        "signed": signed,
        "timeout_s": timeout_s,
        "mem_limit_mib": mem_limit_mib,
        "bomb_mib": bomb_mib,
        "duration_s": round(time.perf_counter() - start, 1),
        "bundles": {s.label: str(b) for s, b in zip(seeds, bundles, strict=True)},
        "counts": counts,
        "tampered_loaded": tampered_loaded,
        "by_mutator": by_mutator,
        "by_seed": by_seed,
        "baseline_rss_mib": {
            s.label: round(worker.baselines[str(s.path)] / 1024, 1) for s in seeds
        },
        "worst_refused_peak": worst_refused,
        "examples": examples,
    }


def print_report(report: dict[str, Any]) -> None:
    outcomes = ("refused", "loaded", "raw", "crash", "hang")
    print(
        f"fuzz_bundle: {report['cases']} cases, seed {report['seed']}, "
        f"signed {report['signed']}, {report['duration_s']} s"
    )
    print(f"{'':24s}" + "".join(f"{o:>9s}" for o in outcomes))
    print(f"{'all':24s}" + "".join(f"{report['counts'].get(o, 0):9d}" for o in outcomes))
    for name, row in sorted(report["by_mutator"].items()):
        print(f"{name:24s}" + "".join(f"{row.get(o, 0):9d}" for o in outcomes))
    for name, row in sorted(report["by_seed"].items()):
        print(f"{name[:24]:24s}" + "".join(f"{row.get(o, 0):9d}" for o in outcomes))
    if report["signed"]:
        print(f"tampered but loaded with the trusted key: {report['tampered_loaded']}")
    for label, worst in sorted(report["worst_refused_peak"].items()):
        print(
            f"{label}: baseline RSS {report['baseline_rss_mib'][label]} MiB; largest peak of a "
            f"refused case {worst['peak_above_baseline_mib']} MiB above it ({worst['mutator']})"
        )
    for kind in ("raw", "crash", "hang", "tampered_loaded"):
        for line in report["examples"].get(kind, [])[:10]:
            print(f"  {kind}: {line}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundles", nargs="+", type=Path, required=True)
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout-s", type=float, default=60.0)
    parser.add_argument("--mem-limit-mib", type=int, default=1024)
    parser.add_argument("--signed", action="store_true")
    parser.add_argument("--recycle", type=int, default=500, help="Restart the worker every N.")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    report = run_fuzz(
        args.bundles,
        args.cases,
        seed=args.seed,
        timeout_s=args.timeout_s,
        mem_limit_mib=args.mem_limit_mib,
        signed=args.signed,
        recycle=args.recycle,
    )
    print_report(report)
    out = args.json or RESULTS / f"fuzz_bundle_{'signed_' if args.signed else ''}{args.seed}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    bad = sum(report["counts"].get(k, 0) for k in ("raw", "crash", "hang"))
    return 1 if bad or report["tampered_loaded"] else 0


if __name__ == "__main__":
    sys.exit(main())
