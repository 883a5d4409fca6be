"""Tabular benchmark: edgead's ae / vae / deep_svdd / iforest against PyOD on ADBench "Classical".

Protocol (../shared/datasets/README.md): for each data set and seed, train on a random 60 % of
the normal rows only (`edgead.data.tabular.adbench_split`); test on the remaining normal rows plus
all anomalies. Report AUROC, AUPRC (average precision) and F1 at the F1-optimal threshold on the
test set, then per model the mean over seeds and data sets and the mean rank (rank 1 = highest
seed-mean AUROC on a data set; ties share the mean rank). PyOD models (IForest, AutoEncoder, VAE,
DeepSVDD with their default settings, random_state = seed) run on the same splits in the same
process. PyOD is a benchmark-only dependency (extra "bench").

Also (unless --no-throughput): rows/s of the exported AE on ONNX Runtime (CPU) for a 21-column set
(6_cardio), batched, after warm-up.

    .venv/bin/python benchmarks/tabular.py --models iforest,pyod_iforest --seeds 0,1,2,3,4
    .venv/bin/python benchmarks/tabular.py --datasets cardio,glass --seeds 0 --models ae,pyod_ae

Writes benchmarks/results/tabular-<UTC time>.json (updated after every data set, so an
interrupted run keeps what it finished).
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"
EDGEAD_MODELS = ("iforest", "ae", "vae", "deep_svdd")
PYOD_MODELS = ("pyod_iforest", "pyod_ae", "pyod_vae", "pyod_deep_svdd")
ALL_MODELS = EDGEAD_MODELS + PYOD_MODELS
SCHEMA_VERSION = 1

logger = logging.getLogger("benchmarks.tabular")


def data_dir() -> Path:
    """$EDGEAD_DATA/adbench_classical, else ../shared/datasets/adbench_classical."""
    root = Path(os.environ.get("EDGEAD_DATA", REPO.parent / "shared" / "datasets"))
    return root / "adbench_classical"


def find_datasets(directory: Path, wanted: Sequence[str] | None) -> list[Path]:
    """The .npz files in `directory`, optionally only those whose name contains a wanted word."""
    files = sorted(
        directory.glob("*.npz"),
        key=lambda p: int(p.stem.split("_")[0]) if p.stem.split("_")[0].isdigit() else 0,
    )
    if wanted:
        files = [f for f in files if any(w.lower() in f.stem.lower() for w in wanted)]
    return files


def score_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """{"auroc", "auprc", "f1"}: F1 at the best threshold over the precision-recall curve."""
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

    precision, recall, _ = precision_recall_curve(labels, scores)
    f1 = np.where(
        precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0
    )
    return {
        "auroc": float(roc_auc_score(labels, scores)),
        "auprc": float(average_precision_score(labels, scores)),
        "f1": float(f1.max()),
    }


def make_scorer(
    model: str, n_features: int, seed: int
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """fit-then-score function (train rows, test rows) -> test scores (higher = anomalous)."""
    if model in EDGEAD_MODELS:
        from edgead.models.base import create_detector

        def run_edgead(train: np.ndarray, test: np.ndarray) -> np.ndarray:
            det = create_detector(model)
            det.fit(train, seed=seed)
            return det.score(test).scores

        return run_edgead

    def run_pyod(train: np.ndarray, test: np.ndarray) -> np.ndarray:
        if model == "pyod_iforest":
            from pyod.models.iforest import IForest

            det: Any = IForest(random_state=seed)
        elif model == "pyod_ae":
            from pyod.models.auto_encoder import AutoEncoder

            det = AutoEncoder(random_state=seed, verbose=0)
        elif model == "pyod_vae":
            from pyod.models.vae import VAE

            det = VAE(random_state=seed, verbose=0)
        elif model == "pyod_deep_svdd":
            from pyod.models.deep_svdd import DeepSVDD

            det = DeepSVDD(n_features=n_features, random_state=seed, verbose=0)
        else:
            raise ValueError(f"unknown model {model!r}; known: {', '.join(ALL_MODELS)}")
        det.fit(train.astype(np.float64))
        return np.asarray(det.decision_function(test.astype(np.float64)), dtype=np.float64)

    return run_pyod


def run_quality(
    files: list[Path],
    models: list[str],
    seeds: list[int],
    record: Callable[[], None],
    results: dict[str, Any],
    scorer: Callable[[str, int, int], Callable[[np.ndarray, np.ndarray], np.ndarray]] | None = None,
) -> None:
    """Fill results["runs"] with one entry per (seed, data set, model); seeds are the outer loop,
    so an interrupted run has whole seeds over all data sets. `scorer` (default `make_scorer`)
    maps (model, n_features, seed) to a fit-then-score function."""
    scorer = scorer or make_scorer
    from edgead.data.tabular import adbench_split, load_table

    runs: list[dict[str, Any]] = results.setdefault("runs", [])
    tables = {path: load_table(path) for path in files}
    for seed in seeds:
        for path, table in tables.items():
            if table.y is None:
                raise SystemExit(f"{path} has no labels 'y'")
            train_idx, test_idx = adbench_split(table.y, seed)
            train, test, labels = table.X[train_idx], table.X[test_idx], table.y[test_idx]
            for model in models:
                start = time.perf_counter()
                try:
                    scores = scorer(model, table.n_features, seed)(train, test)
                    metrics = (
                        score_metrics(labels, scores)
                        if np.isfinite(scores).all()
                        else {"error": "non-finite scores"}
                    )
                except Exception as exc:  # noqa: BLE001 - a benchmark records failures and goes on
                    logger.exception("%s %s seed %d failed", path.stem, model, seed)
                    metrics = {"error": repr(exc)[:300]}
                entry = {
                    "dataset": path.stem,
                    "model": model,
                    "seed": seed,
                    "n_train": int(train_idx.size),
                    "n_test": int(test_idx.size),
                    "n_features": table.n_features,
                    "fit_score_s": round(time.perf_counter() - start, 3),
                    **metrics,
                }
                runs.append(entry)
                logger.info(
                    "%-16s %-15s seed %d auroc %s (%.1fs)",
                    path.stem,
                    model,
                    seed,
                    f"{metrics['auroc']:.4f}" if "auroc" in metrics else "ERR",
                    entry["fit_score_s"],
                )
            record()


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per model: mean AUROC/AUPRC/F1 over data sets (of seed means) and mean AUROC rank.

    Only data sets where every model has a result for every seed it ran enter the summary.
    """
    from scipy.stats import rankdata

    ok = [r for r in runs if "auroc" in r]
    models = sorted(
        {r["model"] for r in ok}, key=lambda m: ALL_MODELS.index(m) if m in ALL_MODELS else 99
    )
    datasets = sorted({r["dataset"] for r in ok})
    per: dict[str, dict[str, dict[str, float]]] = {m: {} for m in models}
    for model in models:
        for ds in datasets:
            rows = [r for r in ok if r["model"] == model and r["dataset"] == ds]
            if rows:
                per[model][ds] = {
                    k: float(np.mean([r[k] for r in rows])) for k in ("auroc", "auprc", "f1")
                }
                per[model][ds]["n_seeds"] = len(rows)
    common = [ds for ds in datasets if all(ds in per[m] for m in models)]
    ranks = {m: [] for m in models}
    for ds in common:
        aurocs = np.array([per[m][ds]["auroc"] for m in models])
        for m, r in zip(models, rankdata(-aurocs), strict=True):
            ranks[m].append(float(r))
    summary = {}
    for m in models:
        summary[m] = {
            "n_datasets": len(common),
            "mean_rank": float(np.mean(ranks[m])) if common else float("nan"),
            **{
                f"mean_{k}": float(np.mean([per[m][ds][k] for ds in common]))
                if common
                else float("nan")
                for k in ("auroc", "auprc", "f1")
            },
            "seeds_per_dataset": sorted({int(per[m][ds]["n_seeds"]) for ds in common}),
        }
    return {"per_dataset": per, "summary": summary, "datasets": common}


