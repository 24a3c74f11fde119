"""A learned re-run choice over a ladder of statically pruned networks (`python -m experiments.ladder_study`).

The re-run agent of experiments.rerun_study chose among widths of one weight-shared (width-robust)
network, whose narrow widths pay for sharing. Here every width is its own network: per seed, Torch-
Pruning's L1 pruner at each MACs budget of LADDER, fine-tuned as the Torch-Pruning L1 peer is (the same
command, so the peer's own runs are rungs of the ladder). Every input runs on a cheap rung; then either
the RLlib PPO agent (it observes the cheap pass's class probabilities and keeps that answer or re-runs the
input on one dearer rung, paying both; rewarded on the training split, calibrated onto the budget on
validation) or the label-free threshold cascade (one pair of rungs and a confidence threshold, chosen on
validation) decides per input. Both are measured once on the test split against every non-learned peer of
experiments.peers_study at the same budget, whose runs are made here when missing. Writes results/ladder.md.
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np

from experiments import peers_study as peers, robust
from experiments.peers_study import accuracies
from experiments.agents_study import (against, command_line, dense_confidence, execute_parallel, load, mean_sd,
                                     runs_table, spearman, study_arguments)

LADDER = (0.02, 0.03, 0.04, 0.05, 0.08, 0.1, 0.12, 0.15, 0.2, 0.25)
RUNG = "Torch-Pruning L1"           # the peers' kind every rung is a run of
AGENTS = {"ce": "learned re-run over the ladder, reward -CE", "error": "learned re-run over the ladder, reward -error"}
CASCADE = "threshold cascade over the ladder (not learned)"


def plan(root: str, budgets: list[float], seeds: list[int], iterations: int) -> list[dict]:
    """The ladder's rungs and the non-learned peers at `budgets`, as experiments.peers_study plans them."""
    kinds = [k for k in peers.NON_LEARNED if k in peers.PER_BUDGET]
    at_budgets = [r for r in peers.plan(root, budgets, seeds, iterations) if r["kind"] in kinds]
    rungs = [r for r in peers.plan(root, [b for b in LADDER if b not in budgets], seeds, iterations)
             if r["kind"] == RUNG]
    return at_budgets + rungs


def rung_outputs(run: dict, splits) -> dict:
    """One rung's MACs and params ratios, and per split its log-probabilities, right answers and confidence,
    from the run's deployed model (deployed.pt: channels removed, what a user would ship)."""
    from rtsearch.methods import ladder
    return {**ladder.rung_outputs(run["out"], run["metrics"]["macs_ratio"], splits),
            "params_ratio": run["metrics"]["params_ratio"], "out": run["out"]}


def decide(rungs: list[dict], budget: float, seed: int, iterations: int, lr: float, entropy: float,
           agent_seed: int = 0) -> dict:
    """The cascade and the agents (one per reward, PPO seeded with seed + agent_seed) on one seed's ladder at
    `budget`: their test figures."""
    from rtsearch.methods.ladder import best_cascade
    from experiments.rerun_study import learned_rerun
    macs = [r["macs_ratio"] for r in rungs]
    cascade = best_cascade(rungs, budget)
    cheap = macs.index(cascade["cheap_macs"])
    cascade["spearman_confidence"] = spearman(dense_confidence(seed), cascade.pop("test_macs"))
    cascade["params_ratio"] = rungs[cheap]["params_ratio"] + rungs[macs.index(cascade["wide_macs"])]["params_ratio"]
    found = {CASCADE: cascade}
    for reward, name in AGENTS.items():
        print(f"seed {seed} budget {budget:g}: training the re-run agent, reward {reward} (cheap rung MACs "
              f"{macs[cheap]:.4f}) ...", flush=True)
        agent = learned_rerun(rungs, cheap, budget, seed + agent_seed, iterations, False, lr, entropy, "train", reward)
        agent["spearman_confidence"] = spearman(dense_confidence(seed), agent.pop("test_macs"))
        agent["params_ratio"] = rungs[cheap]["params_ratio"] + sum(
            rung["params_ratio"] for rung, n in zip(rungs[cheap + 1:], agent["actions"][1:]) if n)
        print(f"  agent {agent['accuracy']:.4f} at MACs {agent['macs_ratio']:.4f}, cascade {cascade['accuracy']:.4f} "
              f"at {cascade['macs_ratio']:.4f}", flush=True)
        found[name] = agent
    return found


