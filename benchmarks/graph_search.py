"""Search stage alone: faiss exact (`--index flat`) vs exact search inside the graph (`--index
graph`) on ONNX Runtime and OpenVINO (f32, bf16), one 224 px frame = 784 queries, batch 1.

The in-graph search is exported exactly as the exporter does it (`InGraphSearch` around an
identity "embedder", so the graph is the search alone). Candidates are timed interleaved (each
round times every candidate once), the median over rounds is reported with the ratio to faiss.
Banks: a PatchCore run's memory bank (`--run`, its state.npz), and random banks of the sizes
given (`--sizes`, D = 152). Writes JSON to benchmarks/results/.

    .venv/bin/python benchmarks/graph_search.py --run runs/mpdd --sizes 5966,50000 --threads 2
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
QUERIES = 784  # 28 x 28 patches of a 224 px frame


def _search_graph(bank: np.ndarray) -> bytes:
    import torch

    from edgead.export.graph_index import DISTANCES_OUTPUT, InGraphSearch
    from edgead.export.graphs import export_onnx

    class Identity(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
            return (x,)

    module = InGraphSearch(Identity(), bank).eval()
    example = np.zeros((1, QUERIES, bank.shape[1]), np.float32)
    return export_onnx(module, example, "embedding", (DISTANCES_OUTPUT,), dynamic_batch=False)


def _candidates(bank: np.ndarray, threads: int) -> dict[str, Callable[[np.ndarray], Any]]:
    import onnxruntime as ort
    import openvino as ov

    from edgead.ops.nn_index import FaissIndex
    from edgead.runtime.detector import _prefer_blas_search, _set_search_threads

    _prefer_blas_search()
    _set_search_threads(threads)
    flat = FaissIndex.build(bank, "Flat")
    graph = _search_graph(bank)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])
    core = ov.Core()
    model = core.read_model(graph, b"")
    out: dict[str, Callable[[np.ndarray], Any]] = {
        "faiss Flat": lambda q: flat.search(q[0], 1),
        "graph ORT fp32": lambda q: session.run(None, {"embedding": q}),
    }
    for hint in ("f32", "bf16"):
        compiled = core.compile_model(
            model,
            "CPU",
            {
                "PERFORMANCE_HINT": "LATENCY",
                "INFERENCE_PRECISION_HINT": hint,
                "INFERENCE_NUM_THREADS": threads,
            },
        )
        request = compiled.create_infer_request()
        out[f"graph OpenVINO {hint}"] = lambda q, r=request: r.infer({0: q})
    return out


def measure(bank: np.ndarray, threads: int, rounds: int, per_round: int) -> dict[str, Any]:
    """{candidate: {"p50_ms", "ratio_to_faiss"}} for one bank, interleaved rounds."""
    rng = np.random.default_rng(0)
    rows = bank[rng.integers(0, len(bank), QUERIES)]
    queries = (rows + rng.normal(0, 0.3 * bank.std(), rows.shape)).astype(np.float32)[None]
    cands = _candidates(bank, threads)
    for fn in cands.values():
        for _ in range(3):
            fn(queries)
    times: dict[str, list[float]] = {name: [] for name in cands}
    for _ in range(rounds):
        for name, fn in cands.items():
            t0 = time.perf_counter()
            for _ in range(per_round):
                fn(queries)
            times[name].append((time.perf_counter() - t0) * 1e3 / per_round)
    base = float(np.median(times["faiss Flat"]))
    return {
        name: {
            "p50_ms": float(np.median(v)),
            "min_ms": float(np.min(v)),
            "speedup_vs_faiss": base / float(np.median(v)),
        }
        for name, v in times.items()
    }


def main(argv: list[str] | None = None) -> int:
    """Time every candidate on every bank; print a table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", default=[], help="run dir (repeat)")
    parser.add_argument("--sizes", default="", help="random banks: M values, comma-separated")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--per-round", type=int, default=5)
    parser.add_argument("--results-file", default=None)
    args = parser.parse_args(argv)
    banks: dict[str, np.ndarray] = {}
    for run in args.run:
        with np.load(Path(run) / "state.npz", allow_pickle=False) as z:
            banks[f"{Path(run).name} ({len(z['memory_bank'])})"] = z["memory_bank"]
    rng = np.random.default_rng(1)
    for size in filter(None, args.sizes.split(",")):
        banks[f"random {int(size)}"] = rng.normal(size=(int(size), 152)).astype(np.float32)
    results = {}
    load = [os.getloadavg()[0]]
    for label, bank in banks.items():
        results[label] = measure(
            np.ascontiguousarray(bank, np.float32), args.threads, args.rounds, args.per_round
        )
        for name, r in results[label].items():
            print(
                f"{label:24s} {name:22s} p50 {r['p50_ms']:8.3f} ms  min {r['min_ms']:8.3f}  "
                f"x{r['speedup_vs_faiss']:.2f} vs faiss"
            )
    load.append(os.getloadavg()[0])
    from edgead.bench import git_sha

    payload = {
        "benchmark": "graph_search",
        "created": dt.datetime.now(dt.timezone.utc).isoformat(),
        "git_sha": git_sha(RESULTS.parent),
        "threads": args.threads,
        "queries": QUERIES,
        "loadavg_1m": load,
        "cpu_count": os.cpu_count(),
        "results": results,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = (
        Path(args.results_file)
        if args.results_file
        else (RESULTS / f"graph_search_{dt.datetime.now():%Y%m%d_%H%M%S}.json")
    )
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {out} (load average {load[0]:.1f} -> {load[1]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
