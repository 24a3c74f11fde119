"""The fixed-ratio peers (`rtsearch.train --fixed-ratios`): uniform pruning ratios that meet the MACs budget, no
agents, fine-tuned as a learned run is; with `--torch-pruning-l1` (static-only) the channels are chosen and removed
by Torch-Pruning's L1 pruner instead (rtsearch.net.magnitude). The baselines every learned method must beat, and the
ladder's rungs."""
from __future__ import annotations

import os
from dataclasses import replace

import torch

from rtsearch import data
from rtsearch.config import Pruning, RunConfig
from rtsearch.methods.base import prepared, write_manifest
from rtsearch.net import checkpoint, magnitude
from rtsearch.net.baseline import rounded_keep_counts, uniform_ratios
from rtsearch.net.cost import CostModel, static_kept_for
from rtsearch.net.supervised import evaluate, fit, fixed_policy
from rtsearch.deploy import deployed
from rtsearch.rl.record import RunRecord, finish

# the settings a fixed-ratio run uses beyond every method's (rtsearch.methods.base.COMMON)
FIELDS = frozenset({"fixed_ratios", "lam", "torch_pruning_l1", "round_to"})


def uses(pruning: Pruning) -> frozenset:
    """What a fixed-ratio run uses beyond every method's settings: no agents, no rollout workers; the trade-off
    coefficient only where runtime importance is kept, Torch-Pruning's pruner only where nothing runs at runtime."""
    return FIELDS - ({"torch_pruning_l1", "round_to"} if pruning.runtime else {"lam"})


def launch(cfg: RunConfig, on_iteration=None, log=print, resume: bool = False) -> dict:
    """A fixed-ratio run of a config whose `pruning` is set (a ladder's rung): its manifest, then `run`."""
    write_manifest(cfg)
    return run(cfg, on_iteration, log, resume)


def run(cfg: RunConfig, on_iteration=None, log=print, resume: bool = False) -> dict:
    """The run end to end, and the deployed model of its best iteration (rtsearch.deploy.deployed)."""
    splits, net, dense_accuracy, teacher, _ = prepared(cfg, log)
    metrics = fine_tune(cfg, splits, net, dense_accuracy, on_iteration, log, resume, teacher)
    deployed.write_model(os.path.join(cfg.out, "best.pt"), os.path.join(cfg.out, "deployed.pt"))
    return metrics


def fine_tune(cfg: RunConfig, splits, net, dense_accuracy, on_iteration, log, resume: bool = False,
              teacher=None) -> dict:
    """Fine-tune under uniform ratios that meet the MACs budget; an iteration is cfg.finetune_epochs epochs
    (distilled from `teacher`, the dense model, when given). With cfg.agent_share that share of the training split
    is left out, as a learned run leaves it to its agents (a ladder's rungs leave it to the re-run agent)."""
    if cfg.agent_share > 0:
        splits = replace(splits, train=data.split_off(splits.train, cfg.agent_share, cfg.seed)[0])
    net.lam = cfg.lam if cfg.predictors_kept else 0.0
    cost = CostModel(net, predictors=cfg.predictors_kept)
    static_ratios, runtime_ratios = uniform_ratios(cost, cfg.budget, cfg.pruning)
    log(f"fixed ratios ({cfg.method}): static {float(static_ratios[0]):.4f}, runtime {float(runtime_ratios[0]):.4f} "
        f"on every layer; fine-tuned on {len(splits.train[1])} training images")
    if cfg.torch_pruning_l1:    # the same widths, its channels chosen by Torch-Pruning's L1 pruner, removed now
        kept = (static_kept_for(cost.widths, static_ratios) if cfg.round_to == 1
                else rounded_keep_counts(cost, cfg.budget, cfg.round_to))
        net = magnitude.l1_pruned(net, kept)
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
