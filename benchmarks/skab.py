"""SKAB benchmark: edgead's time-series window detectors against row baselines, SKAB's protocol.

Protocol (SKAB's outlier-detection setting, per file, as in ../shared/datasets/README.md):
fit on the file's first `--fit-rows` rows (400, normal operation), score the remaining rows;
a row's score is the score of the window ENDING at it (nothing looks ahead; row baselines score
the row alone); the per-row decision is score >= threshold, with the threshold taken from the
fitted rows' own scores: quantile `--threshold-quantile` of them times `--threshold-factor` (one
rule for every model; SKAB's notebooks use the 0.99 quantile x 1.5 as the "UCL"). F1, FAR
(false-alarm rate, % of normal rows flagged) and MAR (missed-alarm rate, % of anomalous rows not
flagged) are computed from the decision counts pooled over all files.

Window models (window_ae, window_vae, conv_ae_1d, mae_1d) are exported per file to an ONNX
bundle by the project's exporter (with its parity check) and scored by the torch-free runtime
(`Detector.score_series`, decisions = the runtime's `is_anomaly` at the bundle's threshold); the
largest relative difference between the bundle's and the torch model's scores is reported.
`--no-export` scores with torch only (quicker while developing). Baselines on single rows:
`iforest` (edgead's Isolation Forest) and `pca_t2` (Hotelling's T-squared on the principal
components that explain 95 % of the variance of the standardised fitted rows).

The published leaderboard rows (SKAB README, outlier detection, all 34 files, waico/SKAB at
commit 80bac4a) are printed beside ours; they are not strictly comparable: they cover every SKAB
file (valve1, valve2, other), and their notebooks evaluate on the whole file including the
fitted rows and mark a row only when all windows covering it (also later ones) are anomalous.

    .venv/bin/python benchmarks/skab.py --data ../shared/datasets/skab_valve1
    .venv/bin/python benchmarks/skab.py --models conv_ae_1d,iforest --files 0,1 --no-export

Writes benchmarks/results/skab-<UTC time>.json (or --json OUT).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
WINDOW_MODELS = ("conv_ae_1d", "mae_1d", "window_ae", "window_vae")
BASELINES = ("iforest", "pca_t2")
ALL_MODELS = WINDOW_MODELS + BASELINES
#: SKAB README (waico/SKAB, commit 80bac4a), outlier detection, all files: (F1, FAR %, MAR %).
LEADERBOARD = {
    "Conv-AE": (0.79, 13.69, 17.77),
    "MSET": (0.73, 20.82, 20.08),
    "LSTM-AE": (0.68, 14.24, 35.56),
    "T-squared+Q (PCA-based)": (0.67, 13.95, 36.32),
    "Vanilla LSTM": (0.64, 15.4, 39.93),
    "MSCRED": (0.64, 13.56, 41.16),
    "LSTM-VAE": (0.56, 9.13, 55.03),
    "T-squared": (0.56, 12.14, 52.56),
    "Vanilla AE": (0.45, 7.56, 66.57),
    "Isolation forest": (0.4, 6.86, 72.09),
}

logger = logging.getLogger("benchmarks.skab")


def rates(labels: np.ndarray, decisions: np.ndarray) -> dict[str, Any]:
    """F1, FAR % and MAR % of bool decisions vs 0/1 labels, with the counts (tp, fp, fn, tn)."""
    labels = np.asarray(labels).astype(bool)
    decisions = np.asarray(decisions).astype(bool)
    tp = int(np.sum(decisions & labels))
    fp = int(np.sum(decisions & ~labels))
    fn = int(np.sum(~decisions & labels))
    tn = int(np.sum(~decisions & ~labels))
    return {
        "f1": 2 * tp / max(2 * tp + fp + fn, 1),
        "far": 100.0 * fp / max(fp + tn, 1),
        "mar": 100.0 * fn / max(fn + tp, 1),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
    }


def threshold_from_fitted(scores: np.ndarray, quantile: float, factor: float) -> float:
    """The decision threshold: `quantile` of the fitted rows' scores times `factor`."""
    return float(np.quantile(np.asarray(scores, dtype=np.float64), quantile) * factor)


