"""Leave-one-dataset-out (LODO) selection of the tabular deep models' defaults (issue 20).

A tuned default is only worth what it scores on data it was not chosen on. This script runs a
small grid of candidate settings for edgead's `ae` and `vae` (SETTINGS below) on the ADBench
"Classical" sets x seeds under the protocol of benchmarks/tabular.py (its `adbench_split` splits,
`score_metrics`, `summarise`, `format_table`, run loop and result-file shape are reused), and
then, for every data set d:

    choose the setting with the best mean AUROC over the OTHER data sets (seed means),
    report that setting's metrics on d.

The LODO row of a model is the mean of those left-out results over all data sets: what a new data
set should expect from the selection procedure. The shipped default is the setting the same rule
picks with all data sets in (reported separately, with how often each setting was picked).
Models without a tuned choice (iforest, deep_svdd, the classical detectors, every PyOD model)
run with their fixed defaults; their LODO row equals their plain mean, since nothing is chosen.

One table of (setting, data set, seed) results serves every left-out set, so the grid runs once.

    .venv/bin/python benchmarks/tabular_lodo.py --seeds 0,1,2,3,4           # the whole grid
    .venv/bin/python benchmarks/tabular_lodo.py --models ae@v1,ae@pyod --datasets glass --seeds 0
    .venv/bin/python benchmarks/tabular_lodo.py --merge a.json b.json      # LODO of saved runs

Writes benchmarks/results/tabular-lodo-<UTC time>.json (updated after every data set).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _load(name: str, file: str) -> Any:
    """A sibling benchmark script as a module (its protocol and summary code are reused)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / file)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


CLS = _load("edgead_bench_tabular_classical", "tabular_classical.py")
TAB = CLS.TAB

# Candidate settings: config overrides of edgead's detector, each spelled out in full for the
# fields the grid varies, so a setting means the same thing after the defaults change.
_AE_V1 = {  # the defaults before issue 20 (chosen on seed 0 of 11 sets)
    "hidden_sizes": (64,),
    "latent_dim": 32,
    "dropout": 0.2,
    "batch_norm": False,
    "latent_activation": False,
    "batch_size": 128,
    "epochs": 50,
    "val_fraction": 0.1,
    "patience": 10,
}
_AE_PYOD = {  # PyOD 3.x AutoEncoder: D-64-32-64-D, Linear-BN-ReLU-dropout, 10 epochs, batch 32
    **_AE_V1,
    "batch_norm": True,
    "latent_activation": True,
    "batch_size": 32,
    "epochs": 10,
    "val_fraction": 0.0,
    "patience": 0,
}
_VAE_V1 = {
    "hidden_sizes": (64, 32),
    "latent_dim": 2,
    "kl_weight": 1.0,
    "score_kl_weight": 0.5,
    "dropout": 0.0,
    "batch_norm": False,
    "batch_size": 128,
    "epochs": 50,
    "val_fraction": 0.1,
    "patience": 10,
}
_VAE_PYOD = {  # PyOD 3.x VAE: 128-64-32 / 2 / 32-64-128, dropout 0.2, 30 epochs, batch 32; its
    # KL term is clamped to [0, capacity=0], i.e. it trains without one
    **_VAE_V1,
    "hidden_sizes": (128, 64, 32),
    "kl_weight": 0.0,
    "score_kl_weight": 0.0,
    "dropout": 0.2,
    "batch_size": 32,
    "epochs": 30,
    "val_fraction": 0.0,
    "patience": 0,
}
# The grid is small on purpose (20 sets x 5 seeds x every setting on a shared 2-core VM).
SETTINGS: dict[str, dict[str, dict[str, Any]]] = {
    "ae": {"v1": _AE_V1, "pyod": _AE_PYOD},
    "vae": {"v1": _VAE_V1, "pyod": _VAE_PYOD},
}
GRID_MODELS = tuple(f"{family}@{name}" for family, grid in SETTINGS.items() for name in grid)
FIXED_MODELS = ("iforest", "deep_svdd", "pyod_ae", "pyod_vae", "pyod_deep_svdd", "pyod_iforest")
ALL_MODELS = GRID_MODELS + tuple(CLS.ALL_MODELS)


