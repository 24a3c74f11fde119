"""Can an RL agent learn, from a cheap pass's output, which width to re-run an input at?
(`python -m experiments.rerun_study`)

The label-free cascade (experiments.cascade) runs every input at a cheap uniform width and re-runs
the least confident at one wider width, on the no-agent width-robust network. Here a PPO agent (RLlib)
makes that choice per input: it observes the cheap pass's class probabilities (sorted, their entropy,
and the predicted class) and either keeps the cheap answer or re-runs the input at one of the wider
oracle levels, paying both passes. One step per input, reward -CE(answer, y) - beta * (re-run MACs
ratio); beta follows the greedy validation MACs ratio (dual ascent), and the deployed policy is the
greedy action after one calibration shift (each action's logit minus shift x its MACs ratio), bisected
so the validation MACs ratio meets the budget, as a run's runtime shift is. The cheap width per seed and
budget is the one the threshold cascade picked on validation. The agent is rewarded on the training
split (the network was fine-tuned on it, so CE there is small at wide levels: the levels' accuracy on
it is in the report), or with --agent-share on a share of it that the network's fine-tuning left out
(networks fine-tuned so by experiments.robust.width_robust). With --reward error a wrong answer is
charged 1 instead of its cross-entropy (and a right one 0). Measured once on the test split against the
cascade and the uniform ratio. Writes results/archive/rerun.md.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from rtsearch.methods.ladder import best_cascade
from rtsearch.rl import rerun
from rtsearch.rl.rerun import action_logits, calibration_shift, charge, greedy, train_agent
from rtsearch.rl.rerun_features import features
from experiments.agents_study import command_line, dense_confidence, mean_sd, spearman
from experiments.cascade import FOLDER, level_outputs, robust_figures
from experiments.robust import width_robust

CHARGED = {"ce": "the answer's cross-entropy", "error": "1 for a wrong answer"}
REWARDED_ON = {"train": "the training split, which the network was fine-tuned on",
               "agents": "the agents' share of the training split, which the network was not fine-tuned on"}


def choices(outputs: list[dict], cheap: int, split: str, combine: bool) -> tuple[np.ndarray, np.ndarray]:
    """rtsearch.rl.rerun.choices; with `combine` a re-run answers with the sum of both passes' log-probabilities."""
    if combine:
        base = outputs[cheap][split]["log_probs"]
        outputs = outputs[:cheap + 1] + [{**level, split: {**level[split],
                                                           "log_probs": level[split]["log_probs"] + base}}
                                         for level in outputs[cheap + 1:]]
    return rerun.choices(outputs, cheap, split)


