"""Leave-one-dataset-out (LODO) selection of the tabular deep models' defaults (issue 20).

A tuned default is only worth what it scores on data it was not chosen on. This script runs a
small grid of candidate settings for edgead's `ae` and `vae` (SETTINGS, plus ENSEMBLES of saved
grid runs) on the ADBench "Classical" sets x seeds under the protocol of benchmarks/tabular.py
(its `adbench_split` splits, `score_metrics`, `summarise`, `format_table`, run loop and
result-file shape are reused), and then, for every data set d:

    choose a setting using the OTHER data sets only (seed means), by a rule (RULES):
      "robust": beats PyOD's same model (REFERENCE) on >= half of them, then the best
                TRIM-trimmed mean of the per-set AUROC differences to it;
      "mean":   the best mean AUROC;
    report that setting's metrics on d.

The LODO row of a model is the mean of those left-out results over all data sets: what a new data
set should expect from the selection procedure. The shipped default is the setting the robust
rule picks with all data sets in. Each candidate's mean AUROC, mean rank among the candidates,
wins against PyOD and the same on a "held-out-like" subset (few training rows or many columns,
`heldout_like`) are printed too. Models without a tuned choice (iforest, deep_svdd, the classical
detectors, every PyOD model) run with their fixed defaults; their LODO row equals their plain
mean, since nothing is chosen.

One table of (setting, data set, seed) results serves every left-out set, so the grid runs once.
Ensemble members are grid runs "family@setting#k" (seed + k on the same split) whose scores are
saved with --save-scores; a min_steps setting is only run where its step floor binds and
inherits its base's runs elsewhere (INHERIT).

    .venv/bin/python benchmarks/tabular_lodo.py --seeds 0,1,2,3,4 --save-scores DIR  # the grid
    .venv/bin/python benchmarks/tabular_lodo.py --models ae@v1,ae@pyod --datasets glass --seeds 0
    .venv/bin/python benchmarks/tabular_lodo.py --merge a.json b.json --scores DIR   # LODO

Writes benchmarks/results/tabular-lodo-<UTC time>.json (updated after every data set). The
commands behind the README's tables: benchmarks/tabular.md.
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
    "min_steps": 0,
    "n_members": 1,
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
    "min_steps": 0,
    "n_members": 1,
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
_AE_STEPS = {**_AE_V1, "min_steps": 1000}  # v1, but small tables train >= 1000 updates
_VAE_STEPS = {**_VAE_PYOD, "min_steps": 1000}
# The grid is small on purpose (20 sets x 5 seeds x every setting on a shared 2-core VM).
SETTINGS: dict[str, dict[str, dict[str, Any]]] = {
    "ae": {"v1": _AE_V1, "pyod": _AE_PYOD, "steps": _AE_STEPS},
    "vae": {"v1": _VAE_V1, "pyod": _VAE_PYOD, "steps": _VAE_STEPS},
}
# Ensembles of saved grid runs (members "setting#k" = that setting trained with seed + k on the
# same split); scored from --save-scores files, as `n_members` > 1 scores.
ENSEMBLES: dict[str, dict[str, tuple[str, ...]]] = {
    "ae": {
        "ens3": ("v1", "v1#1", "v1#2"),
        "steps3": ("steps", "steps#1", "steps#2"),
        "mix": ("v1", "pyod"),  # two architectures: a hedge between their strong sets
        "mixs": ("steps", "pyod"),
    },
}
# A "min_steps" setting equals its base setting wherever min_steps does not bind (enough
# steps already: `scaled_epochs`); there the base's runs stand for it (`inherit_runs`), so it is
# only run on the small sets where it changes the training.
INHERIT: dict[str, dict[str, str]] = {"ae": {"steps": "v1"}, "vae": {"steps": "pyod"}}
REFERENCE = {"ae": "pyod_ae", "vae": "pyod_vae"}  # PyOD's same model, for the robust rule
RULES = ("robust", "mean")
TRIM = 0.2  # share of sets cut from each end of the per-set AUROC differences (robust rule)
SMALL_ROWS, WIDE_COLUMNS = 300, 30  # "held-out-like" sets: few training rows or many columns
SCORES_DIR: Path | None = None  # --save-scores: where each grid run's scores go (ensembles)
GRID_MODELS = tuple(f"{family}@{name}" for family, grid in SETTINGS.items() for name in grid)
MEMBER_MODELS = tuple(  # the extra seeds the ENSEMBLES need ("ae@v1#1", ...)
    dict.fromkeys(
        f"{family}@{member}"
        for family, ensembles in ENSEMBLES.items()
        for members in ensembles.values()
        for member in members
        if "#" in member
    )
)
FIXED_MODELS = ("iforest", "deep_svdd", "pyod_ae", "pyod_vae", "pyod_deep_svdd", "pyod_iforest")
ALL_MODELS = GRID_MODELS + tuple(CLS.ALL_MODELS)


def make_scorer(
    model: str, n_features: int, seed: int
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """fit-then-score function for a grid setting "family@name[#k]" or any fixed model.

    "#k" trains with seed + k on the same split (an ensemble member). With SCORES_DIR set, the
    test scores and the mean / std of the scores of the training rows are saved there (see
    `score_file`), so ensembles of saved members can be evaluated without training again.
    """
    family, _, name = model.partition("@")
    if not name:
        return CLS.make_scorer(model, n_features, seed)
    setting, _, offset = name.partition("#")
    overrides = SETTINGS[family][setting]

    def run_setting(train: np.ndarray, test: np.ndarray) -> np.ndarray:
        from edgead.models.base import create_detector

        det = create_detector(family, dict(overrides))
        det.fit(train, seed=seed + int(offset or 0))
        scores = det.score(test).scores
        if SCORES_DIR is not None:
            fit_scores = det.score(train).scores.astype(np.float64)
            np.savez(
                score_file(SCORES_DIR, model, seed, test),
                test=scores,
                fit_mean=fit_scores.mean(),
                fit_std=fit_scores.std(),
            )
        return scores

    return run_setting


def score_file(directory: Path, model: str, seed: int, test: np.ndarray) -> Path:
    """Where the scores of `model` on the split (seed, test rows) are saved: the file name holds
    a hash of the test rows, so the data set is found again by redoing the split."""
    import hashlib

    digest = hashlib.sha1(np.ascontiguousarray(test, dtype=np.float32).tobytes()).hexdigest()
    return directory / f"{model.replace('@', '_').replace('#', '-')}_s{seed}_{digest[:16]}.npz"


def seed_means(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """{model: {data set: {"auroc", "auprc", "f1", "n_seeds"}}} over the runs that succeeded."""
    return TAB.summarise(runs)["per_dataset"]


def candidates(family: str) -> list[str]:
    """The family's competing settings: SETTINGS names, then ENSEMBLES names."""
    return [*SETTINGS[family], *ENSEMBLES.get(family, {})]