def format_table(summary: dict[str, Any]) -> str:
    """Markdown table of the summary (one row per model)."""
    lines = [
        "| model | mean rank | mean AUROC | mean AUPRC | mean F1 | data sets | seeds |",
        "|---|---|---|---|---|---|---|",
    ]
    for m, s in summary.items():
        lines.append(
            f"| {m} | {s['mean_rank']:.2f} | {s['mean_auroc']:.4f} | "
            f"{s['mean_auprc']:.4f} | {s['mean_f1']:.4f} | {s['n_datasets']} | "
            f"{','.join(map(str, s['seeds_per_dataset']))} |"
        )
    return "\n".join(lines)


def export_onnx_bytes(module: Any, example: np.ndarray, input_name: str = "rows") -> bytes:
    """ONNX (opset 17, dynamic batch, TorchScript exporter) of an ExportSpec module."""
    import torch

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (torch.from_numpy(example),),
            buf,
            input_names=[input_name],
            output_names=["score"],
            opset_version=17,
            dynamo=False,
            dynamic_axes={input_name: {0: "batch"}, "score": {0: "batch"}},
        )
    return buf.getvalue()


def run_throughput(path: Path, batch: int, iters: int, threads: int) -> dict[str, Any]:
    """Rows/s of the exported AE (trained on `path`, seed 0) on ONNX Runtime CPU."""
    import onnxruntime as ort

    from edgead.data.tabular import adbench_split, load_table
    from edgead.models.base import create_detector

    table = load_table(path)
    train_idx, test_idx = adbench_split(table.y, 0)
    det = create_detector("ae")
    det.fit(table.X[train_idx], seed=0)
    spec = det.export_spec()
    model = export_onnx_bytes(spec.module, spec.example_input)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    rows = table.X[rng.integers(0, table.n_rows, batch)]
    ref = det.score(rows[:1024]).scores
    got = sess.run(None, {"rows": rows[:1024]})[0]
    max_rel = float(np.max(np.abs(got - ref) / np.maximum(np.abs(ref), 1e-12)))
    for _ in range(5):
        sess.run(None, {"rows": rows})
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        sess.run(None, {"rows": rows})
        times.append(time.perf_counter() - start)
    one = rows[:1]
    lat = []
    for _ in range(200):
        start = time.perf_counter()
        sess.run(None, {"rows": one})
        lat.append(time.perf_counter() - start)
    times_a, lat_a = np.array(times), np.array(lat) * 1e3
    return {
        "dataset": path.stem,
        "n_features": table.n_features,
        "batch": batch,
        "iters": iters,
        "intra_op_threads": threads,
        "provider_used": sess.get_providers()[0],
        "throughput_rows_per_s_median": float(batch / np.median(times_a)),
        "throughput_rows_per_s_best": float(batch / times_a.min()),
        "batch1_latency_ms": {
            "p50": float(np.percentile(lat_a, 50)),
            "p90": float(np.percentile(lat_a, 90)),
            "p99": float(np.percentile(lat_a, 99)),
        },
        "parity_max_rel_err_vs_torch": max_rel,
    }


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("numpy", "torch", "sklearn", "onnxruntime", "pyod"):
        try:
            out[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 - optional packages
            out[name] = "missing"
    return out


def collect_runs(
    files: Sequence[str], seeds: set[int] | None = None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Runs of result files, one per (data set, model, seed), and the last throughput found.

    Args:
        files: paths; "FILE:model,model" keeps only those models of FILE.
        seeds: keep only these seeds (None: all).

    Returns:
        (runs, extra) with extra {"merged_from": files[, "throughput_ae_ort": ...]}.
    """
    runs: list[dict[str, Any]] = []
    extra: dict[str, Any] = {"merged_from": list(files)}
    for spec in files:
        name, _, only = spec.partition(":")
        keep = set(only.split(",")) if only else None
        doc = json.loads(Path(name).read_text())
        runs.extend(
            r
            for r in doc["results"].get("runs", [])
            if (keep is None or r["model"] in keep) and (seeds is None or r["seed"] in seeds)
        )
        if "throughput_ae_ort" in doc["results"]:
            extra["throughput_ae_ort"] = doc["results"]["throughput_ae_ort"]
    unique: dict[tuple[str, str, int], dict[str, Any]] = {}
    for run in runs:  # the same split and seed ran twice (an overlap of split runs): keep one
        key = (run["dataset"], run["model"], run["seed"])
        first = unique.setdefault(key, run)
        if first is not run and first.get("auroc") != run.get("auroc"):
            print(
                f"warning: {key} ran twice with AUROC {first.get('auroc')} and "
                f"{run.get('auroc')}; keeping the first",
                file=sys.stderr,
            )
    return list(unique.values()), extra


def merge(files: Sequence[str], results_file: str, seeds: set[int]) -> int:
    """Combine the runs (of `seeds`) and throughput of result files; print the table; write JSON."""
    runs, merged = collect_runs(files, seeds)
    merged["runs"] = runs
    merged.update(summarise(runs))
    print(format_table(merged["summary"]))
    from edgead.bench import write_report

    out = write_report(
        {
            "schema_version": SCHEMA_VERSION,
            "detector": "tabular",
            "results": merged,
            "versions": _versions(),
        },
        results_file,
        RESULTS_DIR,
        "tabular-merged",
    )
    print(f"wrote {out}")
    return 0


def prepare_run(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    argv: Sequence[str] | None,
    known_models: Sequence[str],
    name: str,
    backend: str,
) -> tuple[list[str], list[int], list[Path], Path, dict] | None:
    """Shared start of a tabular benchmark run (this script and tabular_classical.py).

    Quiets logging, sets torch threads, checks `args.models` against `known_models` (parser
    error otherwise), finds the data sets of `args.datasets` and builds the result document.

    Returns:
        (models, seeds, files, out, doc), with doc["results"] the dict runs are added to; None
        when no data set was found (the reason is printed).
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("edgead").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    import torch

    import edgead
    from edgead.bench import git_sha, report_path

    torch.set_num_threads(args.threads)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in known_models]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; known: {', '.join(known_models)}")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    directory = data_dir()
    files = find_datasets(directory, [w for w in args.datasets.split(",") if w])
    if not files and models:
        print(f"no data sets found in {directory} (set EDGEAD_DATA)", file=sys.stderr)
        return None
    out = report_path(args.results_file, RESULTS_DIR, name)
    out.parent.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "protocol": "adbench semi-supervised: train on 60% of normal rows, test on the rest "
        "+ all anomalies; F1 at best threshold; AUROC rank per data set",
        "models": models,
        "seeds": seeds,
        "datasets": [f.stem for f in files],
    }
    doc = {
        "schema_version": SCHEMA_VERSION,
        "edgead_version": edgead.__version__,
        "git_sha": git_sha(REPO),
        "detector": name,
        "backend": backend,
        "torch_threads": args.threads,
        "argv": list(argv if argv is not None else sys.argv[1:]),
        "results": results,
        "versions": _versions(),
    }
    return models, seeds, files, out, doc


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print the table; write JSON. Returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default="", help="comma-separated name parts (default all)")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument(
        "--order",
        choices=("name", "size"),
        default="name",
        help="data set order; 'size' runs the smallest files first",
    )
    parser.add_argument(
        "--models",
        default=",".join(ALL_MODELS),
        help=f"comma-separated, from {', '.join(ALL_MODELS)}",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch / ORT threads (1: a busy 2-core machine is slow with 2)",
    )
    parser.add_argument("--no-throughput", action="store_true")
    parser.add_argument("--throughput-batch", type=int, default=8192)
    parser.add_argument("--throughput-iters", type=int, default=50)
    parser.add_argument("--results-file", default="")
    parser.add_argument(
        "--merge",
        nargs="+",
        default=None,
        metavar="JSON",
        help="only combine the runs of earlier result files into one table; "
        "FILE:model,model keeps only those models of FILE",
    )
    args = parser.parse_args(argv)
    if args.merge:
        return merge(
            args.merge, args.results_file, {int(x) for x in args.seeds.split(",") if x.strip()}
        )
    setup = prepare_run(parser, args, argv, ALL_MODELS, "tabular", "torch/sklearn/pyod")
    if setup is None:
        return 2
    models, seeds, files, out, doc = setup
    results = doc["results"]
    directory = data_dir()
    if args.order == "size":
        files.sort(key=lambda f: f.stat().st_size)
        results["datasets"] = [f.stem for f in files]

    def record() -> None:
        results.update(summarise(results.get("runs", [])))
        out.write_text(json.dumps(doc, indent=1) + "\n")

    run_quality(files, models, seeds, record, results)
    if not args.no_throughput:
        cardio = [f for f in find_datasets(directory, ["cardio"])]
        if cardio:
            results["throughput_ae_ort"] = run_throughput(
                cardio[0], args.throughput_batch, args.throughput_iters, args.threads
            )
    record()
    if results.get("summary"):
        print(format_table(results["summary"]))
    if "throughput_ae_ort" in results:
        t = results["throughput_ae_ort"]
        print(
            f"\nAE on ONNX Runtime ({t['dataset']}, {t['n_features']} columns, batch "
            f"{t['batch']}, {t['intra_op_threads']} threads): "
            f"{t['throughput_rows_per_s_median']:,.0f} rows/s (median), batch-1 p50 "
            f"{t['batch1_latency_ms']['p50']:.3f} ms"
        )
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main())
