"""Can an RL agent learn, from a cheap pass's output, which width to re-run an input at?
(`python -m rtsearch.studies.rerun`)

The label-free cascade (rtsearch.studies.cascade) runs every input at a cheap uniform width and re-runs
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
(networks fine-tuned so by rtsearch.studies.robust.width_robust). With --reward error a wrong answer is
charged 1 instead of its cross-entropy (and a right one 0). Measured once on the test split against the
cascade and the uniform ratio. Writes results/rerun.md.
"""
from __future__ import annotations

import argparse
import sys
import time

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector.utils import batch_space

from rtsearch.studies.agents import command_line, dense_confidence, mean_sd, spearman
from rtsearch.studies.cascade import FOLDER, best_cascade, level_outputs, robust_figures
from rtsearch.studies.robust import width_robust

ENVS = 512                 # inputs per env step (one step is one decision per input)
BATCHES_PER_ITERATION = 8  # PPO samples 8 x 512 decisions per update
SHIFT_BOUND = 100.0        # the calibration shift's range, in logits per unit of MACs ratio
CHARGED = {"ce": "the answer's cross-entropy", "error": "1 for a wrong answer"}
REWARDED_ON = {"train": "the training split, which the network was fine-tuned on",
               "agents": "the agents' share of the training split, which the network was not fine-tuned on"}


def features(log_probs: np.ndarray) -> np.ndarray:
    """The agent's observation of one cheap pass: sorted class probabilities, normalised entropy, the
    predicted class one-hot."""
    probs = np.exp(log_probs)
    k = probs.shape[1]
    entropy = -(probs * log_probs).sum(1, keepdims=True) / np.log(k)
    return np.concatenate([-np.sort(-probs, 1), entropy, np.eye(k)[probs.argmax(1)]], 1).astype(np.float32)