def complete_settings(ok: list[dict[str, Any]], family: str) -> list[str]:
    """Candidates of `family` with a result for every (data set, seed) pair of the runs `ok`.

    Only these compete, so every setting is compared on the same splits.
    """
    pairs = {(r["dataset"], r["seed"]) for r in ok}
    return [
        name
        for name in candidates(family)
        if pairs <= {(r["dataset"], r["seed"]) for r in ok if r["model"] == f"{family}@{name}"}
    ]


def rule_keys(
    per: dict[str, dict[str, dict[str, float]]],
    family: str,
    names: list[str],
    datasets: list[str],
    rule: str,
) -> dict[str, tuple[float, ...]]:
    """{setting: sort key} on `datasets` (larger is better) under a selection rule.

    "mean": mean AUROC (of seed means). "robust": (beats PyOD's same model, REFERENCE, on at
    least half of the sets; TRIM-trimmed mean of the per-set AUROC differences to it), so a
    setting must win on most sets, and no single set (trimmed away) decides.
    """
    if rule == "mean":
        return {
            n: (float(np.mean([per[f"{family}@{n}"][d]["auroc"] for d in datasets])),)
            for n in names
        }
    from scipy.stats import trim_mean

    ref = per[REFERENCE[family]]
    keys = {}
    for n in names:
        deltas = np.array([per[f"{family}@{n}"][d]["auroc"] - ref[d]["auroc"] for d in datasets])
        keys[n] = (float(np.mean(deltas > 0) >= 0.5), float(trim_mean(deltas, TRIM)))
    return keys


def lodo_choices(
    per: dict[str, dict[str, dict[str, float]]],
    family: str,
    names: list[str],
    datasets: list[str],
    rule: str = "mean",
) -> dict[str, str]:
    """{left-out data set: chosen setting}: the best under `rule` over the OTHER sets.

    names: the competing settings (ties: the first in `names` order).
    """
    choices = {}
    for left_out in datasets:
        keys = rule_keys(per, family, names, [d for d in datasets if d != left_out], rule)
        choices[left_out] = max(names, key=keys.__getitem__)
    return choices