def make_scorer(
    model: str, n_features: int, seed: int
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """fit-then-score function for a grid setting "family@name" or any fixed model."""
    family, _, name = model.partition("@")
    if not name:
        return CLS.make_scorer(model, n_features, seed)
    overrides = SETTINGS[family][name]

    def run_setting(train: np.ndarray, test: np.ndarray) -> np.ndarray:
        from edgead.models.base import create_detector

        det = create_detector(family, dict(overrides))
        det.fit(train, seed=seed)
        return det.score(test).scores

    return run_setting


def seed_means(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """{model: {data set: {"auroc", "auprc", "f1", "n_seeds"}}} over the runs that succeeded."""
    return TAB.summarise(runs)["per_dataset"]


def complete_settings(ok: list[dict[str, Any]], family: str) -> list[str]:
    """Settings of `family` with a result for every (data set, seed) pair of the runs `ok`.

    Only these compete, so every setting is compared on the same splits.
    """
    pairs = {(r["dataset"], r["seed"]) for r in ok}
    return [
        name
        for name in SETTINGS[family]
        if pairs <= {(r["dataset"], r["seed"]) for r in ok if r["model"] == f"{family}@{name}"}
    ]


def lodo_choices(
    per: dict[str, dict[str, dict[str, float]]],
    family: str,
    names: list[str],
    datasets: list[str],
) -> dict[str, str]:
    """{left-out data set: chosen setting}: best mean AUROC (of seed means) over the OTHER sets.

    names: the competing settings (ties: the first in SETTINGS order).
    """
    choices = {}
    for left_out in datasets:
        others = [d for d in datasets if d != left_out]
        means = [np.mean([per[f"{family}@{n}"][d]["auroc"] for d in others]) for n in names]
        choices[left_out] = names[int(np.argmax(means))]
    return choices


def lodo(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """LODO runs and summary: grid families become one model each, fixed models stay as run.

    Returns:
        {"runs": LODO runs (grid runs relabelled to their family on the data sets where their
        setting was chosen, plus the fixed models' runs), "choices": {family: {data set:
        setting}}, "all_in": {family: {"setting", "mean_auroc" per setting}}, "summary",
        "per_dataset", "datasets" (TAB.summarise of the LODO runs)}.
    """
    ok = [r for r in runs if "auroc" in r]
    per = seed_means(ok)
    datasets = sorted({r["dataset"] for r in ok})
    out: list[dict[str, Any]] = [r for r in ok if "@" not in r["model"]]
    choices, all_in = {}, {}
    for family in SETTINGS:
        complete = complete_settings(ok, family)
        if not complete:
            continue
        chosen = lodo_choices(per, family, complete, datasets)
        choices[family] = chosen
        means = {
            n: float(np.mean([per[f"{family}@{n}"][d]["auroc"] for d in datasets]))
            for n in complete
        }
        all_in[family] = {"setting": max(means, key=means.__getitem__), "mean_auroc": means}
        out.extend(
            {**r, "model": family, "setting": chosen[r["dataset"]]}
            for r in ok
            if r["model"] == f"{family}@{chosen[r['dataset']]}"
        )
    return {"runs": out, "choices": choices, "all_in": all_in, **TAB.summarise(out)}


def per_dataset_table(runs: list[dict[str, Any]], result: dict[str, Any]) -> str:
    """Markdown: per data set, each setting's seed-mean AUROC, the LODO choice and its AUROC."""
    per = seed_means([r for r in runs if "auroc" in r])
    families = list(result["choices"])
    head = ["data set"]
    for family in families:
        head += [f"{family}@{n}" for n in result["all_in"][family]["mean_auroc"]]
        head.append(f"{family} LODO (chosen)")
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for ds in result["datasets"]:
        cells = [ds]
        for family in families:
            names = result["all_in"][family]["mean_auroc"]
            cells += [f"{per[f'{family}@{n}'][ds]['auroc']:.4f}" for n in names]
            chosen = result["choices"][family][ds]
            cells.append(f"{result['per_dataset'][family][ds]['auroc']:.4f} ({chosen})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Print the LODO table, the choices and the per-setting means; return the LODO result."""
    result = lodo(runs)
    print(TAB.format_table(result["summary"]))
    if result["choices"]:
        print("\n" + per_dataset_table(runs, result))
    for family, chosen in result["choices"].items():
        counts = {n: list(chosen.values()).count(n) for n in result["all_in"][family]["mean_auroc"]}
        means = result["all_in"][family]["mean_auroc"]
        print(
            f"\n{family}: setting chosen per left-out set: "
            + ", ".join(f"{n} x{c}" for n, c in counts.items() if c)
            + f"; with all {len(chosen)} sets in: {result['all_in'][family]['setting']}"
        )
        print(
            "  mean AUROC per setting (all sets): "
            + ", ".join(f"{n} {m:.4f}" for n, m in means.items())
        )
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Run the grid and fixed models (or merge saved runs); print the LODO table; write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default="", help="comma-separated name parts (default all)")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument(
        "--models",
        default=",".join(GRID_MODELS + FIXED_MODELS),
        help=f"comma-separated, from {', '.join(ALL_MODELS)}",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--results-file", default="")
    parser.add_argument(
        "--merge",
        nargs="+",
        default=None,
        metavar="JSON",
        help="only combine the runs of earlier result files (of this script, tabular.py or "
        "tabular_classical.py; FILE:model,model keeps those models) and print the LODO table",
    )
    args = parser.parse_args(argv)
    seeds = {int(s) for s in args.seeds.split(",") if s.strip()}
    if args.merge:
        runs, _ = TAB.collect_runs(args.merge, seeds)
        report(runs)
        return 0
    setup = TAB.prepare_run(parser, args, argv, ALL_MODELS, "tabular-lodo", "torch/sklearn/pyod")
    if setup is None:
        return 2
    models, seed_list, files, out, doc = setup
    results = doc["results"]
    results["protocol"] += "; leave-one-dataset-out choice among SETTINGS per family"
    results["settings"] = SETTINGS

    def record() -> None:
        results.update(TAB.summarise(results.get("runs", [])))
        out.write_text(json.dumps(doc, indent=1, default=list) + "\n")

    TAB.run_quality(files, models, seed_list, record, results, make_scorer)
    record()
    report(results["runs"])
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main())
