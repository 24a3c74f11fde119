"""The paper's schedule (`--method paper`): from this project's cached dense model, turned into the paper's gated
network (rtsearch.net.tradeoff.from_dense), `warmup_epochs` backbone epochs at the uniform widths of the budgets, then
per outer epoch (`paper_epochs` of them, the run's iterations):

1. the static score's filter features recomputed (distance, norm, Taylor term at the width budgets);
2. `paper_rl_epochs` RL epochs, backbone frozen: per batch of `paper_batch` training inputs, one PPO update of the
   runtime agent (static keep fractions the static agent's greedy ones) and then one of the static agent (the
   runtime agent greedy), as many batches as one pass over the agents' inputs holds;
3. `paper_backbone_epochs` epochs of the network (Adam at `lr_finetune`, gradients clipped at 40, as the paper's
   code) under both agents' greedy actions;
4. evaluation on validation under the greedy actions (under `--paper-reward lagrangian`, dual ascent of the runtime
   reward's MACs multiplier on the validation MACs); checkpoint, and the best by score.

The best outer epoch is tested and written as deployed.pt (rtsearch.rl.paper_policy.PaperModel).
"""
from __future__ import annotations

import math
import os
import time

import numpy as np
import ray
import torch
import torch.nn.functional as F

from rtsearch.config import RunConfig
from rtsearch.data import batches, random_crop_flip, split_off
from rtsearch.logs import quiet_libraries
from rtsearch.net import checkpoint
from rtsearch.net.cost import CostModel
from rtsearch.net.supervised import distill, teacher_logits
from rtsearch.net.tradeoff import PaperNet, from_dense
from rtsearch.rl import paper_agents, paper_reward
from rtsearch.rl.agents import push_world, restore
from rtsearch.rl.paper_env import Layout, layer_inputs
from rtsearch.rl.paper_policy import PaperModel, evaluate, greedy_forward, static_keep
from rtsearch.rl.ray_session import ensure_ray
from rtsearch.rl.record import RunRecord
from rtsearch.storage import replacing

GRAD_CLIP = 40.0


class Crew:
    """The paper's network, its two RLlib agents and what they share."""

    def __init__(self, cfg: RunConfig, paper: PaperNet, rl_inputs: int):
        self.cfg, self.paper = cfg, paper
        self.cost = CostModel(paper.net, predictors=True)
        self.width = paper_reward.uniform_width(self.cost, cfg.budget)
        # the static agent's width: the runtime one (the paper's code ties them) unless it has a budget of its own
        self.static_width = (self.width if cfg.paper_static_budget is None
                             else paper_reward.uniform_width(self.cost, cfg.paper_static_budget, of="params"))
        self.macs_cap = paper_reward.caps(self.cost, self.width)[0]
        self.param_cap = paper_reward.caps(self.cost, self.static_width)[1]
        self.inputs, self.outputs = layer_inputs(paper.net), [int(w) for w in self.cost.widths]
        self.layout = Layout(self.inputs, self.outputs, cfg.paper_observation)
        self.layers = paper.num_layers
        self.keep_s = [self.static_width] * self.layers     # the static agent's greedy start: decoder output 0
        self.means: dict = {}
        self.beta = RunConfig.beta_f        # --paper-reward lagrangian: --method both's start value and step
        self.updates = max(1, math.ceil(rl_inputs / cfg.paper_batch))     # PPO updates per RL epoch
        device = next(paper.parameters()).device
        env_config = {"dataset": cfg.dataset, "seed": cfg.seed, "data_dir": cfg.data_dir,
                      "device": str(device) if cfg.num_env_runners == 0 else "cpu", "agent_share": cfg.agent_share,
                      "holdout_share": cfg.holdout_share, "width": self.width, "static_width": self.static_width,
                      "macs_cap": self.macs_cap, "param_cap": self.param_cap, "dpratio": cfg.paper_dpratio,
                      "penalty_scale": cfg.paper_penalty_scale, "penalty_temperature": cfg.paper_penalty_temperature,
                      "mean_decay": cfg.paper_mean_decay, "observation": cfg.paper_observation,
                      "budget_form": cfg.paper_budget, "reward_form": cfg.paper_reward, "beta": self.beta,
                      "under": cfg.paper_under}
        gpu = device.type == "cuda"
        self.runtime = paper_agents.build(cfg, {**env_config, "world": self.world()}, "runtime", self.layers, gpu)
        self.static = paper_agents.build(cfg, {**env_config, "world": {**self.world(), "runtime_module":
                                                                        self.runtime.get_module()}},
                                         "static", self.layers, gpu)

    def world(self) -> dict:
        return {"model": self.paper.net.config(), "pruner": self.paper.pruner, "static_keep": list(self.keep_s),
                "means": dict(self.means),
                "beta": self.beta,
                "paper_state": {k: v.detach().to("cpu", copy=True) for k, v in self.paper.state_dict().items()}}

    def rl_epoch(self) -> dict:
        """One RL epoch: per batch, one PPO update of each agent."""
        push_world(self.runtime, self.world())
        push_world(self.static, self.world())
        stats = {"runtime": [], "static": []}
        for _ in range(self.updates):
            push_world(self.runtime, {"static_keep": list(self.keep_s)})
            self.runtime.train()
            stats["runtime"].append(paper_agents.pop_stats(self.runtime))
            push_world(self.static, {"runtime_module": self.runtime.get_module()})
            self.static.train()
            stats["static"].append(paper_agents.pop_stats(self.static))
            check_finite(stats)
            self.keep_s = static_keep(self.static.get_module(), self.inputs, self.outputs, self.static_width)
        for role in ("runtime", "static"):
            if stats[role] and "mean_state" in stats[role][-1]:
                self.means[role] = stats[role][-1]["mean_state"]
        mean = lambda role, key: float(np.nanmean([s[key] for s in stats[role]]))     # noqa: E731
        return {"runtime_reward": mean("runtime", "return"), "static_reward": mean("static", "return"),
                "rollout_macs_ratio": mean("runtime", "macs_ratio"),
                "rollout_params_ratio": mean("static", "params_ratio")}

    def model(self) -> PaperModel:
        return PaperModel(self.paper, self.runtime.get_module(), self.keep_s, self.width, self.cfg.paper_dpratio,
                          self.cfg.paper_observation)

    def save(self, folder: str) -> None:
        for name, algo in (("runtime", self.runtime), ("static", self.static)):
            algo.save_to_path(os.path.abspath(os.path.join(folder, name)))

    def resume(self, state: dict, folder: str) -> None:
        """The network, the static keep fractions, the running means and both agents of a checkpoint."""
        run = state["run_state"]
        self.paper.load_state_dict(run["paper_state"])
        self.keep_s, self.means = list(run["keep_s"]), dict(run.get("means", {}))
        self.beta = float(run.get("beta", RunConfig.beta_f))
        for name, algo in (("runtime", self.runtime), ("static", self.static)):
            restore(algo, os.path.abspath(os.path.join(folder, name)))

    def run_state(self) -> dict:
        return {"paper_state": {k: v.detach().cpu() for k, v in self.paper.state_dict().items()},
                "keep_s": list(self.keep_s), "means": dict(self.means), "beta": self.beta, "width": self.width,
                "static_width": self.static_width}

    def stop(self) -> None:
        for algo in (self.runtime, self.static):
            algo.stop()