def rule_available(per: dict[str, Any], family: str, datasets: list[str], rule: str) -> bool:
    """The robust rule needs PyOD's same model (REFERENCE) on every data set."""
    ref = REFERENCE.get(family, "")
    return rule == "mean" or all(d in per.get(ref, {}) for d in datasets)


def lodo(runs: list[dict[str, Any]], rule: str = "mean") -> dict[str, Any]:
    """LODO runs and summary: grid families become one model each, fixed models stay as run.

    rule: "mean" or "robust" (`rule_keys`); a family whose PyOD reference is missing is left
    out under "robust".

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
        if not complete or not rule_available(per, family, datasets, rule):
            continue
        chosen = lodo_choices(per, family, complete, datasets, rule)
        choices[family] = chosen
        means = {
            n: float(np.mean([per[f"{family}@{n}"][d]["auroc"] for d in datasets]))
            for n in complete
        }
        keys = rule_keys(per, family, complete, datasets, rule)
        all_in[family] = {"setting": max(complete, key=keys.__getitem__), "mean_auroc": means}
        out.extend(
            {**r, "model": family, "setting": chosen[r["dataset"]]}
            for r in ok
            if r["model"] == f"{family}@{chosen[r['dataset']]}"
        )
    return {"runs": out, "choices": choices, "all_in": all_in, **TAB.summarise(out)}


def binds(family: str, setting: str, n_train: int) -> bool:
    """Whether the setting's min_steps changes training on `n_train` rows (after the
    validation split of `split_validation`, which keeps every row below 10 remaining)."""
    from edgead.models._tabular import scaled_epochs
    from edgead.models.base import create_detector

    cfg = create_detector(family, dict(SETTINGS[family][setting])).config
    n_val = int(round(cfg.val_fraction * n_train))
    rows = n_train if n_val == 0 or n_train - n_val < 10 else n_train - n_val
    return scaled_epochs(cfg, rows) != (cfg.epochs, cfg.patience)


def inherit_runs(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs of each INHERIT setting copied from its base where min_steps does not bind and the
    setting has no run of its own (marked "inherited_from")."""
    have = {(r["model"], r["dataset"], r["seed"]) for r in runs}
    out = []
    for family, pairs in INHERIT.items():
        for setting, base in pairs.items():
            model = f"{family}@{setting}"
            out.extend(
                {**r, "model": model, "inherited_from": r["model"]}
                for r in runs
                if r["model"] == f"{family}@{base}"
                and (model, r["dataset"], r["seed"]) not in have
                and not binds(family, setting, r["n_train"])
            )
    return out


def heldout_like(runs: list[dict[str, Any]]) -> list[str]:
    """Data sets shaped like the small or wide held-out sets of issue 20: <= SMALL_ROWS training
    rows or >= WIDE_COLUMNS columns."""
    return sorted(
        {
            r["dataset"]
            for r in runs
            if r.get("n_train", SMALL_ROWS + 1) <= SMALL_ROWS
            or r.get("n_features", 0) >= WIDE_COLUMNS
        }
    )


def member_file(
    directory: Path, family: str, member: str, seed: int, test: np.ndarray, n_train: int
) -> Path:
    """The saved scores of an ensemble member "setting[#k]"; for an INHERIT setting where
    min_steps does not bind, its base's file (the same training, see `inherit_runs`)."""
    own = score_file(directory, f"{family}@{member}", seed, test)
    setting, sep, offset = member.partition("#")
    base = INHERIT.get(family, {}).get(setting)
    if own.exists() or base is None or binds(family, setting, n_train):
        return own
    return score_file(directory, f"{family}@{base}{sep}{offset}", seed, test)


