"""`edgead bench`: latency, throughput, memory and accuracy of a bundle on every backend here.

Torch-free (numpy, OpenCV, the runtime); matplotlib (the PNG chart) and scikit-learn (AUROC) are
imported lazily and belong to the `bench` extra.

For each bundle and each backend/device available on this machine (ONNX Runtime CPU/CUDA/TensorRT,
OpenVINO CPU/GPU/NPU, TensorRT), one worker process (`python -m edgead.bench --worker`, so peak RSS
is that backend's alone):
    1. loads the bundle (load_ms; what was really used: `Detector.backend`, and any fallback),
    2. warms up, then times `frames` frames per batch size with time.perf_counter():
       p50/p95/p99 of the per-call wall time and of each stage the runtime reports
       (preprocess, graph, search, postprocess), and throughput in images/s,
    3. with `data` (an MVTec-layout folder): scores every test image (batch 1) for image AUROC,
    4. reports peak RSS (getrusage ru_maxrss) and RSS before loading.
The parent adds, per bundle, the AUROC change against the bundle's own export-time AUROC
(`manifest.metrics["image_auroc"]`) and the largest |raw score difference| against the reference
entry (ONNX Runtime on the CPU with the bundle's precision, or the first that ran). Each worker
also runs the bundle's reference inputs (`edgead.runtime.reference`) and reports the backend's
max relative error against the exported model's fp32 outputs, with the manifest's tolerance.

Latency frames: the data set's test images at full resolution (BGR, so resizing is timed), or,
without data, seeded uniform noise at 640x480 px.
"""

from __future__ import annotations

import json
import logging
import platform
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from edgead import __version__
from edgead.errors import ConfigError, DataError, EdgeadError

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
STAGES = ("preprocess", "graph", "search", "postprocess", "total")
NOISE_FRAME_HW = (480, 640)


@dataclass(frozen=True)
class BackendChoice:
    """One thing to benchmark: `Detector.load(device=..., backend=...)` plus a label."""

    label: str  # e.g. "onnxruntime/cpu", "openvino/GPU"
    device: str
    backend: str


def available_choices(manifest: Any, requested: list[str] | None = None) -> list[BackendChoice]:
    """Backends worth trying for a bundle on this machine (installed, device present).

    Args:
        manifest: the bundle's Manifest (which graphs it carries).
        requested: labels or backend names to keep ("onnxruntime", "openvino/CPU", ...);
            None keeps all.

    Raises:
        ConfigError: `requested` names nothing available here (the message lists what is).
    """
    from edgead.devices.detect import detect_machine

    info = detect_machine()  # the one probe of what is installed (also `edgead devices`)
    choices = [BackendChoice("onnxruntime/cpu", "cpu", "onnxruntime")]
    if "CUDAExecutionProvider" in info.ort_providers:
        choices.append(BackendChoice("onnxruntime/cuda", "cuda", "onnxruntime"))
    if "openvino" in manifest.graphs:
        for dev in ("CPU", "GPU", "NPU"):
            if any(d == dev or d.startswith(dev + ".") for d in info.openvino_devices):
                choices.append(BackendChoice(f"openvino/{dev}", dev.lower(), "openvino"))
    if info.tensorrt_version is not None:
        choices.append(BackendChoice("tensorrt/cuda", "cuda", "tensorrt"))
    if not requested or requested == ["all"]:
        return choices
    keep = [
        c
        for c in choices
        if c.label in requested
        or c.backend in requested
        or c.label.lower() in (r.lower() for r in requested)
    ]
    if not keep:
        raise ConfigError(
            f"--backends {','.join(requested)} matches nothing available here; "
            f"available: {', '.join(c.label for c in choices)}"
        )
    return keep


# ------------------------------------------------------------------------------------ worker