def choices(levels: list[dict], cheap: int, split: str, combine: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per input and action (0 keep, a re-run at level cheap + a): CE of the answer and whether it is right.
    With `combine`, a re-run answers with the sum of both passes' log-probabilities."""
    y = levels[cheap][split]["labels"]
    base = levels[cheap][split]["log_probs"]
    ce, right = [], []
    for level in [None] + levels[cheap + 1:]:
        lp = base if level is None else (level[split]["log_probs"] + base if combine else level[split]["log_probs"])
        lp = lp - np.logaddexp.reduce(lp, 1, keepdims=True)
        ce.append(-lp[np.arange(len(y)), y])
        right.append(lp.argmax(1) == y)
    return np.stack(ce, 1).astype(np.float32), np.stack(right, 1)


def charge(ce: np.ndarray, right: np.ndarray, reward: str) -> np.ndarray:
    """What each (input, action) is charged besides its MACs: the answer's cross-entropy ("ce"), or 1 if the
    answer is wrong and 0 if it is right ("error", what accuracy counts)."""
    return ce if reward == "ce" else (~right).astype(np.float32)


class RerunVectorEnv(gym.vector.VectorEnv):
    """B inputs decide at once; each episode is one step (keep, or re-run at a wider level). NEXT_STEP
    autoreset, as the runtime env: the step after a terminal one loads new inputs with reward 0."""

    metadata = {"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP}

    def __init__(self, config: dict | None = None, num_envs: int | None = None, **kwargs):
        config = {**dict(config or {}), **kwargs}
        self.num_envs = int(num_envs or config.get("num_envs", ENVS))
        self.obs, self.ce, self.extra = config["obs"], config["ce"], np.asarray(config["extra"], np.float32)
        self.beta = float(config["beta"])
        self._rng = np.random.default_rng(int(config.get("seed", 0)))
        self.single_observation_space = spaces.Box(-1.0, 1.0, (self.obs.shape[1],), np.float32)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.single_action_space = spaces.Discrete(self.ce.shape[1])
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._needs_reset = True

    def set_world(self, payload: dict) -> None:
        """rtsearch.rl.agents.push_world: a new beta, from the next step on."""
        self.beta = float(payload["beta"])

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self._rng = np.random.default_rng(seed if np.isscalar(seed) else list(seed)[0])
        return self._draw(), {}

    def _draw(self) -> np.ndarray:
        self._idx = self._rng.integers(0, len(self.obs), self.num_envs)
        self._needs_reset = False
        return self.obs[self._idx]

    def step(self, actions):
        B = self.num_envs
        if self._needs_reset:
            return self._draw(), np.zeros(B), np.zeros(B, bool), np.zeros(B, bool), {}
        a = np.asarray(actions, dtype=np.int64).reshape(B)
        reward = -self.ce[self._idx, a] - self.beta * self.extra[a]
        self._needs_reset = True
        return self.obs[self._idx], reward.astype(np.float64), np.ones(B, bool), np.zeros(B, bool), {}


def action_logits(module, obs: np.ndarray) -> np.ndarray:
    import torch
    from ray.rllib.core.columns import Columns
    with torch.no_grad():
        return module.forward_inference({Columns.OBS: torch.as_tensor(obs)})[Columns.ACTION_DIST_INPUTS].numpy()


def greedy(logits: np.ndarray, extra: np.ndarray, shift: float) -> np.ndarray:
    return (logits - shift * extra).argmax(1)


def calibration_shift(logits: np.ndarray, extra: np.ndarray, spare: float) -> float:
    """The smallest shift in [-SHIFT_BOUND, SHIFT_BOUND] whose greedy actions spend at most `spare` re-run
    MACs on average: the bisection that calibrates a run's runtime shift (net.baseline.budget_shift)."""
    from rtsearch.net.baseline import budget_shift
    return budget_shift(lambda shift: extra[greedy(logits, extra, shift)].mean(), spare, SHIFT_BOUND, steps=50)


def learned_rerun(levels: list[dict], cheap: int, budget: float, seed: int, iterations: int, combine: bool,
                  lr: float, entropy: float, reward_split: str = "train", reward: str = "ce") -> dict:
    """Train the agent with RLlib PPO on `reward_split`, calibrate on validation, measure on test. `reward`: "ce"
    charges the answer's cross-entropy, "error" 1 for a wrong answer and 0 for a right one (what accuracy counts)."""
    from ray.rllib.algorithms.ppo import PPOConfig

    from rtsearch.rl.agents import agent_model_config, push_world

    extra = np.array([0.0] + [lv["macs_ratio"] for lv in levels[cheap + 1:]], np.float32)
    spare = budget - levels[cheap]["macs_ratio"]
    obs = {s: features(levels[cheap][s]["log_probs"]) for s in (reward_split, "val", "test")}
    ce, right = zip(*(choices(levels, cheap, s, combine) for s in (reward_split, "val", "test")))
    charged = charge(ce[0], right[0], reward)
    beta = 1.0 / max(spare, 1e-3)      # a first scale: one CE unit per budget's worth of spare MACs
    config = (PPOConfig()
              .environment(RerunVectorEnv, env_config={"obs": obs[reward_split], "ce": charged, "extra": extra, "beta": beta,
                                                       "seed": seed})
              .env_runners(num_env_runners=0, num_envs_per_env_runner=ENVS, gym_env_vectorize_mode="vector_entry_point",
                           rollout_fragment_length=BATCHES_PER_ITERATION, batch_mode="truncate_episodes")
              .training(lr=lr, gamma=1.0, lambda_=1.0, train_batch_size_per_learner=ENVS * BATCHES_PER_ITERATION,
                        minibatch_size=ENVS * 2, num_epochs=4, entropy_coeff=entropy)
              .rl_module(model_config=agent_model_config(False, 1))
              .debugging(seed=seed))
    algo = config.build_algo()
    started = time.time()
    try:
        for _ in range(iterations):
            algo.train()
            rerun = extra[greedy(action_logits(algo.get_module(), obs["val"]), extra, 0.0)].mean()
            beta = beta * float(np.exp(np.clip((rerun - spare) / max(spare, 1e-3), -1, 1)))
            push_world(algo, {"beta": beta})
        val_logits = action_logits(algo.get_module(), obs["val"])
        shift = calibration_shift(val_logits, extra, spare)
        a_val = greedy(val_logits, extra, shift)
        a_test = greedy(action_logits(algo.get_module(), obs["test"]), extra, shift)
    finally:
        algo.stop()
    macs = levels[cheap]["macs_ratio"] + extra[a_test]
    rows = np.arange(len(a_test))
    return {"cheap_macs": levels[cheap]["macs_ratio"], "beta": beta, "shift": shift,
            "seconds": time.time() - started, "val_accuracy": float(right[1][np.arange(len(a_val)), a_val].mean()),
            "accuracy": float(right[2][rows, a_test].mean()), "macs_ratio": float(macs.mean()),
            "macs_ratio_cv": float(macs.std() / macs.mean()), "test_macs": macs,
            "actions": np.bincount(a_test, minlength=len(extra)).tolist(),
            "reward_split_accuracy_by_action": right[0].mean(0).round(4).tolist()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m rtsearch.studies.rerun", description=__doc__.splitlines()[0])
    p.add_argument("--budgets", default="0.15,0.08,0.05")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--iterations", type=int, default=40)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--entropy", type=float, default=0.01)
    p.add_argument("--combine", action="store_true", help="a re-run answers with both passes' log-probabilities")
    p.add_argument("--finer", default="", help="MACs ratios of further cheap widths, e.g. 0.04,0.045 (both rules get them)")
    p.add_argument("--networks", default=FOLDER, help="the width-robust networks' folders, {seed} replaced")
    p.add_argument("--agent-share", type=float, default=0.0,
                   help="reward the agent on this share of the training split, left out of the network's "
                        "fine-tuning (the networks are fine-tuned so first, when --networks has none)")
    p.add_argument("--teacher", choices=("widest", "dense"), default="widest",
                   help="what the networks' narrow paths are distilled from: their own widest path (the sandwich "
                        "rule) or the dense model (used when --networks has no network yet)")
    p.add_argument("--reward", choices=("ce", "error"), default="ce",
                   help="what a decision is charged besides its MACs: the answer's cross-entropy, or 1 if it is wrong")
    p.add_argument("--report", default="results/rerun.md")
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
                print(f"seed {seed} budget {b:g}: training the re-run agent (cheap MACs {macs[cheap]:.4f}) ...", flush=True)
                agent = learned_rerun(levels, cheap, b, seed, args.iterations, args.combine, args.lr, args.entropy,
                                      reward_split, args.reward)
                agent["spearman_confidence"] = spearman(dense_confidence(seed), agent.pop("test_macs"))
                print(f"  agent {agent['accuracy']:.4f} at {agent['macs_ratio']:.4f} (cascade {cascade['accuracy']:.4f} "
                      f"at {cascade['macs_ratio']:.4f}) actions {agent['actions']}", flush=True)
                rows.append({"seed": seed, "budget": b, "agent": agent, "cascade": cascade, "levels": macs,
                             "uniform": measured[f"{b:g}"]["uniform"]})
    finally:
        ray.shutdown()
    command = command_line("python -m rtsearch.studies.rerun", argv)
    write_report(rows, args.report, command, args.networks, reward_split, args.reward)
    return 0


def write_report(rows: list[dict], path: str, command: str, networks: str, reward_split: str, reward: str = "ce") -> None:
    lines = ["# A learned re-run choice on the width-robust network (RLlib PPO, one decision per input)", "",
             f"Produced by `{command}` on the 2-core development machine (CPU only). Networks: `{networks}`. "
             f"The agent is rewarded on {REWARDED_ON[reward_split]}, charged {CHARGED[reward]} besides its MACs. "
             "Validation split 500 images (cheap width, calibration shift), test split 1,000 images. Levels (MACs "
             "ratios): " + "; ".join(f"seed {r['seed']}: " + ", ".join(f"{m:.4f}" for m in r["levels"])
                                     for r in rows if r["budget"] == rows[0]["budget"]) + ".", "",
             "| seed | budget | uniform: test accuracy (MACs) | cascade: test accuracy (MACs) | agent: test accuracy (MACs) | agent - cascade | "
             "agent: MACs CV | agent: Spearman(dense confidence, MACs) | agent: test actions (keep, wider levels) | "
             "reward-split accuracy per action | seconds |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        a, c = r["agent"], r["cascade"]
        u = r["uniform"]
        lines.append(f"| {r['seed']} | {r['budget']:g} | {u['accuracy']:.3f} ({u['macs_ratio']:.4f}) | {c['accuracy']:.3f} ({c['macs_ratio']:.4f}) | "
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
