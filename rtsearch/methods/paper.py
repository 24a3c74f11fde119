"""The published method as written (`--method paper`): Chen, Chen and Pan, *Storage Efficient and Dynamic Flexible
Runtime Channel Pruning via Deep Reinforcement Learning* (NeurIPS 2020), ingredient by ingredient from its text and
public code, with this project's exact MACs accounting; beside `--method both`, which differs in almost every
ingredient (docs/method.md, "The published method").

The pieces: the gated network and trade-off pruner (rtsearch.net.tradeoff), the rewards (rtsearch.rl.paper_reward),
the env (rtsearch.rl.paper_env), the recurrent PPO agents (rtsearch.rl.paper_agents), their greedy use and the
deployed model (rtsearch.rl.paper_policy), the schedule (rtsearch.rl.paper_loop).
"""
from __future__ import annotations

import os
from dataclasses import replace


from rtsearch.config import Pruning, RunConfig
from rtsearch.methods.base import COMMON, Method, deployed_as_measured, prepared, save_model

PAPER = frozenset({"num_env_runners", "paper_epochs", "paper_lr_runtime", "paper_lr_static", "paper_dpratio",
                   "paper_penalty_scale", "paper_penalty_temperature", "paper_mean_decay", "paper_rl_epochs",
                   "paper_backbone_epochs", "paper_batch", "paper_observation", "paper_recurrent",
                   "paper_budget", "paper_reward", "paper_static_budget", "paper_pruner", "paper_under"})


class Paper(Method):
    name = "paper"
    summary = ("the published method as written: recurrent runtime and static agents per input, the paper's "
               "rewards and trade-off pruner")
    pruning = Pruning(static=True, runtime=True)
    # its outer epochs are --paper-epochs and its backbone epochs per outer epoch --paper-backbone-epochs, not
    # --iterations and --finetune-epochs
    fields = (COMMON - {"finetune_epochs", "iterations"}) | PAPER
    iteration_field = "paper_epochs"
    sweep_iterations = RunConfig.paper_epochs
    space_file = "paper.yaml"
    swept = True
    sweep_note = " (`--method paper`: each iteration one outer epoch of RL epochs then backbone epochs)"

    def start(self, cfg: RunConfig, on_iteration=None, log=print, resume: bool = False) -> dict:
        """As every method; its outer epochs are the run's iterations (what its record, progress and metrics
        count)."""
        cfg = replace(cfg, iterations=cfg.paper_epochs)
        return super().start(cfg, on_iteration, log, resume)

    def run(self, cfg: RunConfig, on_iteration, log, resume: bool) -> dict:
        from rtsearch.rl.paper_loop import run_paper      # imports RLlib: only its runs pay for it
        splits, net, dense_accuracy, teacher, _ = prepared(cfg, log)
        return run_paper(cfg, splits, net, dense_accuracy, on_iteration, log, resume, teacher)

    def export(self, folder: str, path: str, budget: float | None, out: str) -> str:
        """The run's deployed model (deployed.pt) as its run measured it; it serves its own budget only."""
        model, metrics, _ = deployed_as_measured(folder, budget, "paper")
        save_model(model, out)
        return (f"exported {out}: the paper's gated network of {folder} and its agents, params ratio "
                f"{metrics['params_ratio']:.4f} (static keep alone {metrics['static_params_ratio']:.4f}), bytes "
                f"{os.path.getsize(out)}; test accuracy {metrics['accuracy']:.4f} at MACs ratio "
                f"{metrics['macs_ratio']:.4f} (load with torch.load(FILE, weights_only=False))")

    def traceable(self, model):
        raise ValueError("a paper run's recurrent runtime agent has no fixed-shape form; load deployed.pt with "
                         "torch.load")

    def registered(self, model) -> tuple:
        """No fixed-shape form: the deployed model itself, pickled (loading it needs rtsearch and RLlib)."""
        return model.eval(), "pickle"


METHOD = Paper()