def _rss_mib() -> float:
    """Current resident set size of this process, MiB (from /proc/self/status; 0 elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def _peak_rss_mib() -> float:
    """Peak resident set size of this process, MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def _percentiles(values: list[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=np.float64)
    p50, p95, p99 = np.percentile(array, [50, 95, 99])
    return {
        "p50": round(float(p50), 3),
        "p95": round(float(p95), 3),
        "p99": round(float(p99), 3),
        "mean": round(float(array.mean()), 3),
    }


def latency_frames(data: str | None, n: int, seed: int = 0) -> list[np.ndarray]:
    """uint8 frames for timing (gray (H, W) or BGR, as `read_frame` decodes them): up to `n` test
    images of `data` at full size, else noise."""
    if data:
        from edgead.data.images import MVTecFolder
        from edgead.ops.decode import read_frame

        paths = MVTecFolder(Path(data), 32).test_paths[: max(1, n)]
        return [read_frame(p) for p in paths]  # DataError names an undecodable file
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*NOISE_FRAME_HW, 3), dtype=np.uint8) for _ in range(min(n, 8))]


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Benchmark one bundle on one backend in this process; the dict the parent collects.

    spec: {"model", "label", "device", "backend", "threads", "batches", "frames", "warmup",
    "data", "trusted_keys" (optional list of public key paths)}.
    """
    from edgead.runtime.detector import Detector

    out: dict[str, Any] = {"label": spec["label"], "status": "ok"}
    frames = latency_frames(spec.get("data"), int(spec["frames"]))
    out["rss_before_load_mib"] = round(_rss_mib(), 1)
    start = time.perf_counter()
    det = Detector.load(
        spec["model"],
        device=spec["device"],
        backend=spec["backend"],
        threads=spec.get("threads"),
        trusted_keys=spec.get("trusted_keys"),
    )
    out["load_ms"] = round((time.perf_counter() - start) * 1e3, 1)
    out["backend_used"] = det.backend
    out["backend_info"] = {
        k: v
        for k, v in det.backend_info.items()
        if isinstance(v, (str, int, float, bool, list, type(None)))
    }
    out["load_fallbacks"] = list(det.fallbacks)
    if not det.backend.lower().startswith(spec["backend"]) or (
        spec["label"] != "onnxruntime/cpu" and det.backend.endswith("CPUExecutionProvider")
    ):
        out["status"] = "unavailable"
        out["error"] = f"asked for {spec['label']}, got {det.backend}: " + "; ".join(det.fallbacks)
        det.close()
        return out
    out["reference"] = _reference_error(det)
    try:
        out["batches"] = {}
        for batch in spec["batches"]:
            out["batches"][str(batch)] = _time_batch(
                det, frames, int(batch), int(spec["frames"]), int(spec.get("warmup", 3))
            )
        if spec.get("data"):
            out["scores"] = _score_test_set(det, spec["data"])
    finally:
        det.close()
    out["rss_after_mib"] = round(_rss_mib(), 1)
    out["peak_rss_mib"] = round(_peak_rss_mib(), 1)
    return out


def _reference_error(det: Any) -> dict[str, Any]:
    """The backend's error on the bundle's reference outputs ({"max_rel_err", "tolerance",
    "precision", "passed"}), or {"error": why} for a bundle without reference outputs."""
    try:
        check = det.check_reference()
    except EdgeadError as exc:
        return {"error": str(exc)}
    return {
        "max_rel_err": check.max_rel_err,
        "tolerance": check.tolerance,
        "precision": check.precision,
        "passed": check.passed,
    }


def _time_batch(
    det: Any, frames: list[np.ndarray], batch: int, n_frames: int, warmup: int
) -> dict[str, Any]:
    """Latency percentiles (ms per call, per stage) and throughput (images/s) for one batch size."""
    calls = max(1, -(-n_frames // batch))

    def batch_at(i: int) -> list[np.ndarray]:
        return [frames[(i * batch + j) % len(frames)] for j in range(batch)]

    for i in range(warmup):
        det(batch_at(i), channel_order="BGR")
    stages: dict[str, list[float]] = {s: [] for s in STAGES}
    t_all = time.perf_counter()
    for i in range(calls):
        t0 = time.perf_counter()
        results = det(batch_at(i), channel_order="BGR")
        stages["total"].append((time.perf_counter() - t0) * 1e3)
        for key, value in results[0].timings_ms.items():
            stages.setdefault(key, []).append(float(value))
    elapsed = time.perf_counter() - t_all
    return {
        "calls": calls,
        "images": calls * batch,
        "throughput_ips": round(calls * batch / elapsed, 3),
        "latency_ms": {k: _percentiles(v) for k, v in stages.items() if v},
    }


def _score_test_set(det: Any, data: str) -> dict[str, Any]:
    """Raw scores (batch 1) of every test image, at the bundle's input size, with labels."""
    from edgead.data.images import MVTecFolder

    size = det.image_size
    test = MVTecFolder(Path(data), int(size[0])).test_set()
    raw = [float(det(img, channel_order="RGB").raw_score) for img in test.images]
    return {
        "raw": raw,
        "labels": [int(v) for v in test.labels],
        "files": [p.name for p in test.paths],
    }