def _row_scores(n_rows: int, ends: np.ndarray, values: np.ndarray) -> np.ndarray:
    """float64 (N,) per-row values: each window's value at its end row, NaN where none ends."""
    out = np.full(n_rows, np.nan)
    out[ends] = values
    return out


def _pca_t2(fit: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Hotelling's T-squared (N,) of rows on the PCs explaining 95 % of the fitted variance."""
    from sklearn.decomposition import PCA

    mean, std = fit.mean(axis=0), fit.std(axis=0)
    std[std == 0] = 1.0
    pca = PCA(n_components=0.95, svd_solver="full").fit((fit - mean) / std)
    scores = pca.transform((rows - mean) / std)
    return np.sum(scores**2 / pca.explained_variance_, axis=1)


def _score_baseline(model: str, values: np.ndarray, fit_rows: int, seed: int) -> np.ndarray:
    fit = values[:fit_rows].astype(np.float64)
    if model == "pca_t2":
        return _pca_t2(fit, values.astype(np.float64))
    from edgead.models.base import create_detector

    det = create_detector(model)
    det.fit(values[:fit_rows], seed=seed)
    return det.score(values).scores.astype(np.float64)


def _score_window_model(
    model: str,
    cfg: dict[str, Any],
    values: np.ndarray,
    fit_rows: int,
    rule: tuple[float, float],
    seed: int,
    export: bool,
) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    """(per-row scores (N,) NaN before the first window, the runtime's per-row decisions at the
    bundle's threshold (or None without export), facts) of a window model."""
    from edgead.models.base import create_detector
    from edgead.ops.windows import window_end_rows

    det = create_detector(model, cfg)
    det.fit(values[:fit_rows], seed=seed)
    torch_scores = det.score(values).scores.astype(np.float64)
    ends = window_end_rows(len(values), det.window, int(det.config.stride))
    facts: dict[str, Any] = {"window": det.window}
    if not export:
        return _row_scores(len(values), ends, torch_scores), None, facts
    from edgead.export.exporter import export_detector
    from edgead.runtime import Detector

    threshold = threshold_from_fitted(torch_scores[ends < fit_rows], *rule)
    meta = {
        "threshold": {"value": threshold, "policy": f"skab:q{rule[0]}x{rule[1]}"},
        "normalisation": {
            "method": "minmax_threshold",
            "min": float(np.min(torch_scores)),
            "max": float(np.max(torch_scores)),
            "threshold": threshold,
        },
    }
    with tempfile.TemporaryDirectory(prefix="skab-") as tmp:
        bundle = Path(tmp) / f"{model}.edgead"
        windows = det.windows_of(values)
        picks = np.linspace(0, len(windows) - 1, 8).astype(int)
        export_detector(det, meta, "onnx", "fp32", bundle, parity_inputs=windows[picks])
        with Detector.load(bundle, device="cpu", backend="onnxruntime", threads=1) as runtime:
            series = runtime.score_series(values)
    bundle_scores = series.raw_scores.astype(np.float64)
    rel = np.abs(bundle_scores - torch_scores) / np.maximum(np.abs(torch_scores), 1e-12)
    facts.update(bundle_vs_torch_max_rel=float(rel.max()), scored_by="bundle (onnxruntime)")
    decisions = _row_scores(len(values), series.rows, series.is_anomaly)
    return _row_scores(len(values), series.rows, bundle_scores), decisions, facts


def run_file(
    path: Path,
    models: Sequence[str],
    configs: dict[str, dict[str, Any]],
    args: argparse.Namespace,
) -> list[dict[str, Any]]:
    """One entry per model for one SKAB file: counts on the rows after the fitted ones.

    The main counts use the default rule (for exported window models: the runtime's own
    decisions at the bundle's threshold); "sweep" holds the counts at every --sweep factor.
    """
    from edgead.data.timeseries import load_series

    series = load_series(path, label_column="anomaly", drop_columns=("changepoint",))
    labels = series.labels if series.labels is not None else np.zeros(series.n_rows, dtype=int)
    test_labels = labels[args.fit_rows :]
    rule = (args.threshold_quantile, args.threshold_factor)
    entries = []
    for model in models:
        start = time.perf_counter()
        facts: dict[str, Any] = {}
        decisions = None
        if model in WINDOW_MODELS:
            rows, decisions, facts = _score_window_model(
                model,
                configs.get(model, {}),
                series.values,
                args.fit_rows,
                rule,
                args.seed,
                not args.no_export,
            )
        else:
            rows = _score_baseline(model, series.values, args.fit_rows, args.seed)
        fitted = rows[: args.fit_rows]
        fitted = fitted[~np.isnan(fitted)]
        test = rows[args.fit_rows :]
        if np.isnan(test).any():
            raise SystemExit(f"{path.name}: {model} left rows after the fitted ones unscored")
        if decisions is None:
            decisions = rows >= threshold_from_fitted(fitted, *rule)
        sweep = {
            f"{factor:g}": rates(
                test_labels, test >= threshold_from_fitted(fitted, rule[0], factor)
            )
            for factor in args.sweep
        }
        entry = {
            "file": path.name,
            "model": model,
            "n_test": int(len(test)),
            "seconds": round(time.perf_counter() - start, 2),
            **facts,
            **rates(test_labels, np.asarray(decisions[args.fit_rows :]) > 0.5),
            "sweep": sweep,
        }
        logger.info(
            "%-8s %-11s F1 %.3f FAR %5.1f MAR %5.1f (%.1fs)",
            path.name,
            model,
            entry["f1"],
            entry["far"],
            entry["mar"],
            entry["seconds"],
        )
        entries.append(entry)
    return entries


def _pooled_counts(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """F1 / FAR / MAR of counts summed over parts."""
    tp, fp, fn, tn = (sum(p[k] for p in parts) for k in ("tp", "fp", "fn", "tn"))
    return {
        "f1": 2 * tp / max(2 * tp + fp + fn, 1),
        "far": 100.0 * fp / max(fp + tn, 1),
        "mar": 100.0 * fn / max(fn + tp, 1),
    }


def pooled(runs: list[dict[str, Any]], models: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per model: F1 / FAR / MAR from the counts summed over files (SKAB pools rows)."""
    out = {}
    for model in models:
        mine = [r for r in runs if r["model"] == model]
        if not mine:
            continue
        counts = {k: sum(r[k] for r in mine) for k in ("tp", "fp", "fn", "tn")}
        tp, fp, fn, tn = (counts[k] for k in ("tp", "fp", "fn", "tn"))
        out[model] = {
            "f1": 2 * tp / max(2 * tp + fp + fn, 1),
            "far": 100.0 * fp / max(fp + tn, 1),
            "mar": 100.0 * fn / max(fn + tp, 1),
            "n_files": len(mine),
            **counts,
        }
        factors = mine[0].get("sweep", {})
        out[model]["sweep"] = {
            factor: _pooled_counts([r["sweep"][factor] for r in mine]) for factor in factors
        }
        parity = [r["bundle_vs_torch_max_rel"] for r in mine if "bundle_vs_torch_max_rel" in r]
        if parity:
            out[model]["bundle_vs_torch_max_rel"] = max(parity)
    return out


def format_table(summary: dict[str, dict[str, Any]]) -> str:
    """Our pooled rows, then the published leaderboard rows."""
    lines = [f"{'model':<34} {'F1':>5} {'FAR %':>6} {'MAR %':>6}  source"]
    for model, row in sorted(summary.items(), key=lambda kv: -kv[1]["f1"]):
        src = "edgead bundle" if "bundle_vs_torch_max_rel" in row else "edgead"
        lines.append(
            f"{model:<34} {row['f1']:5.3f} {row['far']:6.1f} {row['mar']:6.1f}  "
            f"{src}, {row['n_files']} files"
        )
    factors = next(iter(summary.values()), {}).get("sweep", {})
    if factors:
        lines.append("\nthreshold factor sweep (F1 / FAR %), same fitted-rows quantile:")
        lines.append(f"{'model':<12}" + "".join(f"{'x' + f:>13}" for f in factors))
        for model, row in summary.items():
            cells = "".join(
                f"{row['sweep'][f]['f1']:7.3f}/{row['sweep'][f]['far']:4.1f}%" for f in factors
            )
            lines.append(f"{model:<12}{cells}")
        lines.append("")
    for name, (f1, far, mar) in LEADERBOARD.items():
        lines.append(f"{name:<34} {f1:5.2f} {far:6.2f} {mar:6.2f}  SKAB leaderboard")
    return "\n".join(lines)


def _parse_configs(pairs: Sequence[str]) -> dict[str, dict[str, Any]]:
    """{'conv_ae_1d': {'window': '20'}} from ['conv_ae_1d.window=20', ...]."""
    from edgead.config import parse_overrides

    out: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        model, _, rest = pair.partition(".")
        if model not in WINDOW_MODELS or not rest:
            raise SystemExit(f"--set expects MODEL.KEY=VALUE with MODEL in {WINDOW_MODELS}")
        out.setdefault(model, {}).update(parse_overrides([rest]))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print the table; write JSON. Returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared/datasets/skab_valve1"))
    parser.add_argument("--models", default=",".join(ALL_MODELS))
    parser.add_argument("--files", default=None, help="comma-separated file stems (default all)")
    parser.add_argument("--fit-rows", type=int, default=400)
    parser.add_argument("--threshold-quantile", type=float, default=0.99)
    parser.add_argument("--threshold-factor", type=float, default=9.0)
    parser.add_argument(
        "--sweep",
        type=lambda text: [float(v) for v in text.split(",")],
        default=[1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0, 12.0],
        help="threshold factors to report besides the default (comma-separated)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], help="MODEL.KEY=VALUE config")
    parser.add_argument("--no-export", action="store_true", help="score with torch only")
    parser.add_argument("--json", default=None, help="output JSON (default benchmarks/results)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("edgead", "root"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(REPO))
    from edgead.bench import git_sha, write_report

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - set(ALL_MODELS))
    if unknown:
        raise SystemExit(f"unknown models {unknown}; known: {', '.join(ALL_MODELS)}")
    folder = Path(args.data)
    files = sorted((folder / "valve1").glob("*.csv"), key=lambda p: int(p.stem))
    if args.files:
        wanted = set(args.files.split(","))
        files = [f for f in files if f.stem in wanted]
    if not files:
        raise SystemExit(f"no SKAB files under {folder}/valve1")
    configs = _parse_configs(args.set)
    runs: list[dict[str, Any]] = []
    for path in files:
        runs.extend(run_file(path, models, configs, args))
    summary = pooled(runs, models)
    print(format_table(summary))
    report = {
        "schema_version": 1,
        "benchmark": "skab",
        "git_sha": git_sha(REPO),
        "protocol": {
            "fit_rows": args.fit_rows,
            "threshold": f"quantile {args.threshold_quantile} of the fitted rows' scores x "
            f"{args.threshold_factor}",
            "scored_rows": "rows after the fitted ones; a row's score = its window's (last row)",
            "pooled": "counts summed over files",
        },
        "configs": configs,
        "seed": args.seed,
        "exported": not args.no_export,
        "summary": summary,
        "leaderboard": {
            name: {"f1": f1, "far": far, "mar": mar} for name, (f1, far, mar) in LEADERBOARD.items()
        },
        "runs": runs,
    }
    out = write_report(report, args.json, REPO / "benchmarks" / "results", "skab")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
