"""`--index auto` / `--precision auto`: export the candidates, keep the fastest on this machine.

Every candidate (index x precision) is exported by the normal exporter, so each one passed its
own parity and accuracy checks (the index's and the precision's AUROC budget); a candidate the
exporter refuses is recorded with the reason. The survivors are timed here, interleaved (round
r times every candidate once, so a load spike on a shared machine hits all of them), on the run's
own test frames: graph + search + post-processing ms per frame, batch 1, `threads` threads. The
candidates are ranked by the lower quartile of their per-frame times: load from other processes
only ever adds time, so on a shared machine the lower quartile separates candidates that differ
by a few percent where the median (which a burst of load shifts for whichever candidate it hits)
did not. The fastest is written to `out`; its manifest records every candidate's timings and the
CPU (`export["auto"]`).

When exporting for another device (`--device`), nothing is timed here: the caller keeps the
profile's choice.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgead.bundle import Manifest
from edgead.errors import EdgeadError, ExportError

logger = logging.getLogger(__name__)

#: Index candidates of `--index auto` for image nearest-neighbour detectors: exact search inside
#: the graph, and the compressed faiss index the accuracy ladder picks ("ladder").
AUTO_INDEXES = ("graph", "ladder")
ROUNDS = 12
FRAMES_PER_ROUND = 5
#: the per-frame statistic candidates are ranked by (percentile of graph + search + post ms).
RANK_PERCENTILE = 25


def cpu_has(flag: str) -> bool:
    """Whether /proc/cpuinfo lists `flag` (e.g. "avx512_bf16", "amx_bf16")."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in line.split() for line in text.splitlines() if line.startswith("flags"))


def precision_candidates(target: str, precision: str) -> list[str]:
    """Precisions to try: the one given, or for "auto" fp32, bf16 (OpenVINO on a CPU with
    avx512_bf16 / AMX) and int8."""
    if precision != "auto":
        return [precision]
    out = ["fp32"]
    if target == "openvino" and (cpu_has("avx512_bf16") or cpu_has("amx_bf16")):
        out.append("bf16")
    return [*out, "int8"]


def time_bundles(
    bundles: dict[str, Path],
    frames: Sequence[np.ndarray],
    threads: int | None = None,
    rounds: int = ROUNDS,
    per_round: int = FRAMES_PER_ROUND,
) -> dict[str, dict[str, float]]:
    """{name: {"ms_per_frame", "ms_per_frame_p50", "graph_ms", "search_ms", "post_ms",
    "preprocess_ms", "backend"}}: "ms_per_frame" is the `RANK_PERCENTILE` percentile of the
    per-frame graph + search + post-processing ms (what candidates are ranked by),
    "ms_per_frame_p50" its median; the stages are medians.

    Args:
        bundles: name -> bundle path; frames: uint8 (H, W, 3) BGR frames, scored one at a time.
        threads: intra-op threads of every backend (None: the libraries' defaults).
        rounds: interleaved rounds; per_round: frames per candidate per round.
    """
    from edgead.runtime.detector import Detector

    detectors = {
        name: Detector.load(path, device="cpu", threads=threads) for name, path in bundles.items()
    }
    samples: dict[str, dict[str, list[float]]] = {name: {} for name in bundles}
    try:
        for det in detectors.values():  # warm-up
            for frame in frames[:3]:
                det(frame)
        for r in range(rounds):
            for name, det in detectors.items():
                for i in range(per_round):
                    frame = frames[(r * per_round + i) % len(frames)]
                    res = det(frame)
                    stages = res.timings_ms  # type: ignore[union-attr]
                    for key, value in stages.items():
                        samples[name].setdefault(key, []).append(value)
                    total = stages["graph"] + stages["search"] + stages["postprocess"]
                    samples[name].setdefault("total", []).append(total)
        out: dict[str, dict[str, float]] = {}
        for name, det in detectors.items():
            med = {k: float(np.median(v)) for k, v in samples[name].items()}
            out[name] = {
                "ms_per_frame": float(np.percentile(samples[name]["total"], RANK_PERCENTILE)),
                "ms_per_frame_p50": med["total"],
                "graph_ms": med["graph"],
                "search_ms": med["search"],
                "post_ms": med["postprocess"],
                "preprocess_ms": med["preprocess"],
                "backend": det.backend,  # type: ignore[dict-item]
            }
        return out
    finally:
        for det in detectors.values():
            det.close()