# ------------------------------------------------------------------------------------ parent


def _run_isolated(spec: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """run_worker(spec) in a fresh interpreter; a failure becomes {"status": "failed", ...}."""
    cmd = [sys.executable, "-m", "edgead.bench", "--worker"]
    try:
        proc = subprocess.run(
            cmd,
            input=json.dumps(spec),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {
            "label": spec["label"],
            "status": "failed",
            "error": f"worker timed out after {timeout_s:.0f} s",
        }
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-3:]
        return {
            "label": spec["label"],
            "status": "failed",
            "error": f"worker exited {proc.returncode}: {' | '.join(tail)}",
        }
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _auroc(labels: list[int], scores: list[float]) -> float | None:
    if len(set(labels)) < 2:
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def report_path(results_file: str | Path | None, out_dir: Path, prefix: str) -> Path:
    """`results_file` when given, else `out_dir / f"{prefix}-<UTC timestamp>.json"`."""
    if results_file:
        return Path(results_file)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return out_dir / f"{prefix}-{stamp}.json"


def write_report(
    report: dict[str, Any], results_file: str | Path | None, out_dir: Path, prefix: str
) -> Path:
    """Write a benchmark report as JSON, atomically, to `report_path(...)`; returns the path."""
    from edgead._io import write_json_atomic

    out = report_path(results_file, out_dir, prefix)
    write_json_atomic(out, report)
    return out


def git_sha(cwd: Path | None = None) -> str | None:
    """The git commit checked out at `cwd` (default: this package's folder), or None."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
            cwd=cwd or Path(__file__).resolve().parent,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version(), "numpy": np.__version__}
    for module in ("onnxruntime", "openvino", "tensorrt", "faiss", "cv2"):
        try:
            mod = __import__(module)
            versions[module] = str(getattr(mod, "__version__", None) or mod.get_version())
        except (ImportError, AttributeError):
            versions[module] = None
    return versions


def bench_bundles(
    models: list[str | Path],
    *,
    backends: list[str] | None = None,
    batches: tuple[int, ...] = (1,),
    threads: int | None = None,
    frames: int = 50,
    warmup: int = 3,
    data: str | None = None,
    isolate: bool = True,
    timeout_s: float = 1800.0,
    progress: Any = None,
    trusted_keys: list[str] | None = None,
) -> dict[str, Any]:
    """Benchmark each bundle on each available backend; the JSON-ready report.

    Args:
        models: bundle paths (e.g. an fp32 and an fp16 export of one run, side by side).
        backends: labels/names to keep (see `available_choices`); None or ["all"]: all.
        batches: batch sizes to time.
        threads: CPU threads for the backends (None: library defaults).
        frames: images timed per batch size (after `warmup` calls).
        data: MVTec-layout folder: real frames for timing, and AUROC / score differences.
        isolate: one worker process per backend (clean peak RSS); False runs in this process.
        progress: optional callback(done, total, description).
        trusted_keys: Ed25519 public key paths every bundle must be signed by (None: no check).

    Raises:
        BundleError: a bundle fails verification. ConfigError: bad batches/backends.
    """
    from edgead.bundle import read_bundle
    from edgead.devices import detect_machine, match_profile

    if not batches or any(b < 1 for b in batches):
        raise ConfigError(f"--batch expects positive sizes, got {batches}")
    if frames < 1:
        raise ConfigError(f"--frames must be >= 1, got {frames}")
    if data is not None and not Path(data).is_dir():
        raise DataError(f"--data {data} is not a folder; pass an MVTec-layout category folder")
    machine = detect_machine()
    profile = match_profile(machine)
    plan: list[tuple[Any, BackendChoice]] = []
    seen: dict[tuple[str, str], str] = {}
    for model in models:
        bundle = read_bundle(model, trusted_keys=trusted_keys)
        for choice in available_choices(bundle.manifest, backends):
            key = (choice.label, _graph_key(bundle.manifest, choice))
            if key in seen:  # e.g. the fp32 model.onnx inside an OpenVINO fp16 bundle
                logger.info(
                    "skipping %s on %s: same graph as %s", bundle.path.name, choice.label, seen[key]
                )
                continue
            seen[key] = bundle.path.name
            plan.append((bundle, choice))
    results: list[dict[str, Any]] = []
    for i, (bundle, choice) in enumerate(plan):
        m = bundle.manifest
        if progress:
            progress(i, len(plan), f"{Path(bundle.path).name} on {choice.label}")
        spec = {
            "model": str(bundle.path),
            "label": choice.label,
            "device": choice.device,
            "backend": choice.backend,
            "threads": threads,
            "batches": list(batches),
            "frames": frames,
            "warmup": warmup,
            "data": data,
            "trusted_keys": trusted_keys,
        }
        logger.info("benchmarking %s on %s", bundle.path.name, choice.label)
        if isolate:
            entry = _run_isolated(spec, timeout_s)
        else:
            try:
                entry = run_worker(spec)
            except Exception as exc:  # noqa: BLE001 - one backend failing must not stop the rest
                logger.exception("benchmark of %s failed", choice.label)
                entry = {"label": choice.label, "status": "failed", "error": repr(exc)}
        entry.update(
            {
                "bundle": str(bundle.path),
                "bundle_sha256": bundle.sha256,
                "detector": m.detector,
                "target": m.target,
                "precision": run_precision(m, choice, entry.get("backend_used", "")),
                "bundle_precision": m.precision,
                "image_size": list(m.input.image_size or ()),
                "threads": threads,
            }
        )
        if entry["status"] != "ok":
            logger.warning("%s on %s: %s", bundle.path.name, choice.label, entry.get("error"))
        results.append(entry)
        if progress:
            progress(i + 1, len(plan), f"{Path(bundle.path).name} on {choice.label}")
    _add_accuracy(results, {str(b.path): b.manifest for b, _ in plan})
    return {
        "schema_version": SCHEMA_VERSION,
        "edgead_version": __version__,
        "git_sha": git_sha(),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": {**machine.to_dict(), "profile": profile.name if profile else None},
        "settings": {
            "batches": list(batches),
            "frames": frames,
            "warmup": warmup,
            "threads": threads,
            "data": data,
            "isolated": isolate,
            "latency_frames": "data test images, full size"
            if data
            else f"uniform noise {NOISE_FRAME_HW[1]}x{NOISE_FRAME_HW[0]} px",
        },
        "versions": _versions(),
        "results": results,
    }


def _graph_key(manifest: Any, choice: BackendChoice) -> str:
    """sha256 (and precision) of the graph `choice` runs, plus the nearest-neighbour index's:
    two equal keys time the same thing."""
    index = manifest.index
    index_key = str(manifest.files[index.file]["sha256"]) if index is not None else ""
    if choice.backend == "openvino":
        graph = str(manifest.files[manifest.graphs["openvino"]]["sha256"]) + str(manifest.precision)
        return graph + index_key
    key = str(manifest.files[manifest.graphs["onnx"]]["sha256"])
    key = key + str(manifest.precision) if choice.backend == "tensorrt" else key
    return key + index_key


def run_precision(manifest: Any, choice: BackendChoice, backend_used: str) -> str:
    """Precision the graph really ran at: model.onnx is fp32 (an int8 bundle's is its QDQ int8
    graph) except under TensorRT builds."""
    if choice.backend == "openvino":
        return str(manifest.precision)
    if choice.backend == "tensorrt" or backend_used.endswith("TensorrtExecutionProvider"):
        return str(manifest.build.get("tensorrt", {}).get("precision", manifest.precision))
    return "int8" if manifest.precision == "int8" else "fp32"


def _add_accuracy(results: list[dict[str, Any]], manifests: dict[str, Any]) -> None:
    """AUROC, its change vs the bundle's export-time AUROC, max |raw score diff| vs reference."""
    with_scores = [r for r in results if r.get("status") == "ok" and "scores" in r]
    if not with_scores:
        return
    reference = next(
        (r for r in with_scores if r["label"] == "onnxruntime/cpu" and r["precision"] == "fp32"),
        with_scores[0],
    )
    ref_raw = np.asarray(reference["scores"]["raw"], dtype=np.float64)
    for r in with_scores:
        scores = r.pop("scores")
        raw = np.asarray(scores["raw"], dtype=np.float64)
        r["n_test"] = int(raw.size)
        r["image_auroc"] = _auroc(scores["labels"], scores["raw"])
        bundle_auroc = manifests[r["bundle"]].metrics.get("image_auroc")
        r["image_auroc_bundle"] = bundle_auroc
        r["image_auroc_delta"] = (
            None
            if bundle_auroc is None or r["image_auroc"] is None
            else round(r["image_auroc"] - float(bundle_auroc), 6)
        )
        r["score_reference"] = f"{Path(reference['bundle']).name} on {reference['label']}"
        if raw.shape == ref_raw.shape:
            diff = np.abs(raw - ref_raw)
            r["max_abs_score_diff"] = float(diff.max())
            r["max_rel_score_diff"] = float((diff / np.maximum(np.abs(ref_raw), 1e-12)).max())


def render_chart(report: dict[str, Any], path: str | Path) -> Path:
    """Write a PNG: p50 latency by stage (batch 1), throughput by batch, peak RSS; the path."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ConfigError("--plot needs matplotlib: pip install 'edgead[bench]'") from exc
    ok = [r for r in report["results"] if r.get("status") == "ok"]
    if not ok:
        raise DataError("no backend produced results; nothing to plot")
    import textwrap

    multi = len({x["bundle"] for x in ok}) > 1
    names = [
        f"{r['label']}\n{r['precision']}"
        + ("\n" + "\n".join(textwrap.wrap(Path(r["bundle"]).stem, 16)) if multi else "")
        for r in ok
    ]
    fig, axes = plt.subplots(1, 3, figsize=(6 + 2.6 * len(ok), 5))
    first_batch = str(report["settings"]["batches"][0])
    bottom = np.zeros(len(ok))
    for stage in ("preprocess", "graph", "search", "postprocess"):
        values = np.array(
            [r["batches"][first_batch]["latency_ms"].get(stage, {}).get("p50", 0.0) for r in ok]
        )
        if values.any():
            axes[0].bar(names, values, bottom=bottom, label=stage)
            bottom += values
    axes[0].set_title(f"p50 latency by stage, batch {first_batch} (ms)")
    axes[0].legend(fontsize=8, loc="upper right", framealpha=0.9)
    width = 0.8 / max(1, len(report["settings"]["batches"]))
    x = np.arange(len(ok))
    for j, batch in enumerate(report["settings"]["batches"]):
        axes[1].bar(
            x + j * width,
            [r["batches"][str(batch)]["throughput_ips"] for r in ok],
            width,
            label=f"batch {batch}",
        )
    axes[1].set_xticks(x + width * (len(report["settings"]["batches"]) - 1) / 2, names)
    axes[1].set_title("throughput (images/s)")
    axes[1].legend(fontsize=8)
    axes[2].bar(names, [r["peak_rss_mib"] for r in ok], color="tab:gray")
    axes[2].set_title("peak RSS (MiB)")
    for ax in axes:
        ax.tick_params(axis="x", labelsize=8)
    dev = report["device"]
    fig.suptitle(
        f"edgead bench: {ok[0]['detector']} {ok[0]['image_size'][0]} px on "
        f"{dev['cpu_model']} ({dev['usable_cores']} cores)",
        fontsize=11,
    )
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def reference_cell(result: dict[str, Any]) -> str:
    """'1.2e-07' (and ' FAIL' beyond tolerance) for a result's reference error; '-' without."""
    ref = result.get("reference") or {}
    if "max_rel_err" not in ref:
        return "-"
    return f"{ref['max_rel_err']:.2g}" + ("" if ref.get("passed") else " FAIL")


def render_markdown(report: dict[str, Any]) -> str:
    """The report as a GitHub-flavoured markdown table (one column per bundle/backend)."""
    ok = [r for r in report["results"] if r.get("status") == "ok"]
    multi = len({r["bundle"] for r in ok}) > 1

    def fmt(value: Any, digits: int) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    heads = [
        f"{r['label']} {r['precision']}" + (f" ({Path(r['bundle']).name})" if multi else "")
        for r in ok
    ]
    rows: list[tuple[str, list[str]]] = [("load ms", [fmt(r["load_ms"], 0) for r in ok])]
    for batch in report["settings"]["batches"]:
        key = str(batch)
        for stage in ("preprocess", "graph", "search", "postprocess"):
            values = [r["batches"][key]["latency_ms"].get(stage, {}).get("p50") for r in ok]
            if any(v for v in values):
                rows.append((f"batch {batch} {stage} p50 ms", [fmt(v, 1) for v in values]))
        for q in ("p50", "p95", "p99"):
            rows.append(
                (
                    f"batch {batch} total {q} ms",
                    [fmt(r["batches"][key]["latency_ms"]["total"][q], 1) for r in ok],
                )
            )
        rows.append(
            (f"batch {batch} images/s", [fmt(r["batches"][key]["throughput_ips"], 2) for r in ok])
        )
    rows.append(("peak RSS MiB", [fmt(r.get("peak_rss_mib"), 0) for r in ok]))
    rows.append(("reference max rel err", [reference_cell(r) for r in ok]))
    if any("image_auroc" in r for r in ok):
        rows.append(("image AUROC", [fmt(r.get("image_auroc"), 4) for r in ok]))
        rows.append(("AUROC - bundle's", [fmt(r.get("image_auroc_delta"), 4) for r in ok]))
        rows.append(("max abs raw-score diff", [fmt(r.get("max_abs_score_diff"), 4) for r in ok]))
        rows.append(("max rel raw-score diff", [fmt(r.get("max_rel_score_diff"), 5) for r in ok]))
    dev = report["device"]
    lines = [
        f"Device: {dev['cpu_model']} ({dev['arch']}, {dev['usable_cores']} usable cores, "
        f"{dev['memory_total_mib']} MiB), accelerators: "
        f"{', '.join(dev['cuda_gpus']) or 'none'}; "
        + ", ".join(
            f"{k} {v}"
            for k, v in report["versions"].items()
            if v and k in ("onnxruntime", "openvino", "tensorrt", "faiss")
        )
        + ".",
        f"Frames: {report['settings']['latency_frames']}; threads "
        f"{report['settings']['threads'] or 'default'}; edgead {report['edgead_version']}.",
        "",
        "| | " + " | ".join(heads) + " |",
        "|---|" + "---:|" * len(heads),
    ]
    lines += [f"| {name} | " + " | ".join(values) + " |" for name, values in rows]
    return "\n".join(lines) + "\n"


def _worker_main() -> int:
    spec = json.loads(sys.stdin.read())
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    result = run_worker(spec)
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--worker"]:
        sys.exit(_worker_main())
    sys.stderr.write("usage: python -m edgead.bench --worker < spec.json (use `edgead bench`)\n")
    sys.exit(2)
