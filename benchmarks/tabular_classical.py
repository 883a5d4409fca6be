"""Tabular benchmark rows for the classical detectors: edgead knn / lof / kde / gmm / ocsvm against
PyOD's KNN, LOF, KDE, GMM and OCSVM on ADBench "Classical".

Same protocol, metrics, summary and JSON shape as benchmarks/tabular.py (its `adbench_split`
splits, `score_metrics`, `summarise`, `format_table` are reused): for each data set and seed, train
on a random 60 % of the normal rows only, test on the remaining normal rows plus all anomalies;
per model the mean AUROC/AUPRC/F1 over data sets (of seed means) and the mean AUROC rank. Models of
benchmarks/tabular.py (iforest, ae, ..., pyod_*) may be added to --models; they run through its own
`make_scorer`, so all models are ranked together on the same splits in the same process.

edgead models use their default configs (rows standardised on the normal training rows). PyOD
models use PyOD's defaults on raw rows (KNN k=5 largest, LOF k=20, KDE bandwidth 1.0, GMM one
component, OCSVM nu=0.5 gamma="auto"), as in ADBench. "ocsvm_nystroem" is edgead's OCSVM with the
Nystroem approximation (300 landmarks), to measure its accuracy cost against "ocsvm".

    .venv/bin/python benchmarks/tabular_classical.py --seeds 0 --datasets glass,cardio
    .venv/bin/python benchmarks/tabular_classical.py --seeds 0,1,2,3,4 \
        --models knn,lof,kde,gmm,ocsvm,pyod_knn,pyod_lof,pyod_kde,pyod_gmm,pyod_ocsvm,iforest

Writes benchmarks/results/tabular-classical-<UTC time>.json (updated after every data set).
`--merge A.json B.json` prints the table of several such files together (e.g. split seed ranges).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CLASSICAL_MODELS = ("knn", "lof", "kde", "gmm", "ocsvm", "ocsvm_nystroem")
PYOD_CLASSICAL = ("pyod_knn", "pyod_lof", "pyod_kde", "pyod_gmm", "pyod_ocsvm")
DEFAULT_MODELS = CLASSICAL_MODELS[:5] + PYOD_CLASSICAL

logger = logging.getLogger("benchmarks.tabular_classical")


def _load_tabular() -> Any:
    """benchmarks/tabular.py as a module (protocol, metrics and summary code are shared)."""
    spec = importlib.util.spec_from_file_location(
        "edgead_bench_tabular", REPO / "benchmarks" / "tabular.py"
    )
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


TAB = _load_tabular()
ALL_MODELS = CLASSICAL_MODELS + PYOD_CLASSICAL + tuple(TAB.ALL_MODELS)


def make_scorer(
    model: str, n_features: int, seed: int
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """fit-then-score function (train rows, test rows) -> test scores (higher = anomalous)."""
    if model in CLASSICAL_MODELS:
        from edgead.models.base import create_detector

        def run_edgead(train: np.ndarray, test: np.ndarray) -> np.ndarray:
            if model == "ocsvm_nystroem":
                det = create_detector("ocsvm", {"approximation": "nystroem"})
            else:
                det = create_detector(model)
            det.fit(train, seed=seed)
            return det.score(test).scores

        return run_edgead
    if model not in PYOD_CLASSICAL:
        return TAB.make_scorer(model, n_features, seed)

    def run_pyod(train: np.ndarray, test: np.ndarray) -> np.ndarray:
        if model == "pyod_knn":
            from pyod.models.knn import KNN

            det: Any = KNN()
        elif model == "pyod_lof":
            from pyod.models.lof import LOF

            det = LOF()
        elif model == "pyod_kde":
            from pyod.models.kde import KDE

            det = KDE()
        elif model == "pyod_gmm":
            from pyod.models.gmm import GMM

            det = GMM(random_state=seed)
        else:
            from pyod.models.ocsvm import OCSVM

            det = OCSVM()
        det.fit(train.astype(np.float64))
        return np.asarray(det.decision_function(test.astype(np.float64)), dtype=np.float64)

    return run_pyod


def run_quality(
    files: list[Path],
    models: list[str],
    seeds: list[int],
    record: Callable[[], None],
    results: dict[str, Any],
) -> None:
    """Fill results["runs"] with one entry per (data set, model, seed) (tabular.py's shape)."""
    from edgead.data.tabular import adbench_split, load_table

    runs: list[dict[str, Any]] = results.setdefault("runs", [])
    for path in files:
        table = load_table(path)
        if table.y is None:
            raise SystemExit(f"{path} has no labels 'y'")
        for seed in seeds:
            train_idx, test_idx = adbench_split(table.y, seed)
            train, test, labels = table.X[train_idx], table.X[test_idx], table.y[test_idx]
            for model in models:
                start = time.perf_counter()
                try:
                    scores = make_scorer(model, table.n_features, seed)(train, test)
                    metrics = (
                        TAB.score_metrics(labels, scores)
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


def nystroem_cost(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """AUROC of ocsvm_nystroem minus exact ocsvm per (data set, seed): mean, min, max, n."""
    exact = {
        (r["dataset"], r["seed"]): r["auroc"]
        for r in runs
        if r["model"] == "ocsvm" and "auroc" in r
    }
    diffs = [
        r["auroc"] - exact[(r["dataset"], r["seed"])]
        for r in runs
        if r["model"] == "ocsvm_nystroem" and "auroc" in r and (r["dataset"], r["seed"]) in exact
    ]
    if not diffs:
        return None
    return {
        "mean_auroc_delta": float(np.mean(diffs)),
        "min_auroc_delta": float(np.min(diffs)),
        "max_auroc_delta": float(np.max(diffs)),
        "n_pairs": len(diffs),
    }


def merge(paths: Sequence[str]) -> int:
    """Print the summary table of the runs in several result files (e.g. split seed ranges)."""
    runs, _ = TAB.collect_runs(paths)
    summary = TAB.summarise(runs)
    order = [m for m in ALL_MODELS if m in summary["summary"]]
    print(TAB.format_table({m: summary["summary"][m] for m in order}))
    print(
        f"\ndata sets in the ranking ({len(summary['datasets'])}): {', '.join(summary['datasets'])}"
    )
    cost = nystroem_cost(runs)
    if cost is not None:
        print(
            f"ocsvm Nystroem - exact AUROC: mean {cost['mean_auroc_delta']:+.4f} "
            f"(min {cost['min_auroc_delta']:+.4f}, max {cost['max_auroc_delta']:+.4f}, "
            f"{cost['n_pairs']} data set/seed pairs)"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print the table; write JSON. Returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default="", help="comma-separated name parts (default all)")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument(
        "--models",
        default=",".join(DEFAULT_MODELS),
        help=f"comma-separated, from {', '.join(ALL_MODELS)}",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--results-file", default="")
    parser.add_argument(
        "--merge",
        nargs="+",
        default=None,
        metavar="JSON",
        help="only combine the runs of earlier result files and print the table",
    )
    args = parser.parse_args(argv)
    if args.merge:
        return merge(args.merge)
    setup = TAB.prepare_run(
        parser, args, argv, ALL_MODELS, "tabular-classical", "numpy/faiss/sklearn/pyod"
    )
    if setup is None:
        return 2
    models, seeds, files, out, doc = setup
    results = doc["results"]

    def record() -> None:
        results.update(TAB.summarise(results.get("runs", [])))
        order = [m for m in ALL_MODELS if m in results["summary"]]
        results["summary"] = {m: results["summary"][m] for m in order}
        cost = nystroem_cost(results.get("runs", []))
        if cost is not None:
            results["nystroem_vs_exact"] = cost
        out.write_text(json.dumps(doc, indent=1) + "\n")

    run_quality(files, models, seeds, record, results)
    record()
    print(TAB.format_table(results["summary"]))
    if "nystroem_vs_exact" in results:
        c = results["nystroem_vs_exact"]
        print(
            f"\nocsvm Nystroem - exact AUROC: mean {c['mean_auroc_delta']:+.4f} "
            f"(min {c['min_auroc_delta']:+.4f}, max {c['max_auroc_delta']:+.4f}, "
            f"{c['n_pairs']} data set/seed pairs)"
        )
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main())