def measured(runs: list[dict], budgets: list[float], seeds: list[int], args) -> dict:
    """Per seed and budget the agents' and the cascade's figures, computed once into <runs>/ladder.json (or
    ladder-agent-seedN.json)."""
    path = os.path.join(args.runs, f"ladder-agent-seed{args.agent_seed}.json" if args.agent_seed else "ladder.json")
    settings = {"ladder": list(LADDER), "iterations": args.agent_iterations, "lr": args.lr, "entropy": args.entropy,
                "rewards": list(AGENTS), **({"agent_seed": args.agent_seed} if args.agent_seed else {})}
    found = {}
    if os.path.isfile(path):
        with open(path) as f:
            found = json.load(f)
        if found.get("settings") != settings:
            raise SystemExit(f"{path} was computed with other settings ({found.get('settings')}); move it away to "
                             "compute it again")
    figures = dict(found.get("figures", {}))
    wanted = [(seed, b) for seed in seeds for b in budgets if f"{seed}/{b:g}" not in figures]
    if wanted:
        import ray

        from rtsearch import data
        from rtsearch.storage import write_json
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        try:
            for seed in sorted({s for s, _ in wanted}):
                splits = data.load("mnist5k", seed)
                rungs = sorted((rung_outputs(r, splits) for r in runs if r["kind"] == RUNG and r["seed"] == seed),
                               key=lambda r: r["macs_ratio"])
                for b in (b for s, b in wanted if s == seed):
                    figures[f"{seed}/{b:g}"] = decide(rungs, b, seed, args.agent_iterations, args.lr, args.entropy,
                                                      args.agent_seed)
                    write_json(path, {"settings": settings, "figures": figures})
        finally:
            ray.shutdown()
    return figures


def validation(group: list[dict]) -> str:
    """The mean validation accuracy of a method the study chose on validation (blank for the peers' runs)."""
    return f"{np.mean([m['val_accuracy'] for m in group]):.4f}" if all("val_accuracy" in m for m in group) else ""


def verdict(at: dict[str, list[dict]], method: str, against_kinds: list[str], budget: float) -> str:
    """`method` against the best of `against_kinds` at one budget: per-seed gains and the call."""
    best = max(against_kinds, key=lambda k: accuracies(at[k]).mean())
    ours, peer = accuracies(at[method]), accuracies(at[best])
    gain, spread, clear = against(ours, peer)
    macs = [np.mean([m["macs_ratio"] for m in at[k]]) for k in (method, best)]
    return (f"- budget {budget:g}, {method} against {best}: per seed {', '.join(f'{d:+.3f}' for d in ours - peer)} "
            f"(mean {gain:+.4f}, at MACs ratio {macs[0]:.4f} against {macs[1]:.4f}), larger seed-to-seed spread "
            f"{spread:.4f}: " + ("beats it by a clear margin." if clear else "not a clear win."))


def rows_at(runs: list[dict], figures: dict, budget: float, seeds: list[int], robust_networks: dict) -> dict:
    """Per row of the report, each seed's figures at `budget` (in seed order)."""
    at = {k: [r["metrics"] for s in seeds for r in runs if (r["kind"], r["budget"], r["seed"]) == (k, budget, s)]
          for k in peers.NON_LEARNED if k in peers.PER_BUDGET}
    at[peers.ROBUST_UNIFORM] = [{**robust_networks[s]["budgets"][f"{budget:g}"]["uniform"], "params_ratio": 1.0}
                                for s in seeds]
    for method in (*AGENTS.values(), CASCADE):
        at[method] = [figures[f"{s}/{budget:g}"][method] for s in seeds]
    return at


