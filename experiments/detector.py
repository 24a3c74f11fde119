"""How much could any label-free re-run rule gain over the confidence threshold on a ladder's rungs?
(`python -m experiments.detector`)

The ladder method's re-run agent (rtsearch.methods.ladder) decides from the cheap pass's class probabilities; the
threshold cascade from their maximum alone. Over five seeds the agent was not clearly better than the cascade.
To bound what learning that decision can buy on these networks, this study fits supervised error detectors on
the agent's own observation with the training split's labels (more than a reward can teach the agent):
scikit-learn's logistic regression and gradient-boosted trees, each predicting whether the cheap rung answers
wrong. A third detector (trees) also sees the cheap rung's pooled last-layer features, what the network
computed before its classifier. A fourth rule pays for a second cheap opinion: two cheap rungs run on every input,
the dearer of them answers, and trees on both passes and on whether they agree decide the re-run. A detector's
score replaces the confidence in the cascade's own search (`best_cascade`: every pair of
rungs, the share of re-runs the budget allows, chosen on validation). A label oracle (the cheap rung's wrong
answers re-run first, on validation and test alike) bounds every rule that re-runs on one dearer rung. Reads
finished ladder runs (their rungs and metrics.json); trains only the detectors. Writes results/ladder-detector.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from itertools import combinations

import numpy as np

from experiments.agents_study import against, command_line, mean_sd

RUNS = "runs/any-budget/ladder-{budget}-s{seed}"
RULES = {"confidence": "threshold cascade (max probability)",
         "logistic": "cascade on a logistic-regression error detector",
         "trees": "cascade on a gradient-boosted-trees error detector",
         "pooled": "the same trees, also seeing the cheap rung's pooled last-layer features",
         "two": "a second cheap opinion: two cheap rungs run and paid, trees on both passes and their agreement",
         "oracle": "label oracle (the cheap rung's errors re-run first)"}


def with_scores(levels: list[dict], scores: dict[int, dict[str, np.ndarray]]) -> list[dict]:
    """The levels with each cheap level's "confidence" per split replaced by `scores[level][split]` (higher:
    keep the cheap answer), so `best_cascade` searches pairs and thresholds on that score instead."""
    return [{**lv, **{s: {**lv[s], "confidence": scores[i][s]} for s in ("val", "test")}}
            for i, lv in enumerate(levels)]


def confidence_scores(level: dict) -> dict[str, np.ndarray]:
    """The cascade's own score: the cheap pass's confidence."""
    return {s: level[s]["confidence"] for s in ("val", "test")}


def oracle_scores(level: dict) -> dict[str, np.ndarray]:
    """Wrong answers first (in [0, 0.5)), then right ones, each group by confidence."""
    return {s: np.where(level[s]["correct"], 1.0 + level[s]["confidence"], level[s]["confidence"]) / 2.0001
            for s in ("val", "test")}


def pooled_features(model, x) -> np.ndarray:
    """A rung's deployed model's last layer, averaged over space (B, channels): the input to its classifier."""
    import torch
    pooled = []
    hook = model.skip.layers[-1].register_forward_hook(lambda mod, inp, out: pooled.append(out[0].mean(dim=(2, 3))))
    try:
        with torch.no_grad():
            for i in range(0, len(x), 500):
                model(x[i:i + 500])
    finally:
        hook.remove()
    return torch.cat(pooled).numpy()


def trees(seed: int):
    """The gradient-boosted-trees error detector (scikit-learn), as every rule that uses trees sets it."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    return HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, random_state=seed)


def detector_scores(level: dict, kind: str, seed: int, splits) -> dict[str, np.ndarray]:
    """1 - P(the cheap answer is wrong), from a detector fit on the training split's outputs and labels."""
    from sklearn.linear_model import LogisticRegression

    from rtsearch.rl.rerun_features import features

    def seen(split: str) -> np.ndarray:
        obs = features(level[split]["log_probs"])
        if kind != "pooled":
            return obs
        return np.concatenate([obs, pooled_features(level["model"], getattr(splits, split)[0])], 1)
    model = LogisticRegression(max_iter=3000) if kind == "logistic" else trees(seed)
    model.fit(seen("train"), ~level["train"]["correct"])
    return {s: 1.0 - model.predict_proba(seen(s))[:, 1] for s in ("val", "test")}