def ensemble_runs(runs: list[dict[str, Any]], directory: Path) -> list[dict[str, Any]]:
    """Runs of the ENSEMBLES, from the members' saved scores (`--save-scores`).

    An ensemble's score is the mean over members of (test score - mean of the member's scores
    on its training rows) / their std: what `n_members` > 1 computes (MemberEnsemble). A
    (data set, seed) is only scored when every member's file is there.
    """
    from edgead.data.tabular import adbench_split, load_table

    out = []
    pairs = sorted({(r["dataset"], r["seed"]) for r in runs if "@" in r["model"]})
    tables: dict[str, Any] = {}
    for ds, seed in pairs:
        table = tables.setdefault(ds, load_table(TAB.data_dir() / f"{ds}.npz"))
        train_idx, test_idx = adbench_split(table.y, seed)
        test, labels = table.X[test_idx], table.y[test_idx]
        for family, ensembles in ENSEMBLES.items():
            for name, members in ensembles.items():
                files = [
                    member_file(directory, family, m, seed, test, int(train_idx.size))
                    for m in members
                ]
                if not all(f.exists() for f in files):
                    continue
                z = []
                for f in files:
                    with np.load(f) as saved:
                        spread = float(saved["fit_std"]) or 1.0
                        z.append((saved["test"] - float(saved["fit_mean"])) / spread)
                out.append(
                    {
                        "dataset": ds,
                        "model": f"{family}@{name}",
                        "seed": seed,
                        "n_train": int(train_idx.size),
                        "n_test": int(test_idx.size),
                        "n_features": table.n_features,
                        **TAB.score_metrics(labels, np.mean(z, axis=0)),
                    }
                )
    return out


def per_dataset_table(runs: list[dict[str, Any]], result: dict[str, Any]) -> str:
    """Markdown: per data set, each setting's seed-mean AUROC, the LODO choice and its AUROC."""
    per = seed_means([r for r in runs if "auroc" in r])
    families = list(result["choices"])
    head = ["data set"]
    refs = {f: REFERENCE[f] for f in families if REFERENCE.get(f) in per}
    for family in families:
        head += [f"{family}@{n}" for n in result["all_in"][family]["mean_auroc"]]
        head.append(f"{family} LODO (chosen)")
        head += [refs[family]] if family in refs else []
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for ds in result["datasets"]:
        cells = [ds]
        for family in families:
            names = result["all_in"][family]["mean_auroc"]
            cells += [f"{per[f'{family}@{n}'][ds]['auroc']:.4f}" for n in names]
            chosen = result["choices"][family][ds]
            cells.append(f"{result['per_dataset'][family][ds]['auroc']:.4f} ({chosen})")
            if family in refs:
                cells.append(f"{per[refs[family]][ds]['auroc']:.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def candidate_table(
    per: dict[str, dict[str, dict[str, float]]],
    family: str,
    names: list[str],
    datasets: list[str],
    subset: list[str],
) -> str:
    """Markdown: per candidate (all sets in) mean AUROC, mean rank among the candidates, the
    robust rule's terms against PyOD's same model, and the same on the held-out-like subset."""
    from scipy.stats import rankdata, trim_mean

    ranks = np.array(
        [rankdata([-per[f"{family}@{n}"][d]["auroc"] for n in names]) for d in datasets]
    ).mean(axis=0)
    ref = per.get(REFERENCE[family], {})
    head = (
        f"| {family} setting | mean AUROC | mean rank | trimmed mean diff vs PyOD | wins vs PyOD "
        f"| held-out-like ({len(subset)} sets) mean AUROC | held-out-like wins vs PyOD |"
    )
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|"]
    for n, rank in zip(names, ranks, strict=True):
        own = per[f"{family}@{n}"]
        mean_all = np.mean([own[d]["auroc"] for d in datasets])
        mean_sub = np.mean([own[d]["auroc"] for d in subset]) if subset else float("nan")
        cells = [n, f"{mean_all:.4f}", f"{rank:.2f}"]
        if all(d in ref for d in datasets):
            delta = np.array([own[d]["auroc"] - ref[d]["auroc"] for d in datasets])
            sub = np.array([own[d]["auroc"] - ref[d]["auroc"] for d in subset])
            cells += [f"{trim_mean(delta, TRIM):+.4f}", f"{int((delta > 0).sum())}/{delta.size}"]
            cells += [f"{mean_sub:.4f}", f"{int((sub > 0).sum())}/{sub.size}"]
        else:
            cells += ["-", "-", f"{mean_sub:.4f}", "-"]
        lines.append("| " + " | ".join(cells) + " |")
    if all(d in ref for d in datasets):
        mean_ref = np.mean([ref[d]["auroc"] for d in datasets])
        mean_ref_sub = np.mean([ref[d]["auroc"] for d in subset]) if subset else float("nan")
        lines.append(
            f"| ({REFERENCE[family]}) | {mean_ref:.4f} | - | - | - | {mean_ref_sub:.4f} | - |"
        )
    return "\n".join(lines)