def check_finite(stats: dict) -> None:
    """Stop the run, naming what overflowed, once an agent's inputs overflowed (their rows were zeroed)."""
    for role, batches_seen in stats.items():
        share = batches_seen[-1].get("overflowed", 0.0) if batches_seen else 0.0
        if share > 0:
            raise FloatingPointError(f"the network's activations overflowed on {share:.0%} of the {role} agent's "
                                     f"inputs in RL batch {len(batches_seen)}")


def train_backbone(cfg: RunConfig, crew: Crew, train, epochs: int, seed: int, uniform: bool, teacher=None,
                   augment: bool = False) -> None:
    """The network (conv, gates, beta, static score network) under the agents' greedy actions (`uniform`: at the
    width budgets on every layer), Adam at lr_finetune, gradients clipped at GRAD_CLIP."""
    paper = crew.paper
    params = [p for p in paper.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr_finetune)
    gen = torch.Generator().manual_seed(seed)
    module = crew.runtime.get_module()
    paper.train()
    for _ in range(epochs):
        for xb, yb in batches(*train, cfg.paper_batch, gen):
            if augment:
                xb = random_crop_flip(xb, gen)
            if uniform:
                logits, _ = paper(xb, torch.full((crew.layers,), crew.width),
                                  torch.full((crew.layers,), crew.static_width), cfg.paper_dpratio)
            else:
                logits, _ = greedy_forward(paper, module, crew.layout, xb, crew.keep_s, crew.width, cfg.paper_dpratio)
            loss = F.cross_entropy(logits, yb)
            if teacher is not None:
                loss = loss + distill(logits, teacher_logits(teacher, xb))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
            opt.step()
    paper.eval()