def two_opinions(levels: list[dict], budget: float, seed: int) -> tuple[dict | None, dict | None]:
    """The second-opinion rule: for every two cheap rungs a < b that fit the budget together, trees fit on the
    training split predict from both passes (their observations and whether they agree) that b answers wrong;
    the pair then acts as one cheap level (MACs a + b, b's answers) in the cascade's search with each dearer rung.
    The found cascade with the best validation accuracy, and its paired level."""
    from rtsearch.methods.ladder import best_cascade
    from rtsearch.rl.rerun_features import features
    best, best_pair = None, None
    for a, b in combinations(range(len(levels)), 2):
        if levels[a]["macs_ratio"] + levels[b]["macs_ratio"] >= budget:
            continue

        def seen(split: str, a=a, b=b) -> np.ndarray:
            both = [levels[a][split]["log_probs"], levels[b][split]["log_probs"]]
            agree = both[0].argmax(1) == both[1].argmax(1)
            return np.concatenate([features(both[0]), features(both[1]), agree[:, None]], 1)
        model = trees(seed).fit(seen("train"), ~levels[b]["train"]["correct"])
        pair = {"macs_ratio": levels[a]["macs_ratio"] + levels[b]["macs_ratio"],
                **{s: {"correct": levels[b][s]["correct"], "confidence": 1.0 - model.predict_proba(seen(s))[:, 1]}
                   for s in ("val", "test")}}
        for wide in levels[b + 1:]:
            found = best_cascade([pair, wide], budget)
            if found is not None and (best is None or found["val_accuracy"] > best["val_accuracy"]):
                best, best_pair = found, pair
    return best, best_pair


def error_auc(level: dict, score: np.ndarray) -> float:
    """How well a score (higher: keep) ranks the cheap rung's wrong test answers first: ROC AUC."""
    from sklearn.metrics import roc_auc_score
    return float(roc_auc_score(~level["test"]["correct"], -score))


def rule_figures(found: dict, cheap: dict, test_score: np.ndarray) -> dict:
    """A rule's figures: its cascade's (`best_cascade`), and of its cheap level the AUC of `test_score` and the
    test accuracy."""
    return {"accuracy": found["accuracy"], "macs_ratio": found["macs_ratio"], "val_accuracy": found["val_accuracy"],
            "cheap_macs": found["cheap_macs"], "wide_macs": found["wide_macs"], "auc": error_auc(cheap, test_score),
            "cheap_test_accuracy": float(cheap["test"]["correct"].mean())}


def one_run(out: str) -> dict:
    """Every rule on one ladder run's rungs at its budget: test accuracy, MACs ratio, the cheap rung and the AUC of
    its error ranking; and the run's own agent and stored cascade figures."""
    import torch

    from rtsearch import data
    from rtsearch.config import RunConfig
    from rtsearch.methods.ladder import best_cascade, rung_outputs
    torch.set_num_threads(1)
    with open(os.path.join(out, "metrics.json")) as f:
        metrics = json.load(f)
    with open(os.path.join(out, "run.json")) as f:
        cfg = RunConfig.from_dict(json.load(f)["config"])
    splits = data.hold_out(data.load(cfg.dataset, cfg.seed, cfg.data_dir), cfg.holdout_share, cfg.seed)
    levels = sorted((rung_outputs(os.path.join(out, "rungs", f"{r['budget']:g}"), r["macs_ratio"], splits)
                     for r in metrics["rungs"]), key=lambda lv: lv["macs_ratio"])
    scores = {"confidence": {i: confidence_scores(lv) for i, lv in enumerate(levels)},
              "oracle": {i: oracle_scores(lv) for i, lv in enumerate(levels)},
              # a detector for each possible cheap rung (below the budget), the confidence for the others
              **{kind: {i: detector_scores(lv, kind, cfg.seed, splits) if lv["macs_ratio"] < cfg.budget
                        else confidence_scores(lv) for i, lv in enumerate(levels)}
                 for kind in ("logistic", "trees", "pooled")}}
    figures = {"budget": cfg.budget, "seed": cfg.seed, "agent": {"accuracy": metrics["accuracy"],
                                                                 "macs_ratio": metrics["macs_ratio"]},
               "stored_cascade_accuracy": metrics["cascade"]["accuracy"]}
    macs = [lv["macs_ratio"] for lv in levels]
    for rule, by_level in scores.items():
        found = best_cascade(with_scores(levels, by_level), cfg.budget)
        cheap = macs.index(found["cheap_macs"])
        figures[rule] = rule_figures(found, levels[cheap], by_level[cheap]["test"])
    found, pair = two_opinions(levels, cfg.budget, cfg.seed)
    figures["two"] = rule_figures(found, pair, pair["test"]["confidence"])
    return figures