def lodo_table(
    per: dict[str, dict[str, dict[str, float]]],
    results: dict[str, dict[str, Any]],
    subset: list[str],
) -> str:
    """Markdown: per family and rule, the LODO mean AUROC (all sets, held-out-like subset),
    left-out wins against PyOD's same model, and what was chosen."""
    lines = [
        "| model | rule | chosen on left-out sets | all-in choice | LODO mean AUROC "
        "| wins vs PyOD | held-out-like LODO mean AUROC | PyOD same model (all / held-out-like) |",
        "|---|---|---|---|---:|---:|---:|---|",
    ]
    for rule, result in results.items():
        for family, chosen in result["choices"].items():
            lodo_per = result["per_dataset"][family]
            ref = per.get(REFERENCE[family], {})
            sets = list(chosen)
            counts = {
                n: list(chosen.values()).count(n) for n in result["all_in"][family]["mean_auroc"]
            }
            picked = ", ".join(f"{n} x{c}" for n, c in counts.items() if c)
            mean_all = np.mean([lodo_per[d]["auroc"] for d in sets])
            mean_sub = np.mean([lodo_per[d]["auroc"] for d in subset])
            if all(d in ref for d in sets):
                wins = sum(lodo_per[d]["auroc"] > ref[d]["auroc"] for d in sets)
                ref_cell = (
                    f"{np.mean([ref[d]['auroc'] for d in sets]):.4f} / "
                    f"{np.mean([ref[d]['auroc'] for d in subset]):.4f}"
                )
                win_cell = f"{wins}/{len(sets)}"
            else:
                ref_cell, win_cell = "-", "-"
            lines.append(
                f"| {family} | {rule} | {picked} | {result['all_in'][family]['setting']} "
                f"| {mean_all:.4f} | {win_cell} | {mean_sub:.4f} | {ref_cell} |"
            )
    return "\n".join(lines)


def report(runs: list[dict[str, Any]], scores_dir: Path | None = None) -> dict[str, Any]:
    """Print the candidate tables, the LODO table under every rule, the LODO summary (robust
    rule where PyOD's models ran) and the per-set choices; return the LODO results per rule."""
    if scores_dir is not None:
        runs = [
            r
            for r in runs
            if r["model"].split("@")[-1] not in ENSEMBLES.get(r["model"].split("@")[0], {})
        ]
        runs = runs + ensemble_runs(runs, scores_dir)
    runs = runs + inherit_runs(runs)
    ok = [r for r in runs if "auroc" in r]
    per = seed_means(ok)
    datasets = sorted({r["dataset"] for r in ok})
    subset = heldout_like(ok)
    print(
        f"held-out-like sets (<= {SMALL_ROWS} training rows or >= {WIDE_COLUMNS} columns): "
        + ", ".join(subset)
    )
    for family in SETTINGS:
        names = complete_settings(ok, family)
        if names:
            print("\n" + candidate_table(per, family, names, datasets, subset))
    results = {rule: lodo(runs, rule) for rule in RULES}
    print("\n" + lodo_table(per, results, subset))
    main_rule = next((r for r in RULES if results[r]["choices"]), RULES[-1])
    print(
        f"\nLODO summary, rule {main_rule!r}:\n" + TAB.format_table(results[main_rule]["summary"])
    )
    if results[main_rule]["choices"]:
        print("\n" + per_dataset_table(runs, results[main_rule]))
    return {"runs_with_ensembles": runs, **results}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the grid and fixed models (or merge saved runs); print the LODO table; write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default="", help="comma-separated name parts (default all)")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument(
        "--models",
        default=",".join(GRID_MODELS + MEMBER_MODELS + FIXED_MODELS),
        help=f"comma-separated, from {', '.join(ALL_MODELS)}",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--results-file", default="")
    parser.add_argument(
        "--save-scores",
        default="",
        metavar="DIR",
        help="save every grid run's test scores and training-score mean/std here (ensembles)",
    )
    parser.add_argument(
        "--scores",
        default="",
        metavar="DIR",
        help="with --merge: score the ENSEMBLES from the members' files saved in DIR",
    )
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
        report(runs, Path(args.scores) if args.scores else None)
        return 0
    global SCORES_DIR
    if args.save_scores:
        SCORES_DIR = Path(args.save_scores)
        SCORES_DIR.mkdir(parents=True, exist_ok=True)
    known = ALL_MODELS + tuple(f"{m}#{k}" for m in GRID_MODELS for k in range(1, 5))
    setup = TAB.prepare_run(parser, args, argv, known, "tabular-lodo", "torch/sklearn/pyod")
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
    report(results["runs"], SCORES_DIR)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main())
