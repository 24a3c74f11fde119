"""The training iteration (docs/method.md §3) with both agents:

1. one RLlib update of the runtime agent (network frozen, static keep sets from the static agent);
2. one RLlib update of the static agent;
3. supervised fine-tuning of the network under both agents' deterministic actions;
4. budget calibration, evaluation on the validation split, dual ascent on the MACs multiplier beta_f.

Dual ascent uses the validation MACs ratio of the agent's own deterministic policy, the figure the
budget is judged on: exploring rollouts spend more than their mean action (MACs are convex in the
kept fractions), so steering by them would hold the deployed policy below its budget.

Calibration: dual ascent alone lets the deployed policy drift a few points over the budget
between updates (docs/why.md). The deployed runtime policy is therefore
the agent's ratios plus one shift, shared by all layers and inputs, found by bisection so that the
validation MACs ratio meets the budget (`baseline.budget_shift`). The agent decides the allocation
across layers and inputs; the shift sets its level. Fine-tuning uses the previous iteration's shift;
`calibrate=False` turns it off. The bisection starts from the previous shift and walks the network
about 10 times, so it runs on the first `calibration_images` validation images (a random sample: the
split is shuffled): their mean MACs ratio is within a few 1e-4 of the whole split's, and the
iteration's evaluation still uses the whole split.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import replace

import numpy as np
import ray
import torch

from rtsearch.config import RunConfig
from rtsearch.data import split_off
from rtsearch.logs import quiet_libraries
from rtsearch.net import checkpoint
from rtsearch.net.baseline import agent_start, budget_shift
from rtsearch.net.cost import CostModel, static_kept_for
from rtsearch.net.metrics import feasible, score
from rtsearch.net.sandwich import fit_sandwich, recalibrate_bn
from rtsearch.net.supervised import evaluate, fit, fixed_policy
from rtsearch.rl import agents, budgets, policies
from rtsearch.rl.observations import layer_descriptors
from rtsearch.rl.record import RunRecord, finish
from rtsearch.rl.ray_session import ensure_ray

PHASES = ("runtime", "static", "finetune", "eval")
RECALIBRATION_BATCHES = 4   # a range run's BatchNorm statistics per budget: from 4 x 256 training images


class Agents:
    """The two RLlib algorithms of one run and what they share with their envs (the 'world')."""

    def __init__(self, cfg: RunConfig, net, cost: CostModel):
        self.cfg, self.net, self.cost = cfg, net, cost
        self.descriptors = layer_descriptors(net, cost)
        self.beta_f = cfg.beta_f
        self.runtime_shift = 0.0        # added to the agent's runtime ratios (see calibrate)
        self.static_shift = 0.0         # a static-only run: added to the static agent's ratios (onto_budget)
        # a range run (rtsearch.rl.budgets): beta_f and the shift per evaluation budget
        self.eval_budgets = budgets.evaluation_budgets(*cfg.budget_range) if cfg.budget_range else [cfg.budget]
        self.betas, self.shifts = [cfg.beta_f] * len(self.eval_budgets), [0.0] * len(self.eval_budgets)
        self.bn_stats = None    # a range run: BatchNorm statistics per evaluation budget (rl/budgets.py)
        start_budget = math.sqrt(cfg.budget_range[0] * cfg.budget_range[1]) if cfg.budget_range else cfg.budget
        static_start, runtime_start = agent_start(cost, start_budget, cfg.param_budget, cfg.pruning)
        if not cfg.warm_start:
            static_start, runtime_start = 0.0, 0.0
        self.start = (static_start, runtime_start)
        self.static_ratios = np.full(net.num_layers, static_start, dtype=np.float32)
        self.device = next(net.parameters()).device     # the run's device (rtsearch.device decided it)
        # In-process envs (no remote runners) compute on the run's device; remote env runners on CPUs.
        env_device = str(self.device) if cfg.num_env_runners == 0 else "cpu"
        env_config = {"world": self.world(), "dataset": cfg.dataset, "seed": cfg.seed, "data_dir": cfg.data_dir,
                      "device": env_device, "agent_share": cfg.agent_share, "holdout_share": cfg.holdout_share,
                      "budget": cfg.budget, "p_max": cfg.p_max, "param_budget": cfg.param_budget,
                      "beta_p": cfg.beta_p, "beta_f": cfg.beta_f,
                      "static_macs_budget": not cfg.pruning.runtime,
                      "cost_predictors": cfg.predictors_kept, "budget_range": cfg.budget_range}
        gpu = self.device.type == "cuda"
        self.runtime = agents.runtime_algo_config(cfg, env_config, gpu=gpu).build_algo() if self.uses_runtime else None
        self.static = agents.static_algo_config(cfg, env_config, gpu=gpu).build_algo() if self.uses_static else None
        # Both agents start at the uniform solution and learn to improve on it.
        if self.runtime is not None:
            agents.initialize_policy(self.runtime, runtime_start, cfg.p_max)
        if self.static is not None:
            agents.initialize_policy(self.static, static_start, cfg.p_max)

    @property
    def uses_runtime(self) -> bool:
        return self.cfg.pruning.runtime

    @property
    def uses_static(self) -> bool:
        return self.cfg.pruning.static

    def world(self, runtime_module=None) -> dict:
        # on the CPU: the payload travels to env runners on CPU-only nodes
        return {"model": self.net.config(), "state_dict": {k: v.detach().to("cpu", copy=True)
                                                           for k, v in self.net.state_dict().items()},
                "static_ratios": [float(r) for r in self.static_ratios], "beta_f": float(self.beta_f),
                "runtime_module": runtime_module,
                **({"beta_table": {"budgets": self.eval_budgets, "betas": self.betas}, "bn_stats": self.bn_stats}
                   if self.cfg.budget_range else {})}

    def runtime_policy(self, shift: float | None = None, budget: float | None = None):
        """The deployed runtime policy at `budget` (default the run's): the agent's greedy ratios plus
        the calibration shift (a range run's, interpolated to that budget)."""
        if not self.uses_runtime:
            return fixed_policy(torch.zeros(self.net.num_layers))
        budget = self.cfg.budget if budget is None else budget
        agent = policies.runtime_policy(self.runtime.get_module(), self.net, self.cost, self.descriptors,
                                        budget, self.cfg.p_max)
        if shift is None:
            shift = budgets.at(budget, self.eval_budgets, self.shifts) if self.cfg.budget_range else self.runtime_shift
        if shift == 0.0:
            return agent
        return lambda walk: (agent(walk) + shift).clamp(0.0, self.cfg.p_max)

    def use_budget(self, k: int) -> None:
        """A range run: load evaluation budget k's BatchNorm statistics into the network."""
        if self.bn_stats:
            budgets.load_bn_state(self.net, self.bn_stats[k])

    def calibrate(self, x, y, train_x=None) -> list[float]:
        """Set the shift that puts the validation MACs ratio on each evaluation budget; returns the
        agent's own (unshifted) MACs ratio at each, the figures dual ascent steers by; the search
        starts from each budget's previous shift. A range run first recomputes each budget's
        BatchNorm statistics on `train_x` under its policy (again once its shift has moved; why:
        docs/why.md); the network is left with those of the top budget."""
        ratios = torch.as_tensor(self.static_ratios)
        if self.cfg.calibration_images:
            x, y = x[:self.cfg.calibration_images], y[:self.cfg.calibration_images]
        if self.cfg.budget_range and train_x is not None:
            self.bn_stats = self.bn_stats or [None] * len(self.eval_budgets)
        own = []
        for k, budget in enumerate(self.eval_budgets):
            def macs_at(shift: float) -> float:
                return evaluate(self.net, self.cost, x, y, ratios, self.runtime_policy(shift, budget))["macs_ratio"]

            def recompute_statistics() -> None:
                if self.cfg.budget_range and train_x is not None:
                    recalibrate_bn(self.net, train_x, ratios, self.runtime_policy(budget=budget), seed=self.cfg.seed,
                                   max_batches=RECALIBRATION_BATCHES)
                    self.bn_stats[k] = budgets.bn_state(self.net)

            recompute_statistics()
            own.append(macs_at(0.0))
            if self.cfg.calibrate:
                self.shifts[k] = budget_shift(macs_at, budget, self.cfg.p_max, near=self.shifts[k])
                recompute_statistics()
        self.runtime_shift = self.shifts[-1]        # at the run's budget (a range's top)
        return own

    def runner_nodes(self) -> list[str]:
        """Ray node ids of both agents' remote env runners (where rollouts ran this iteration)."""
        nodes = set()
        for algo in (self.runtime, self.static):
            if algo is not None:
                nodes |= agents.env_runner_nodes(algo)
        return sorted(nodes)

    def train_runtime(self) -> dict:
        if not self.uses_runtime:
            return {}
        agents.push_world(self.runtime, self.world())
        result = self.runtime.train()
        stats = agents.pop_env_stats(self.runtime)
        return {"runtime_reward": float(stats.get("return", np.nan)), "rollout_macs_ratio": stats.get("macs_ratio"),
                "beta_f": self.beta_f, "env_steps": _env_steps(result)}

    def dual_ascent(self, macs_ratios: list[float]) -> None:
        """The budget binds the mean MACs ratio over inputs, not each input: a Lagrange multiplier
        (one per evaluation budget in a range run)."""
        self.betas = [max(0.0, beta + self.cfg.eta_f * (macs - budget))
                      for beta, macs, budget in zip(self.betas, macs_ratios, self.eval_budgets)]
        self.beta_f = self.betas[-1]

    def train_static(self) -> dict:
        if not self.uses_static:
            return {}
        module = self.runtime.get_module() if self.uses_runtime else None
        agents.push_world(self.static, self.world(module))
        self.static.train()
        stats = agents.pop_env_stats(self.static)
        self.static_ratios = policies.static_ratios(self.static.get_module(), self.net, self.cost, self.descriptors,
                                                  self.cfg.param_budget, self.cfg.p_max)
        if not self.cfg.pruning.runtime and self.cfg.calibrate:
            self.static_ratios = self.onto_budget(self.static_ratios)
            return {"static_reward": float(stats.get("return", np.nan)), "static_shift": self.static_shift}
        return {"static_reward": float(stats.get("return", np.nan))}

    def onto_budget(self, ratios: np.ndarray) -> np.ndarray:
        """A static-only run has nothing at run time to meet the MACs budget, and its agent's ratios
        miss it (docs/why.md): one
        shift on every layer's ratio, as the calibration shifts the runtime agent's, puts the MACs
        ratio on the budget and keeps the params ratio within the parameter budget. Static MACs do
        not depend on the input, so the cost model counts them without data."""
        p_max = self.cfg.p_max

        def kept(shift: float) -> torch.Tensor:
            return static_kept_for(self.cost.widths, np.clip(ratios + shift, 0.0, p_max))

        def macs_at(shift: float) -> float:
            counts = kept(shift)
            return float(self.cost.macs_ratio(counts[None], counts)[0])

        shift = budget_shift(macs_at, self.cfg.budget, p_max, near=self.static_shift)
        if self.cfg.param_budget < 1.0:
            shift = max(shift, budget_shift(lambda s: self.cost.params_ratio(kept(s)), self.cfg.param_budget, p_max))
        self.static_shift = shift
        return np.clip(ratios + shift, 0.0, p_max).astype(np.float32)

    def save(self, folder: str) -> None:
        for name, algo in (("runtime", self.runtime), ("static", self.static)):
            if algo is not None:
                algo.save_to_path(os.path.abspath(os.path.join(folder, name)))

    def restore(self, folder: str) -> None:
        for name, algo in (("runtime", self.runtime), ("static", self.static)):
            if algo is not None:
                agents.restore(algo, os.path.abspath(os.path.join(folder, name)))

    def resume(self, state: dict, folder: str) -> None:
        """Continue from a checkpoint: the network, static ratios, beta_f, calibration shift, and both
        agents as saved in `folder` with that checkpoint."""
        self.net.load_state_dict(state["state_dict"])
        self.static_ratios = np.asarray(state["static_ratios"], dtype=np.float32)
        self.beta_f = state["run_state"]["beta_f"]
        self.runtime_shift = state["run_state"].get("runtime_shift", 0.0)
        self.betas = state["run_state"].get("betas", [self.beta_f])
        self.shifts = state["run_state"].get("shifts", [self.runtime_shift])
        self.bn_stats = state["run_state"].get("bn_stats")
        self.restore(folder)

    def stop(self) -> None:
        for algo in (self.runtime, self.static):
            if algo is not None:
                algo.stop()


def _env_steps(result: dict) -> int:
    runners = result.get("env_runners", {})
    return int(runners.get("num_env_steps_sampled", 0) or 0)


def mixed(policy_at, budget_range, seed: int):
    """A Walk policy that follows `policy_at(budget)` for a budget drawn afresh (log-uniformly from the
    range) for every walk, i.e. every batch. Fine-tuning at a few fixed budgets only left the network
    brittle in between (docs/why.md)."""
    rng = np.random.default_rng(seed)
    memory = {"walk": None, "policy": None}

    def policy(walk):
        if memory["walk"] is not walk or walk.t == 0:
            memory.update(walk=walk, policy=policy_at(budgets.draw(*budget_range, rng)))
        return memory["policy"](walk)

    return policy


def evaluate_at_each_budget(crew: Agents, net, cost, split, ratios) -> list[dict]:
    """`evaluate` under the policy at each evaluation budget (each with its BatchNorm statistics);
    the network is left with the last (top) budget's."""
    out = []
    for k, b in enumerate(crew.eval_budgets):
        crew.use_budget(k)
        out.append(evaluate(net, cost, *split, ratios, crew.runtime_policy(budget=b)))
    return out


def curve_of(evaluations: list[dict], budgets_: list[float], params_ratio: float, param_budget: float) -> dict:
    """A range run's figures at each evaluation budget; its score is their mean, feasible if all are."""
    points = [{"budget": b, "accuracy": e["accuracy"], "macs_ratio": e["macs_ratio"],
               "score": score(e["accuracy"], e["macs_ratio"], params_ratio, b, param_budget),
               "feasible": feasible(e["macs_ratio"], params_ratio, b, param_budget)}
              for e, b in zip(evaluations, budgets_)]
    return {"curve": points, "score": float(np.mean([p["score"] for p in points])),
            "feasible": all(p["feasible"] for p in points)}


def finetune(cfg: RunConfig, net, splits, epochs: int, static_ratios, policy, seed: int, policy_at=None, teacher=None):
    """Fine-tune under the agents' greedy ratios, or (cfg.finetune == "sandwich") over the widest, the
    narrowest and the agent's explored widths (rtsearch.net.sandwich); every path distilled from `teacher`
    (the dense model, cfg.distill) if given. A range run passes `policy_at(budget)`: its widest and narrowest
    paths are the policies at the range's ends, its BatchNorm statistics recomputed per budget later."""
    common = {"seed": seed, "augment": splits.augment, "teacher": teacher}
    if cfg.finetune == "sandwich":
        ends = {"widest": policy_at(cfg.budget_range[1]), "narrowest": policy_at(cfg.budget_range[0]),
                "recalibrate": False} if cfg.budget_range else {}
        fit_sandwich(net, *splits.train, epochs, cfg.lr_finetune, static_ratios, policy, cfg.p_max, cfg.explore_std,
                     **common, **ends)
    else:
        fit(net, *splits.train, epochs, cfg.lr_finetune, static_ratios, policy, **common)


def run_agents(cfg: RunConfig, splits, net, dense_accuracy, on_iteration, log, resume=False, teacher=None) -> dict:
    """Alternate both agents with fine-tuning for cfg.iterations, as named phases (warm-up, iterations, the test of
    the best one); metrics of the best iteration on test."""
    net.lam = cfg.lam if cfg.predictors_kept else 0.0
    if cfg.agent_share > 0:     # the agents' share of the training split is never fine-tuned on
        splits = replace(splits, train=split_off(splits.train, cfg.agent_share, cfg.seed)[0])
    # Many tiny tensor ops per RL step: one thread is several times faster than two on small CPUs.
    torch.set_num_threads(1)
    quiet_libraries()
    started_ray = ensure_ray(cfg.num_env_runners)
    cost = CostModel(net, predictors=cfg.predictors_kept)
    crew = Agents(cfg, net, cost)
    record = RunRecord(cfg, dense_accuracy, on_iteration, log)
    try:
        if resume:
            record, state = RunRecord.resumed(cfg, dense_accuracy, on_iteration, log)
            crew.resume(state, os.path.join(cfg.out, "agents"))
        elif cfg.warmup_epochs:
            warm_up(cfg, crew, net, cost, splits, teacher, log)
        while len(record.history) < cfg.iterations:
            iterate(cfg, crew, net, cost, splits, record, teacher)
        return best_on_test(cfg, crew, net, cost, splits, record)
    finally:
        crew.stop()
        if started_ray:
            ray.shutdown()


def warm_up(cfg: RunConfig, crew: Agents, net, cost: CostModel, splits, teacher, log) -> None:
    """Adapt the dense network to the agents' starting point, so that the first rewards say something: at tight
    budgets the un-adapted network is near chance whatever they do."""
    static_start, runtime_start = crew.start
    log(f"warm-up: {cfg.warmup_epochs} fine-tuning epochs at static {static_start:.3f}, "
        f"runtime {runtime_start:.3f} on every layer")

    def uniform_at(b):      # the uniform runtime ratio of budget b
        return fixed_policy(torch.full((net.num_layers,), agent_start(cost, b, cfg.param_budget, cfg.pruning)[1]))
    warm = fixed_policy(torch.full((net.num_layers,), runtime_start))
    if cfg.budget_range:    # the uniform ratio of a budget drawn from the range, one per batch
        warm = mixed(uniform_at, cfg.budget_range, cfg.seed)
    finetune(cfg, net, splits, cfg.warmup_epochs, torch.full((net.num_layers,), static_start), warm,
             seed=cfg.seed, policy_at=uniform_at, teacher=teacher)


def iterate(cfg: RunConfig, crew: Agents, net, cost: CostModel, splits, record: RunRecord, teacher) -> None:
    """One training iteration: the runtime agent's update, the static agent's, fine-tuning, calibration and
    validation; checkpointed (the agents too, and as the best where it is)."""
    seconds, extra = {}, {}
    tick = time.time()
    extra.update(crew.train_runtime())
    seconds["runtime"], tick = time.time() - tick, time.time()
    extra.update(crew.train_static())
    seconds["static"], tick = time.time() - tick, time.time()
    policy = crew.runtime_policy()
    if cfg.budget_range:    # fine-tuned across the range: a budget drawn per batch
        policy = mixed(lambda b: crew.runtime_policy(budget=b), cfg.budget_range, cfg.seed + len(record.history))
    ratios = torch.as_tensor(crew.static_ratios)
    finetune(cfg, net, splits, cfg.finetune_epochs, ratios, policy, seed=cfg.seed + len(record.history),
             policy_at=lambda b: crew.runtime_policy(budget=b), teacher=teacher)
    seconds["finetune"], tick = time.time() - tick, time.time()
    own_macs = crew.calibrate(*splits.val, train_x=splits.train[0]) if crew.uses_runtime else None
    curve = evaluate_at_each_budget(crew, net, cost, splits.val, ratios)
    val = curve[-1]     # at the run's budget (a range's top); a range run scores the whole curve
    seconds["eval"] = time.time() - tick
    if not np.isfinite(val["accuracy"]) or not np.isfinite(val["macs_ratio"]):
        raise FloatingPointError("validation metrics are not finite")
    if crew.uses_runtime:
        crew.dual_ascent(own_macs)
        extra.update(agent_macs_ratio=own_macs[-1], runtime_shift=crew.runtime_shift)
    params_ratio = cost.params_ratio(static_kept_for(cost.widths, crew.static_ratios))
    if cfg.budget_range:
        extra.update(curve_of(curve, crew.eval_budgets, params_ratio, cfg.param_budget),
                     betas=list(crew.betas), shifts=list(crew.shifts))
    extra.update({f"seconds_{k}": v for k, v in seconds.items()})
    extra["static_ratios"] = [round(float(r), 4) for r in crew.static_ratios]
    if cfg.num_env_runners:
        extra["env_runner_nodes"] = crew.runner_nodes()
    extra["runtime_sparsity"] = val["runtime_sparsity"]
    extra["runtime_sparsity_layers"] = val["runtime_sparsity_layers"]
    crew.save(os.path.join(cfg.out, "agents"))

    def save_best(is_best: bool) -> None:
        if is_best:
            crew.save(os.path.join(cfg.out, "agents_best"))

    record.iteration(net, crew.static_ratios, val, params_ratio, extra,
                     run_state={"beta_f": crew.beta_f, "runtime_shift": crew.runtime_shift,
                                "betas": list(crew.betas), "shifts": list(crew.shifts),
                                "eval_budgets": list(crew.eval_budgets), "bn_stats": crew.bn_stats},
                     before_checkpoint=save_best)


def best_on_test(cfg: RunConfig, crew: Agents, net, cost: CostModel, splits, record: RunRecord) -> dict:
    """The final test evaluation, with the best iteration's network, static ratios and agents; the metrics."""
    final_beta_f = crew.beta_f
    crew.resume(checkpoint.load(record.best_path), os.path.join(cfg.out, "agents_best"))
    extra = {"static_ratios": [float(r) for r in crew.static_ratios], "beta_f": final_beta_f,
             "runtime_shift": crew.runtime_shift,
             "phase_seconds": {p: sum(r.get(f"seconds_{p}", 0.0) for r in record.history) for p in PHASES}}
    if cfg.budget_range:    # the test figures at every evaluation budget; the top-level ones at the range's top
        ratios = torch.as_tensor(crew.static_ratios)
        tested = evaluate_at_each_budget(crew, net, cost, splits.test, ratios)
        params_ratio = cost.params_ratio(static_kept_for(cost.widths, crew.static_ratios))
        curve = curve_of(tested, crew.eval_budgets, params_ratio, cfg.param_budget)
        extra.update(curve=curve["curve"], curve_score=curve["score"], curve_feasible=curve["feasible"],
                     betas=list(crew.betas), shifts=list(crew.shifts))
    return finish(record, net, splits, cost, torch.as_tensor(crew.static_ratios), crew.runtime_policy(), extra)