#: export(index options or None, precision, out) -> manifest; the exporter with fixed choices.
ExportFn = Callable[[dict[str, Any] | None, str, Path], Any]


def export_auto(
    export: ExportFn,
    index: dict[str, Any] | None,
    index_auto: bool,
    precisions: list[str],
    frames: Sequence[np.ndarray],
    out: str | Path,
    threads: int | None = None,
) -> Manifest:
    """Export each candidate with `export`, time the ones that pass, write the fastest to `out`.

    Args:
        index: the user's index options ({"index": "auto", ...}) or None.
        index_auto: try AUTO_INDEXES (else the given index only).
        precisions: from `precision_candidates`.
        frames: uint8 BGR frames to time on (the run's test images at their own size).

    Returns:
        The manifest written to `out`, with export["auto"] = {"candidates": [...], "chosen",
        "cpu", "threads", "rounds", "frames_per_round"}.

    Raises:
        ExportError: no candidate passed its checks (the message lists the reasons).
    """
    from edgead.bundle import read_bundle, write_bundle

    base = dict(index or {})
    index_names = list(AUTO_INDEXES) if index_auto else [base.get("index")]
    tried: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="edgead-auto-") as tmp:
        passed: dict[str, Path] = {}
        for name in index_names:
            for precision in precisions:
                label = f"{name or 'default'}/{precision}"
                options = dict(base)
                if name is not None:
                    options["index"] = "auto" if name == "ladder" else name
                path = Path(tmp) / f"{len(tried)}.edgead"
                t0 = time.perf_counter()
                try:
                    manifest = export(options or None, precision, path)
                except EdgeadError as exc:
                    logger.warning("auto: candidate %s refused: %s", label, exc)
                    tried.append({"candidate": label, "rejected": str(exc)[:400]})
                    continue
                tried.append(
                    {
                        "candidate": label,
                        "rejected": None,
                        "export_s": round(time.perf_counter() - t0, 1),
                        "index": (manifest.export.get("index") or {}).get("factory"),
                        "precision": manifest.precision,
                        "metrics": {
                            k: manifest.metrics.get(k) for k in ("image_auroc", "pixel_auroc")
                        },
                    }
                )
                passed[label] = path
        if not passed:
            reasons = "; ".join(f"{t['candidate']}: {t['rejected']}" for t in tried)
            raise ExportError(f"auto: no candidate passed its checks ({reasons})")
        timings = time_bundles(passed, frames, threads)
        for entry in tried:
            entry.update(timings.get(entry["candidate"], {}))
        chosen = min(timings, key=lambda k: timings[k]["ms_per_frame"])
        logger.info(
            "auto: %s",
            ", ".join(f"{k} {v['ms_per_frame']:.2f} ms" for k, v in timings.items()),
        )
        bundle = read_bundle(passed[chosen])
        record = {
            "chosen": chosen,
            "candidates": tried,
            "measured": f"p{RANK_PERCENTILE} of graph + search + post-processing ms per frame, "
            "batch 1, interleaved rounds on the run's test frames",
            "cpu": platform.processor() or platform.machine(),
            "cpu_flags": [f for f in ("avx512_vnni", "avx512_bf16", "amx_int8") if cpu_has(f)],
            "threads": threads,
            "rounds": ROUNDS,
            "frames_per_round": FRAMES_PER_ROUND,
            "load_avg_1m": os.getloadavg()[0],
        }
        manifest = dataclasses.replace(
            bundle.manifest, export={**bundle.manifest.export, "auto": record}
        )
        return write_bundle(Path(out), manifest, dict(bundle.members))