def report(found: list[dict], budgets: list[float], seeds: list[int], command: str, runs: str) -> str:
    lines = ["# Could a better re-run rule beat the threshold cascade on the ladder's rungs?", "",
             f"Produced by `{command}` on the 2-core development machine (CPU only), from the ladder runs "
             f"`{runs}` (their rungs' deployed models, re-evaluated; nothing but the detectors is trained). "
             f"Test split 1,000 images; mean ± sample standard deviation over seeds {', '.join(map(str, seeds))}. "
             "Every rule re-runs an input on one dearer rung and pays both passes; the pair of rungs and the "
             "threshold are chosen on validation (500 images) by the cascade's own search, within the whole budget. "
             "The detectors see the agent's observation (the cheap pass's sorted probabilities, their entropy, the "
             "predicted class) and are fit on the training split's labels; the third detector also sees the cheap "
             "rung's pooled last-layer features (its classifier's input), which the cascade does not pay for here: "
             "a free look. The "
             "second-opinion rule pays for two cheap rungs on every input (its cheap rung MACs below are their sum, "
             "its cheap rung accuracy the dearer one's). AUC: how well the rule's score ranks its cheap rung's wrong "
             "test answers first.", ""]
    for budget in budgets:
        at = [f for f in found if f["budget"] == budget]
        acc = {rule: np.array([f[rule]["accuracy"] for f in at]) for rule in ("agent", *RULES)}
        lines += [f"## Budget {budget:g}", "",
                  "| rule | test accuracy | MACs ratio | error AUC | gain over the threshold cascade, per seed |",
                  "|---|---|---|---|---|",
                  f"| learned re-run agent (RLlib PPO, the ladder run) | {mean_sd(acc['agent'])} | "
                  f"{np.mean([f['agent']['macs_ratio'] for f in at]):.4f} | | "
                  f"{', '.join(f'{d:+.3f}' for d in acc['agent'] - acc['confidence'])} |"]
        for rule, name in RULES.items():
            lines.append(f"| {name} | {mean_sd(acc[rule])} | {np.mean([f[rule]['macs_ratio'] for f in at]):.4f} | "
                         f"{mean_sd([f[rule]['auc'] for f in at])} | "
                         + ("" if rule == "confidence"
                            else ", ".join(f"{d:+.3f}" for d in acc[rule] - acc["confidence"]))
                         + " |")
        lines.append("")
        for rule in ("agent", "logistic", "trees", "pooled", "two", "oracle"):
            gain, spread, clear = against(acc[rule], acc["confidence"])
            name = "learned re-run agent" if rule == "agent" else RULES[rule]
            lines.append(f"- {name} against the threshold cascade: mean {gain:+.4f}, larger seed-to-seed spread "
                         f"{spread:.4f}: {'a clear gain' if clear else 'not a clear gain'}.")
        mismatched = [f["seed"] for f in at if abs(f["confidence"]["accuracy"] - f["stored_cascade_accuracy"]) > 1e-9]
        lines += ["", "The threshold cascade recomputed here matches the figure each run stored in metrics.json"
                  + (" on every seed." if not mismatched else f", except on seeds {mismatched}."), ""]
    lines += ["## Per seed", "",
              "| budget | seed | rule | cheap rung MACs | dearer rung MACs | cheap rung test accuracy | "
              "validation accuracy | test accuracy | MACs ratio | error AUC |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for f in found:
        for rule in RULES:
            r = f[rule]
            lines.append(f"| {f['budget']:g} | {f['seed']} | {rule} | {r['cheap_macs']:.4f} | {r['wide_macs']:.4f} | "
                         f"{r['cheap_test_accuracy']:.4f} | {r['val_accuracy']:.4f} | {r['accuracy']:.4f} | "
                         f"{r['macs_ratio']:.4f} | {r['auc']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.detector", description=__doc__.splitlines()[0])
    p.add_argument("--budgets", default="0.08,0.05")
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--runs", default=RUNS, help="the ladder runs' folders, {budget} and {seed} replaced")
    p.add_argument("--report", default="results/ladder-detector.md")
    args = p.parse_args(argv)
    try:
        budgets = [float(b) for b in args.budgets.split(",")]
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        print("error: --budgets and --seeds take comma-separated numbers, e.g. --budgets 0.08,0.05 --seeds 0,1,2",
              file=sys.stderr)
        return 2
    folders = [(b, s, args.runs.format(budget=f"{b:g}", seed=s)) for b in budgets for s in seeds]
    missing = [out for _, _, out in folders
               if not all(os.path.isfile(os.path.join(out, name)) for name in ("ladder.json", "metrics.json"))]
    if missing:
        print(f"error: no finished ladder run in {missing[0]}; make it with python -m rtsearch.train --method ladder "
              f"(or python -m experiments.peers_study), or point --runs at your ladder runs", file=sys.stderr)
        return 2
    found = []
    for i, (b, s, out) in enumerate(folders, 1):
        print(f"[{i}/{len(folders)}] budget {b:g}, seed {s}: rungs' outputs and detectors ({out}) ...", flush=True)
        found.append(one_run(out))
    os.makedirs(os.path.dirname(args.report) or ".", exist_ok=True)
    with open(args.report, "w") as f:
        f.write(report(found, budgets, seeds, command_line("python -m experiments.detector", argv), args.runs))
    print(f"wrote {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