def report(runs: list[dict], figures: dict, budgets: list[float], seeds: list[int], robust_networks: dict,
           command: str, path: str) -> None:
    rung_macs = {s: [f"{r['metrics']['macs_ratio']:.3f}" for r in sorted(
        (r for r in runs if r["kind"] == RUNG and r["seed"] == s), key=lambda r: r["metrics"]["macs_ratio"])]
        for s in seeds}
    lines = ["# A learned re-run choice over a ladder of statically pruned networks (mnist5k / small)", "",
             f"Produced by `{command}` on the 2-core development machine (CPU only); every figure is read back from "
             "the "
             "runs listed below and from the agents' and cascades' figures the study wrote beside them "
             "(ladder.json, or ladder-agent-seedN.json with --agent-seed N, in the runs folder). Test split: 1,000 "
             f"images; mean ± sample standard deviation over seeds {', '.join(map(str, seeds))}; validation split "
             "500 images. Rungs: Torch-Pruning L1 at MACs budgets "
             f"{', '.join(f'{b:g}' for b in LADDER)}, each its own network fine-tuned as the Torch-Pruning L1 peer "
             "(measured MACs ratios, seed 0: " + ", ".join(rung_macs[seeds[0]]) + "). Every input runs on a cheap "
             "rung; the agent (RLlib PPO, rewarded on the training split) or the cascade (validation-chosen threshold "
             "on the cheap pass's confidence) re-runs it on one dearer rung, paying both. The agent is trained twice: "
             "charged the answer's cross-entropy (-CE) or 1 for a wrong answer (-error), minus beta times the re-run's "
             "MACs ratio either way. Params ratio: the rungs a method uses, summed (every rung is stored).", "",
             "| budget | method | test accuracy | per seed | MACs ratio | per-input MACs CV | "
             "Spearman(dense confidence, MACs) | params ratio | validation accuracy |",
             "|---|---|---|---|---|---|---|---|---|"]
    verdicts = []
    for b in budgets:
        at = rows_at(runs, figures, b, seeds, robust_networks)
        for kind, group in at.items():
            rho = [m["spearman_confidence"] for m in group if "spearman_confidence" in m]
            cv = [m["macs_ratio_cv"] for m in group if "macs_ratio_cv" in m]
            lines.append(f"| {b:g} | {kind} | {mean_sd(accuracies(group))} | "
                         f"{' / '.join(f'{a:.3f}' for a in accuracies(group))} | "
                         f"{np.mean([m['macs_ratio'] for m in group]):.4f} | {f'{np.mean(cv):.2f}' if cv else ''} | "
                         f"{f'{np.mean(rho):+.2f}' if rho else ''} | "
                         f"{np.mean([m['params_ratio'] for m in group]):.3f} | "
                         f"{validation(group)} |")
        better = max(AGENTS.values(), key=lambda k: np.mean([m["val_accuracy"] for m in at[k]]))
        lines.append(f"| {b:g} | the reward with the better validation accuracy: {better.rsplit(', ', 1)[1]} "
                     "| | | | | | | |")
        non_learned = [k for k in at if k not in (*AGENTS.values(), CASCADE)]
        verdicts += [verdict(at, method, non_learned, b) for method in (*AGENTS.values(), CASCADE)]
        verdicts += [verdict(at, agent, [CASCADE], b) for agent in AGENTS.values()]
    lines += ["", "Verdicts (computed; a clear margin is a mean per-seed gain larger than the larger seed-to-seed "
              "spread; the first three lines of each budget compare with the best non-learned peer of "
              "results/agents.md, the last two the agents with the cascade):", *verdicts, "", "## Runs", "",
              *runs_table(runs)]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def main(argv=None) -> int:
    prog = "python -m experiments.ladder_study"   # its runs folder is the peers study's, whose runs it reuses
    parser = study_arguments(prog, __doc__.splitlines()[0], "runs/any-budget", "0.08,0.05", "results/ladder.md")
    parser.add_argument("--agent-iterations", type=int, default=40, help="PPO updates per agent")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--entropy", type=float, default=0.01)
    parser.add_argument("--agent-seed", type=int, default=0,
                        help="added to each data seed to seed the agents' PPO (another draw of the same study)")
    args = parser.parse_args(argv)
    budgets, seeds = [float(b) for b in args.budgets.split(",")], [int(s) for s in args.seeds.split(",")]
    runs = plan(args.runs, budgets, seeds, args.iterations)
    execute_parallel(runs, args.jobs)
    for run in runs:
        run["metrics"] = load(run)
    robust_range = tuple(float(x) for x in peers.RANGE.split(":"))
    robust_networks = {s: robust.width_robust(s, robust_range, budgets, f"{args.runs}/{peers.ROBUST_FOLDER}-s{s}",
                                              args.iterations) for s in seeds}
    figures = measured(runs, budgets, seeds, args)
    report(runs, figures, budgets, seeds, robust_networks, command_line(prog, argv), args.report)
    print(f"wrote {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