def run_paper(cfg: RunConfig, splits, net, dense_accuracy, on_iteration, log, resume=False, teacher=None) -> dict:
    """The schedule for cfg.iterations outer epochs; metrics of the best one on test."""
    torch.set_num_threads(1)        # many tiny ops per RL step: one thread is faster on small CPUs
    quiet_libraries()
    train = splits.train
    rl_inputs = len(train[0])
    if cfg.agent_share > 0:         # the agents' share of the training split is never trained on
        train, rl_part = split_off(splits.train, cfg.agent_share, cfg.seed)
        rl_inputs = len(rl_part[0])
    started_ray = ensure_ray(cfg.num_env_runners)
    paper = from_dense(net, splits.train[0], cfg.paper_pruner)
    crew = Crew(cfg, paper, rl_inputs)
    log(f"paper: width budget {crew.width:.4f} (MACs cap {crew.macs_cap:.4f}), static width {crew.static_width:.4f} "
        f"(params cap {crew.param_cap:.4f}), "
        f"{crew.updates} PPO updates of each agent per RL epoch")
    record = RunRecord(cfg, dense_accuracy, on_iteration, log)
    try:
        if resume:
            record, state = RunRecord.resumed(cfg, dense_accuracy, on_iteration, log)
            crew.resume(state, os.path.join(cfg.out, "agents"))
        elif cfg.warmup_epochs:
            log(f"warm-up: {cfg.warmup_epochs} backbone epochs at width {crew.width:.3f} (static "
                f"{crew.static_width:.3f}) on every layer")
            train_backbone(cfg, crew, train, cfg.warmup_epochs, cfg.seed, uniform=True, teacher=teacher,
                           augment=splits.augment)
        while len(record.history) < cfg.iterations:
            outer_epoch(cfg, crew, splits, train, record, teacher)
        return best_on_test(cfg, crew, splits, record)
    finally:
        crew.stop()
        if started_ray:
            ray.shutdown()


def outer_epoch(cfg: RunConfig, crew: Crew, splits, train, record: RunRecord, teacher) -> None:
    epoch = len(record.history)
    seconds, tick, extra = {}, time.time(), {}
    crew.paper.refresh_features(*[t[:cfg.paper_batch] for t in train], crew.width, crew.static_width, cfg.paper_dpratio)
    for _ in range(cfg.paper_rl_epochs):
        extra.update(crew.rl_epoch())
    seconds["rl"], tick = time.time() - tick, time.time()
    train_backbone(cfg, crew, train, cfg.paper_backbone_epochs, cfg.seed + epoch + 1, uniform=False,
                   teacher=teacher, augment=splits.augment)
    seconds["backbone"], tick = time.time() - tick, time.time()
    model = crew.model()
    val = evaluate(model, *splits.val)
    seconds["eval"] = time.time() - tick
    if not np.isfinite(val["accuracy"]) or not np.isfinite(val["macs_ratio"]):
        raise FloatingPointError("validation metrics are not finite")
    extra.update({f"seconds_{k}": v for k, v in seconds.items()}, keep_static=[round(k, 4) for k in crew.keep_s],
                 static_params_ratio=model.static_params_ratio(), macs_ratio_std=val["macs_ratio_std"])
    if cfg.paper_reward == "lagrangian":        # the price the next outer epoch's runtime rewards pay
        crew.beta = paper_reward.dual_ascent(crew.beta, val["macs_ratio"], cfg.budget, RunConfig.eta_f)
        extra["beta"] = crew.beta
    crew.save(os.path.join(cfg.out, "agents"))

    def save_best(is_best: bool) -> None:
        if is_best:
            crew.save(os.path.join(cfg.out, "agents_best"))

    record.iteration(crew.paper.net, None, val, stored_params_ratio(crew.cost), extra, run_state=crew.run_state(),
                     before_checkpoint=save_best)


def stored_params_ratio(cost: CostModel) -> float:
    """Every channel is stored; beta takes BatchNorm's shift's place (its scale is 1) and the static scores are one
    constant per channel at inference (the learned scalar's place), so the count is the dense network's."""
    return cost.params(cost.widths) / cost.dense_params


def best_on_test(cfg: RunConfig, crew: Crew, splits, record: RunRecord) -> dict:
    """The best outer epoch (network, static keep fractions, agents) on test; deployed.pt; metrics.json."""
    crew.resume(checkpoint.load(record.best_path), os.path.join(cfg.out, "agents_best"))
    model = crew.model()
    test = evaluate(model, *splits.test)
    per_input = {k: v.numpy() for k, v in test.pop("per_input").items()}
    np.savez(os.path.join(cfg.out, "test_per_input.npz"), **per_input)
    path = os.path.join(cfg.out, "deployed.pt")
    with replacing(path) as tmp:
        torch.save(model, tmp)
    extra = {"width_budget": crew.width, "static_width_budget": crew.static_width, "macs_cap": crew.macs_cap,
             "param_cap": crew.param_cap, "keep_static": list(crew.keep_s),
             "static_params_ratio": model.static_params_ratio(),
             **({"beta": crew.beta} if cfg.paper_reward == "lagrangian" else {}),
             "phase_seconds": {p: sum(r.get(f"seconds_{p}", 0.0) for r in record.history)
                               for p in ("rl", "backbone", "eval")}}
    if splits.holdout is not None:
        held = evaluate(model, *splits.holdout)
        extra["holdout"] = record.holdout(held, len(splits.holdout[1]), stored_params_ratio(crew.cost))
    return record.finish(test, stored_params_ratio(crew.cost), os.path.getsize(path), extra)

