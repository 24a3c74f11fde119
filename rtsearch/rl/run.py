"""One run end to end: `run(cfg)` starts from the cached dense model, then either fine-tunes under
uniform ratios (`fixed_ratios`, the baseline) or runs the training iteration with both agents
(rtsearch.rl.loop), and writes the deployed model of its best iteration (rtsearch.rl.deployed). The ladder method
(rtsearch.rl.ladder) makes its rungs with `run` itself. The command line is rtsearch.train; the search calls `run`
in every trial."""
from __future__ import annotations

import copy
import os
from dataclasses import replace
from typing import Callable

import torch

from rtsearch import data, device
from rtsearch.config import RunConfig
from rtsearch.logs import log_to_stdout
from rtsearch.net import checkpoint, dense, magnitude
from rtsearch.net.baseline import uniform_ratios
from rtsearch.net.cost import CostModel, static_kept_for
from rtsearch.net.supervised import evaluate, fit, fixed_policy
from rtsearch.rl import deployed
from rtsearch.rl.record import RunRecord, finish


def run(cfg: RunConfig, on_iteration: Callable[[dict], None] | None = None, log=log_to_stdout,
        resume: bool = False) -> dict:
    """Run one configuration end to end; returns the metrics written to <out>/metrics.json."""
    if cfg.method == "ladder":
        from rtsearch.rl.ladder import run_ladder  # imports RLlib: only runs with agents pay for it
        return run_ladder(cfg, run, on_iteration, log, resume)
    torch.manual_seed(cfg.seed)
    where = device.resolve(cfg.device)
    splits = data.hold_out(data.load(cfg.dataset, cfg.seed, cfg.data_dir), cfg.holdout_share, cfg.seed)
    net, dense_accuracy = dense.pretrained(cfg.dataset, cfg.model, cfg.seed, splits, cfg.dense_epochs, log=log,
                                           device=where)
    teacher = copy.deepcopy(net) if cfg.distill else None     # the dense model, before any pruning
    splits = splits.to(where)           # moved once: every batch of every phase is sliced on the device
    if where.type != "cpu":
        log(f"device: {where} ({torch.cuda.get_device_name(where)})")
    if cfg.fixed_ratios:
        metrics = run_fixed(cfg, splits, net, dense_accuracy, on_iteration, log, resume, teacher)
    else:
        from rtsearch.rl.loop import run_agents  # imports RLlib: only runs with agents pay for it
        metrics = run_agents(cfg, splits, net, dense_accuracy, on_iteration, log, resume, teacher)
    # the deployable model: static channels removed, runtime pruning on the skip path with its policy
    deployed.write_model(os.path.join(cfg.out, "best.pt"), os.path.join(cfg.out, "deployed.pt"))
    return metrics


def run_fixed(cfg: RunConfig, splits, net, dense_accuracy, on_iteration, log, resume: bool = False,
              teacher=None) -> dict:
    """Fine-tune under uniform ratios that meet the MACs budget; an iteration is cfg.finetune_epochs epochs
    (distilled from `teacher`, the dense model, when given). With cfg.agent_share that share of the training split
    is left out, as a learned run leaves it to its agents (a ladder's rungs leave it to the re-run agent)."""
    if cfg.agent_share > 0:
        splits = replace(splits, train=data.split_off(splits.train, cfg.agent_share, cfg.seed)[0])
    net.lam = cfg.lam if cfg.predictors_kept else 0.0
    cost = CostModel(net, predictors=cfg.predictors_kept)
    static_ratios, runtime_ratios = uniform_ratios(cost, cfg.budget, cfg.method)
    log(f"fixed ratios ({cfg.method}): static {float(static_ratios[0]):.4f}, runtime {float(runtime_ratios[0]):.4f} "
        f"on every layer; fine-tuned on {len(splits.train[1])} training images")
    if cfg.torch_pruning_l1:    # the same widths, its channels chosen by Torch-Pruning's L1 pruner, removed now
        net = magnitude.l1_pruned(net, static_kept_for(cost.widths, static_ratios))
        cost = magnitude.cost_against(net, cost)
        static_ratios = torch.zeros(net.num_layers)
        log(f"Torch-Pruning L1 pruner: widths {net.widths}")
    policy = fixed_policy(runtime_ratios)
    params_ratio = cost.params_ratio(static_kept_for(cost.widths, static_ratios))
    if resume:
        record, state = RunRecord.resumed(cfg, dense_accuracy, on_iteration, log)
        net.load_state_dict(state["state_dict"])
    else:
        record = RunRecord(cfg, dense_accuracy, on_iteration, log)
    while len(record.history) < cfg.iterations:
        fit(net, *splits.train, cfg.finetune_epochs, cfg.lr_finetune, static_ratios, policy,
            seed=cfg.seed + len(record.history), augment=splits.augment, teacher=teacher)
        val = evaluate(net, cost, *splits.val, static_ratios, policy)
        record.iteration(net, static_ratios, val, params_ratio)
    net.load_state_dict(checkpoint.load(record.best_path)["state_dict"])
    return finish(record, net, splits, cost, static_ratios, policy,
                  {"static_ratios": static_ratios.tolist(), "runtime_ratios": runtime_ratios.tolist()})