def learned_rerun(levels: list[dict], cheap: int, budget: float, seed: int, iterations: int, combine: bool,
                  lr: float, entropy: float, reward_split: str = "train", reward: str = "ce") -> dict:
    """Train the agent with RLlib PPO on `reward_split`, calibrate on validation, measure on test. `reward`: "ce"
    charges the answer's cross-entropy, "error" 1 for a wrong answer and 0 for a right one (what accuracy counts)."""
    extra = np.array([0.0] + [lv["macs_ratio"] for lv in levels[cheap + 1:]], np.float32)
    spare = budget - levels[cheap]["macs_ratio"]
    obs = {s: features(levels[cheap][s]["log_probs"]) for s in (reward_split, "val", "test")}
    ce, right = zip(*(choices(levels, cheap, s, combine) for s in (reward_split, "val", "test")))
    started = time.time()
    actor, beta = train_agent(obs[reward_split], charge(ce[0], right[0], reward), extra, spare, obs["val"], seed,
                              iterations, lr, entropy)
    val_logits = action_logits(actor, obs["val"])
    shift = calibration_shift(val_logits, extra, spare)
    a_val = greedy(val_logits, extra, shift)
    a_test = greedy(action_logits(actor, obs["test"]), extra, shift)
    macs = levels[cheap]["macs_ratio"] + extra[a_test]
    rows = np.arange(len(a_test))
    return {"cheap_macs": levels[cheap]["macs_ratio"], "beta": beta, "shift": shift,
            "seconds": time.time() - started, "val_accuracy": float(right[1][np.arange(len(a_val)), a_val].mean()),
            "accuracy": float(right[2][rows, a_test].mean()), "macs_ratio": float(macs.mean()),
            "macs_ratio_cv": float(macs.std() / macs.mean()), "test_macs": macs,
            "actions": np.bincount(a_test, minlength=len(extra)).tolist(),
            "reward_split_accuracy_by_action": right[0].mean(0).round(4).tolist()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.rerun_study", description=__doc__.splitlines()[0])
    p.add_argument("--budgets", default="0.15,0.08,0.05")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--iterations", type=int, default=40)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--entropy", type=float, default=0.01)
    p.add_argument("--combine", action="store_true", help="a re-run answers with both passes' log-probabilities")
    p.add_argument("--finer", default="",
                   help="MACs ratios of further cheap widths, e.g. 0.04,0.045 (both rules get them)")
    p.add_argument("--networks", default=FOLDER, help="the width-robust networks' folders, {seed} replaced")
    p.add_argument("--agent-share", type=float, default=0.0,
                   help="reward the agent on this share of the training split, left out of the network's "
                        "fine-tuning (the networks are fine-tuned so first, when --networks has none)")
    p.add_argument("--teacher", choices=("widest", "dense"), default="widest",
                   help="what the networks' narrow paths are distilled from: their own widest path (the sandwich "
                        "rule) or the dense model (used when --networks has no network yet)")
    p.add_argument("--reward", choices=("ce", "error"), default="ce",
                   help="what a decision is charged besides its MACs: the answer's cross-entropy, or 1 if it is wrong")
    p.add_argument("--report", default="results/archive/rerun.md")
    args = p.parse_args(argv)
    budgets = [float(x) for x in args.budgets.split(",")]
    import ray
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    reward_split = "agents" if args.agent_share > 0 else "train"
    rows = []
    try:
        for seed in (int(s) for s in args.seeds.split(",")):
            folder = args.networks.format(seed=seed)
            width_robust(seed, (0.05, 0.5), budgets, folder, agent_share=args.agent_share, teacher=args.teacher)
            print(f"seed {seed}: the levels of {folder} ...", flush=True)
            levels = level_outputs(folder, seed, (reward_split, "val", "test"),
                                   tuple(float(m) for m in args.finer.split(",") if m), args.agent_share)
            macs = [lv["macs_ratio"] for lv in levels]
            measured = robust_figures(folder)
            for b in budgets:
                cascade = best_cascade(levels, b)
                cheap = macs.index(cascade["cheap_macs"])
                cascade["spearman_confidence"] = spearman(dense_confidence(seed), cascade.pop("test_macs"))
                print(f"seed {seed} budget {b:g}: training the re-run agent (cheap MACs {macs[cheap]:.4f}) ...",
                      flush=True)
                agent = learned_rerun(levels, cheap, b, seed, args.iterations, args.combine, args.lr, args.entropy,
                                      reward_split, args.reward)
                agent["spearman_confidence"] = spearman(dense_confidence(seed), agent.pop("test_macs"))
                print(f"  agent {agent['accuracy']:.4f} at {agent['macs_ratio']:.4f} "
                      f"(cascade {cascade['accuracy']:.4f} "
                      f"at {cascade['macs_ratio']:.4f}) actions {agent['actions']}", flush=True)
                rows.append({"seed": seed, "budget": b, "agent": agent, "cascade": cascade, "levels": macs,
                             "uniform": measured[f"{b:g}"]["uniform"]})
    finally:
        ray.shutdown()
    command = command_line("python -m experiments.rerun_study", argv)
    write_report(rows, args.report, command, args.networks, reward_split, args.reward)
    return 0


def write_report(rows: list[dict], path: str, command: str, networks: str, reward_split: str,
                 reward: str = "ce") -> None:
    lines = ["# A learned re-run choice on the width-robust network (RLlib PPO, one decision per input)", "",
             f"Produced by `{command}` on the 2-core development machine (CPU only). Networks: `{networks}`. "
             f"The agent is rewarded on {REWARDED_ON[reward_split]}, charged {CHARGED[reward]} besides its MACs. "
             "Validation split 500 images (cheap width, calibration shift), test split 1,000 images. Levels (MACs "
             "ratios): " + "; ".join(f"seed {r['seed']}: " + ", ".join(f"{m:.4f}" for m in r["levels"])
                                     for r in rows if r["budget"] == rows[0]["budget"]) + ".", "",
             "| seed | budget | uniform: test accuracy (MACs) | cascade: test accuracy (MACs) | "
             "agent: test accuracy (MACs) | agent - cascade | "
             "agent: MACs CV | agent: Spearman(dense confidence, MACs) | agent: test actions (keep, wider levels) | "
             "reward-split accuracy per action | seconds |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        a, c = r["agent"], r["cascade"]
        u = r["uniform"]
        lines.append(f"| {r['seed']} | {r['budget']:g} | {u['accuracy']:.3f} ({u['macs_ratio']:.4f}) | "
                     f"{c['accuracy']:.3f} ({c['macs_ratio']:.4f}) | "
                     f"{a['accuracy']:.3f} ({a['macs_ratio']:.4f}) | {a['accuracy'] - c['accuracy']:+.3f} | "
                     f"{a['macs_ratio_cv']:.2f} | {a['spearman_confidence']:+.2f} | {a['actions']} | "
                     f"{a['reward_split_accuracy_by_action']} | {a['seconds']:.0f} |")
    budgets = sorted({r["budget"] for r in rows}, reverse=True)
    def mean(b, key):
        return mean_sd([r[key]["accuracy"] for r in rows if r["budget"] == b])
    lines += ["", "Mean ± sd over seeds, test accuracy, agent / cascade / uniform: " + "; ".join(
        f"{b:g}: {mean(b, 'agent')} / {mean(b, 'cascade')} / {mean(b, 'uniform')}" for b in budgets) + "."]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
