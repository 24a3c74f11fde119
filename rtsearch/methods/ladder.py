"""The ladder method (`rtsearch.train --method ladder`): static pruning makes a ladder of networks, and a learned
runtime policy picks, per input, how far up the ladder to go.

- **Rungs.** Torch-Pruning's L1 pruner at RUNG_FACTORS times the MACs budget (those under the dense model's
  MACs), each a fixed-ratio static-only run fine-tuned as any other (`--finetune-epochs`, `--distill`; the
  iterations of a learned run plus its warm-up epochs), in <out>/rungs/<budget>.
- **Cheap rung.** The one the threshold cascade picks on validation (`best_cascade`).
- **Re-run agent** (rtsearch.rl.rerun, RLlib PPO). Every input runs on the cheap rung. The agent reads that pass's
  class probabilities and keeps its answer or re-runs the input on one dearer rung, paying both. Rewarded on the
  training split (with `--agent-share`, on that share of it, which the rungs are not fine-tuned on), charged 1 for a
  wrong answer (REWARD; why: docs/why.md).
- **Iterations.** Each of its PPO iterations (`--agent-iterations`) is calibrated onto the budget and scored on
  validation. The best one is deployed.

Cost accounting: an input's MACs are the cheap rung's, plus the policy's linear layers (POLICY_MACS_NOTE), plus
the dearer rung's when it is re-run. The parameters are those of the cheap rung, of every rung the policy re-runs
on validation, and of the policy. The parameter budget (`--param-budget`, by default 1: the dense model's count)
restricts both the cascade's pairs and the rungs the agent may re-run on (`dearer_rungs`), so the deployed model
fits it whatever the policy learns. deployed.pt is a `LadderModel`, one picklable module. metrics.json also holds
the threshold cascade's figures on the same rungs (not learned): the rule the agent has to beat.
"""
from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from rtsearch import data
from rtsearch.config import Pruning, RunConfig
from rtsearch.errors import UsageError
from rtsearch.methods import fixed, rung_cache
from rtsearch.methods.base import COMMON, Method, deployed_as_measured, prepared, save_model
from rtsearch.net.cost import CostModel
from rtsearch.rl.rerun_features import features
from rtsearch.rl.record import RunRecord

RUNG_FACTORS = (0.25, 0.375, 0.5, 0.625, 1.0, 1.25, 1.5, 1.875, 2.5, 3.125)   # at 0.08: 0.02 ... 0.25
REWARD = "error"
SPLITS = ("train", "val", "test")
POLICY_MACS_NOTE = "multiply-adds of the policy's linear layers; its softmax, sort and entropy are not counted"
RUNG_METHOD = "static-only"            # a rung is the fixed-ratio static-only peer pruned by Torch-Pruning L1
RUNG_PRUNING = Pruning(static=True, runtime=False)


def rung_budgets(budget: float) -> list[float]:
    """The rungs' MACs budgets: RUNG_FACTORS times `budget`, below the dense model's MACs."""
    return sorted({round(budget * f, 6) for f in RUNG_FACTORS if budget * f < 1.0})


def rung_config(cfg: RunConfig, budget: float) -> RunConfig:
    """One rung: the Torch-Pruning L1 fixed-ratio run at `budget`, fine-tuned as the ladder run asks, for as many
    iterations as a learned run fine-tunes (its warm-up included), as the fixed-ratio peers are."""
    return RunConfig.from_dict({**cfg.to_dict(), "budget": budget, "param_budget": 1.0, "method": RUNG_METHOD,
                                "pruning": RUNG_PRUNING, "iterations": cfg.iterations + cfg.warmup_epochs,
                                "fixed_ratios": True, "torch_pruning_l1": True, "budget_range": None,
                                "mlflow_run_id": None, "out": os.path.join(cfg.out, "rungs", f"{budget:g}")})


def train_rungs(cfg: RunConfig, log, resume: bool) -> list[dict]:
    """Run every rung (a fixed-ratio run, rtsearch.methods.fixed); with `resume`, a finished rung is read back and a
    started one resumed. A rung some run made before with the same settings is copied from the rung cache
    (rtsearch.methods.rung_cache) instead, and a rung made here is added to it; a rung another process is making
    right now is left for last, so that both make rungs meanwhile. Returns each rung's folder and metrics and
    whether it was read back, cheapest first. A copied rung is not "read back": the run's seconds count what
    copying it took, not its training (and, read back on --resume, that copy's seconds again)."""
    rungs, later = [], []
    budgets = rung_budgets(cfg.budget)
    dense_model = None          # its name, the rungs' cache key: found when a rung is first looked up
    for wait, todo in ((False, list(enumerate(budgets, 1))), (True, later)):
        for i, b in todo:
            rc = rung_config(cfg, b)
            head = f"rung {i}/{len(budgets)} (MACs budget {b:g})"
            read_back = resume and os.path.isfile(os.path.join(rc.out, "metrics.json"))
            if read_back:
                log(f"{head}: done before, read back from {rc.out}")
                rungs.append({"budget": b, "out": rc.out, "metrics": rung_cache.read_back(rc.out), "read_back": True})
                continue
            dense_model = dense_model or rung_cache.dense_name(cfg)
            got = rung_cache.obtain(rc, rung_cache.key(rc, dense_model),
                                    lambda rc=rc, head=head: train_rung(rc, head, log, resume), log, head, wait)
            if got is None:
                log(f"{head}: another process is making it; making the other rungs first")
                later.append((i, b))
                continue
            rungs.append({"budget": b, "out": rc.out, "metrics": got[0], "read_back": False})
    return sorted(rungs, key=lambda r: r["metrics"]["macs_ratio"])


def train_rung(rc: RunConfig, head: str, log, resume: bool) -> dict:
    """One rung trained in rc.out (a started one resumed with `resume`); its metrics."""
    log(f"{head}: Torch-Pruning L1, fine-tuned in {rc.out}")
    return fixed.launch(rc, log=lambda line: log(f"  rung {rc.budget:g}: {line}"),
                        resume=resume and RunRecord.has_checkpoint(rc.out))


def split_outputs(forward, x, y) -> dict:
    """Per input of one split: the log-probabilities of `forward`'s logits (batches of 500), whether the answer
    is right, how confident it is (max softmax), and the labels."""
    with torch.no_grad():
        log_probs = torch.cat([torch.log_softmax(forward(x[i:i + 500]), 1) for i in range(0, len(x), 500)]).numpy()
    return {"log_probs": log_probs, "correct": log_probs.argmax(1) == y.numpy(), "confidence": np.exp(log_probs.max(1)),
            "labels": y.numpy()}


def rung_outputs(out: str, macs_ratio: float, splits, names=SPLITS) -> dict:
    """One rung's deployed model (deployed.pt: channels removed), its MACs ratio and its outputs per split."""
    model = torch.load(os.path.join(out, "deployed.pt"), weights_only=False, map_location="cpu").eval()
    return {"model": model, "macs_ratio": macs_ratio,
            **{name: split_outputs(model, *getattr(splits, name)) for name in names}}


def cascade(cheap: dict, wide: dict, split: str, threshold: float) -> tuple[float, float]:
    """(accuracy, mean MACs ratio) on `split` when inputs less confident than `threshold` at the cheap
    level are re-run at the wide one (both paid)."""
    correct, macs = per_input(cheap, wide, split, threshold)
    return float(correct.mean()), float(macs.mean())


def per_input(cheap: dict, wide: dict, split: str, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Per input of `split`: right or not, and its MACs ratio, under the cascade."""
    rerun_it = cheap[split]["confidence"] < threshold
    correct = np.where(rerun_it, wide[split]["correct"], cheap[split]["correct"])
    return correct, cheap["macs_ratio"] + rerun_it * wide["macs_ratio"]


def best_cascade(levels: list[dict], budget: float, param_budget: float | None = None) -> dict | None:
    """The label-free threshold cascade: of every pair of levels (cheap, wide) and the confidence threshold that
    re-runs the largest share of validation inputs `budget` allows, the one with the best validation accuracy;
    its test figures (the threshold carried over as it is). With `param_budget`, only pairs whose "params_ratio"
    sum to at most it. None if no pair fits."""
    best = None
    for i, cheap in enumerate(levels):
        for wide in levels[i + 1:]:
            share = (budget - cheap["macs_ratio"]) / wide["macs_ratio"]
            if share <= 0 or (param_budget is not None and cheap["params_ratio"] + wide["params_ratio"] > param_budget):
                continue
            ordered = np.sort(cheap["val"]["confidence"])
            k = int(np.floor(share * len(ordered) + 1e-9))     # re-run at most k inputs (fewer on ties)
            threshold = float(ordered[k]) if k < len(ordered) else np.inf
            val, val_macs = cascade(cheap, wide, "val", threshold)
            if best is None or val > best["val_accuracy"]:
                test, test_macs = per_input(cheap, wide, "test", threshold)
                best = {"cheap_macs": cheap["macs_ratio"], "wide_macs": wide["macs_ratio"], "threshold": threshold,
                        "val_accuracy": val, "val_macs_ratio": val_macs, "accuracy": float(test.mean()),
                        "macs_ratio": float(test_macs.mean()),
                        "macs_ratio_cv": float(test_macs.std() / test_macs.mean()),
                        "test_macs": test_macs}
    return best


def mlp_macs(sizes: list[int]) -> int:
    """Multiply-adds of a stack of linear layers with these widths (input, hidden..., output)."""
    return sum(a * b for a, b in zip(sizes, sizes[1:]))


def mlp_params(sizes: list[int]) -> int:
    """Weights and biases of the same stack."""
    return sum(a * b + b for a, b in zip(sizes, sizes[1:]))


def dearer_rungs(levels: list[dict], cheap: int, wide: int, room: float) -> list[int]:
    """The rungs the re-run agent may send an input to, cheapest first: every rung above the cheap one if all fit
    the parameter budget (`room`: what it leaves beside the policy); else the cascade's wide rung, then the others
    by fewest parameters while they fit, so that whatever the policy picks, the stored rungs fit."""
    above = list(range(cheap + 1, len(levels)))
    if sum(levels[i]["params_ratio"] for i in [cheap, *above]) <= room:
        return above
    kept, used = [wide], levels[cheap]["params_ratio"] + levels[wide]["params_ratio"]
    for i in sorted((i for i in above if i != wide), key=lambda i: levels[i]["params_ratio"]):
        if used + levels[i]["params_ratio"] <= room:
            kept.append(i)
            used += levels[i]["params_ratio"]
    return sorted(kept)


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class LadderModel(torch.nn.Module):
    """A ladder run's deployed model: forward(x) -> log-probabilities (B, classes). Every input runs on the cheap
    rung; the policy (plain torch layers, no RLlib needed) keeps that answer or re-runs it on one dearer rung."""

    def __init__(self, rungs: list, actor: torch.nn.Module, actions: list[int], extra: list[float], shift: float,
                 macs: list[float], input_shape):
        super().__init__()
        # the cheap rung, then the dearer rungs the policy uses: their skip-path networks alone (a rung's
        # deployed.pt also carries its masked twin, which a ladder never runs)
        self.rungs = torch.nn.ModuleList([getattr(rung, "skip", rung) for rung in rungs])
        self.input_shape = tuple(input_shape)
        self.actor = actor
        self.actions = actions                      # the agent's action of each rung (0: keep the cheap answer)
        self.shift = shift
        self.register_buffer("extra", torch.tensor(extra, dtype=torch.float32))   # each rung's added MACs ratio
        self.register_buffer("macs", torch.tensor(macs, dtype=torch.float32))     # an input's MACs ratio per rung

    def decide(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log-probabilities, the index of the rung that answered) per input."""
        with torch.no_grad():
            cheap = torch.log_softmax(self.rungs[0](x), 1)
            logits = self.actor(features(cheap))[:, self.actions] - self.shift * self.extra
            choice = logits.argmax(1)
            out = cheap.clone()
            for i in choice.unique().tolist():
                if i:
                    rows = choice == i
                    out[rows] = torch.log_softmax(self.rungs[i](x[rows]), 1)
        return out, choice

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decide(x)[0]

    def compiled(self) -> torch.jit.ScriptModule:
        """The same model as one TorchScript graph (rtsearch.deploy.compiled): same answers, less overhead; on the
        device where the model lives."""
        from rtsearch.deploy import compiled
        shape = getattr(self, "input_shape", None) or self.rungs[0].input_shape    # older ladders kept it per rung
        with torch.no_grad():
            classes = self.rungs[0](torch.zeros(1, *shape, device=compiled.device_of(self.rungs[0]))).shape[1]
        return compiled.cascade([getattr(r, "skip", r) for r in self.rungs], shape, features, self.actor,
                                self.actions, self.shift, self.extra, classes)


def evaluate(model: LadderModel, x: torch.Tensor, y: torch.Tensor) -> dict:
    """Accuracy and per-input MACs ratios (mean, p95, std) of the deployed model on a split, and per input
    whether it is right, its MACs ratio, its confidence and the rung that answered."""
    log_probs, choice = zip(*(model.decide(x[i:i + 500]) for i in range(0, len(x), 500)))
    log_probs, choice = torch.cat(log_probs), torch.cat(choice)
    macs = model.macs[choice].numpy()
    correct = (log_probs.argmax(1) == y).numpy()
    return {"accuracy": float(correct.mean()), "macs_ratio": float(macs.mean()),
            "macs_ratio_p95": float(np.percentile(macs, 95)), "macs_ratio_std": float(macs.std()),
            "per_input": {"correct": correct, "macs_ratio": macs, "confidence": log_probs.exp().max(1).values.numpy(),
                          "rung": choice.numpy()}}


class Phases:
    """Seconds of each phase of this process, for metrics.json."""

    def __init__(self):
        self.seconds, self.lap = {}, time.time()

    def end(self, name: str) -> None:
        self.seconds[name], self.lap = time.time() - self.lap, time.time()


@dataclass
class Plan:
    """The ladder the agent climbs: the cheap rung (levels[0]) and the dearer rungs it may re-run on, with what
    each costs, and the threshold cascade on every rung, the rule the agent must beat."""
    levels: list[dict]          # rung outputs (rung_outputs), cheap first
    ladder: list[int]           # their indices among all rungs: action a re-runs on ladder[a]
    extra: np.ndarray           # each level's added MACs ratio (0 for the cheap one)
    base_macs: float            # what every input pays: the cheap rung and the policy
    policy_macs: float          # the policy's MACs ratio
    cascade: dict               # the threshold cascade's figures on the same rungs (not learned)
    params: np.ndarray          # each level's params ratio
    stored: np.ndarray          # each level's exported bytes
    budget: float               # the MACs budget

    @property
    def spare(self) -> float:
        """What the budget leaves for re-runs, on average."""
        return self.budget - self.base_macs

    def params_ratio_of(self, used: list[int], actor, dense_params: int) -> float:
        """The rungs a policy uses, and the policy itself."""
        return float(self.params[used].sum() + parameter_count(actor) / dense_params)


def plan_ladder(cfg: RunConfig, cost: CostModel, outputs: list[dict], rungs: list[dict]) -> Plan:
    """Choose the cheap rung (the best threshold cascade within the budget less the policy's MACs, within the
    parameter budget beside the policy) and the dearer rungs the agent may re-run on (dearer_rungs)."""
    classes = outputs[0]["test"]["log_probs"].shape[1]
    hidden = [cfg.rerun_width] * 2
    policy_macs = lambda actions: mlp_macs([2 * classes + 1, *hidden, actions]) / cost.dense_macs   # noqa: E731
    limit = cfg.param_budget       # the rungs kept and the policy fit it (by default 1: no more than the dense model)
    room = limit - mlp_params([2 * classes + 1, *hidden, len(outputs)]) / cost.dense_params
    choice = best_cascade(outputs, cfg.budget - policy_macs(len(outputs)), room)   # the agent pays for its policy
    if choice is None and best_cascade(outputs, cfg.budget - policy_macs(len(outputs))) is None:
        raise ValueError(f"no rung fits the budget {cfg.budget:g}")
    if choice is None:
        cheapest_pair = sum(sorted(o["params_ratio"] for o in outputs)[:2])
        raise UsageError(f"no pair of rungs fits --param-budget {limit:g} beside the re-run policy ({limit - room:.3f} "
                         f"of the dense parameters; the cheapest two rungs take {cheapest_pair:.3f}): raise "
                         f"--param-budget")
    macs_of = [o["macs_ratio"] for o in outputs]
    cheap = macs_of.index(choice["cheap_macs"])
    cascade_found = best_cascade(outputs, cfg.budget, limit)   # the rule the agent must beat, no policy to pay for
    cascade_found.pop("test_macs")
    ladder = [cheap, *dearer_rungs(outputs, cheap, macs_of.index(choice["wide_macs"]), room)]   # action a: ladder[a]
    levels = [outputs[i] for i in ladder]
    extra = np.array([0.0] + [lv["macs_ratio"] for lv in levels[1:]], np.float32)
    return Plan(levels, ladder, extra, levels[0]["macs_ratio"] + policy_macs(len(extra)), policy_macs(len(extra)),
                cascade_found, np.array([lv["params_ratio"] for lv in levels]),
                np.array([rungs[i]["metrics"]["stored_bytes"] for i in ladder]), cfg.budget)


def train_agent(cfg: RunConfig, plan: Plan, record: RunRecord, phases: Phases, dense_params: int) -> dict:
    """The re-run agent's PPO iterations (rtsearch.rl.rerun), each calibrated onto the budget and scored on
    validation; returns the best iteration's policy (`actor`), its calibration `shift` and the levels it `used`."""
    from rtsearch.rl import rerun        # the agent's training: gymnasium and Ray, not needed to load a ladder
    from rtsearch.rl.ray_session import ensure_ray

    levels, extra, spare = plan.levels, plan.extra, plan.spare
    obs = {s: features(levels[0][s]["log_probs"]) for s in ("train", "val")}
    ce, right = rerun.choices(levels, 0, "train")
    _, val_right = rerun.choices(levels, 0, "val")
    best, lap = {}, {}

    def after_iteration(iteration: int, actor, beta: float) -> None:
        logits = rerun.action_logits(actor, obs["val"])
        shift = rerun.calibration_shift(logits, extra, spare)
        action = rerun.greedy(logits, extra, shift)
        macs = plan.base_macs + extra[action]
        used = sorted({0, *action.tolist()})
        val = {"accuracy": float(val_right[np.arange(len(action)), action].mean()), "macs_ratio": float(macs.mean()),
               "macs_ratio_p95": float(np.percentile(macs, 95))}
        timing = {"seconds_agent": time.time() - lap["iteration"]}     # this iteration's PPO update and validation
        if iteration == 1:                                   # the rungs, on the first row only (a sweep sums rows)
            timing["seconds_rungs"] = phases.seconds["rungs"] + phases.seconds["outputs"]
        lap["iteration"] = time.time()
        row = record.scored(val, plan.params_ratio_of(used, actor, dense_params),
                            {"beta": beta, "shift": shift, "rerun_share": float((action > 0).mean()), **timing})
        record.history.append(row)
        if record.best_row is row:
            best.update(actor=copy.deepcopy(actor).eval(), shift=shift, used=used)
        record.announce(row, cfg.agent_iterations)

    started = ensure_ray(cfg.num_env_runners)
    phases.end("outputs")
    lap["iteration"] = time.time()
    try:
        record.log(f"the re-run agent: cheap rung MACs {levels[0]['macs_ratio']:.4f}, {len(extra) - 1} dearer rungs, "
                   f"{cfg.agent_iterations} PPO iterations on {len(obs['train'])} training inputs ...")
        rerun.train_agent(obs["train"], rerun.charge(ce, right, REWARD), extra, spare, obs["val"], cfg.seed,
                          cfg.agent_iterations, lr=cfg.lr_rerun, entropy=cfg.entropy_rerun, width=cfg.rerun_width,
                          num_env_runners=cfg.num_env_runners, after_iteration=after_iteration)
    finally:
        if started:
            import ray
            ray.shutdown()
    phases.end("agent")
    return best


def deploy(cfg: RunConfig, plan: Plan, best: dict, rungs: list[dict], splits, record: RunRecord, phases: Phases,
           dense_params: int) -> dict:
    """deployed.pt (a LadderModel of the best iteration), its test figures and test_per_input.npz; the metrics."""
    used, levels, extra = best["used"], plan.levels, plan.extra
    model = LadderModel([levels[a]["model"] for a in used], best["actor"], used, extra[used].tolist(),
                        best["shift"], (plan.base_macs + extra[used]).tolist(), levels[0]["model"].input_shape)
    torch.save(model, os.path.join(cfg.out, "deployed.pt"))
    test = evaluate(model, *splits.test)
    np.savez(os.path.join(cfg.out, "test_per_input.npz"), **test.pop("per_input"))
    phases.end("deploy and test")
    params_ratio = plan.params_ratio_of(used, best["actor"], dense_params)
    details = {"macs_ratio_cv": test["macs_ratio_std"] / test["macs_ratio"], "reward": REWARD,
               "policy_macs_ratio": plan.policy_macs, "policy_macs": POLICY_MACS_NOTE,
               "rungs": [{"budget": r["budget"], "macs_ratio": r["metrics"]["macs_ratio"],
                          "params_ratio": r["metrics"]["params_ratio"], "accuracy": r["metrics"]["accuracy"]}
                         for r in rungs],
               "cheap_rung_macs_ratio": levels[0]["macs_ratio"], "phase_seconds": phases.seconds,
               "agent_rungs_macs_ratio": [lv["macs_ratio"] for lv in levels[1:]],
               "deployed_rungs_macs_ratio": [levels[a]["macs_ratio"] for a in used], "cascade": plan.cascade}
    if splits.holdout is not None:      # the search's second look at its top trials (data.hold_out)
        details["holdout"] = record.holdout(evaluate(model, *splits.holdout), len(splits.holdout[1]), params_ratio)
    stored_bytes = int(plan.stored[used].sum()) + 4 * parameter_count(best["actor"])   # float32 policy
    return record.finish(test, params_ratio, stored_bytes, details)


def run_ladder(cfg: RunConfig, on_iteration=None, log=print, resume: bool = False) -> dict:
    """One ladder run end to end, as named phases: the rungs, their outputs and the plan, the re-run agent, the
    deployed model; returns the metrics written to <out>/metrics.json."""
    splits, net, dense_accuracy, _, _ = prepared(cfg, log, move=False)   # the rungs' outputs are computed on the CPU
    cost = CostModel(net)
    record = RunRecord(cfg, dense_accuracy, on_iteration, log)     # its clock runs from here, rungs included
    phases = Phases()
    rungs = train_rungs(cfg, log, resume)
    phases.end("rungs")
    record.started -= sum(r["metrics"]["seconds"] for r in rungs if r["read_back"])   # seconds: the whole run's
    if cfg.agent_share > 0:     # the agent is rewarded on the share its rungs were never fine-tuned on
        splits = replace(splits, train=data.split_off(splits.train, cfg.agent_share, cfg.seed)[1])
    log("the rungs' outputs on the agent's training inputs and the validation and test splits ...")
    outputs = [{**rung_outputs(r["out"], r["metrics"]["macs_ratio"], splits),
                "params_ratio": r["metrics"]["params_ratio"]} for r in rungs]
    plan = plan_ladder(cfg, cost, outputs, rungs)
    best = train_agent(cfg, plan, record, phases, cost.dense_params)
    return deploy(cfg, plan, best, rungs, splits, record, phases, cost.dense_params)


class TraceableLadder(torch.nn.Module):
    """forward(x) -> log-probabilities (B, classes), as LadderModel answers, with fixed shapes: every input runs on
    every rung the ladder keeps, and the policy's choice per input picks which answer counts."""

    def __init__(self, model: LadderModel):
        super().__init__()
        from rtsearch.deploy.deployed import TraceableModel     # a rung of a ladder written before rungs were lean
        self.rungs = torch.nn.ModuleList([TraceableModel(r) if hasattr(r, "masked") else r for r in model.rungs])
        self.actor, self.shift = model.actor, model.shift
        self.input_shape = getattr(model, "input_shape", None) or model.rungs[0].input_shape
        self.register_buffer("actions", torch.tensor(model.actions, dtype=torch.long))
        self.register_buffer("extra", model.extra.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        answers = torch.stack([torch.log_softmax(rung(x), 1) for rung in self.rungs])      # (rungs, B, classes)
        logits = self.actor(features(answers[0])).index_select(1, self.actions) - self.shift * self.extra
        choice = logits.argmax(1).view(1, -1, 1).expand(1, *answers.shape[1:])
        return answers.gather(0, choice)[0]


def export_ladder(folder: str, budget: float | None, out: str) -> str:
    """A ladder run's deployed model, as its run measured it, written to `out`; the line saying so."""
    model, metrics, trained = deployed_as_measured(folder, budget, "ladder")
    save_model(model, out)
    return (f"exported {out}: the ladder of {folder} at budget {trained:g}: {len(model.rungs)} rungs and its re-run "
            f"policy, params ratio {metrics['params_ratio']:.4f}, bytes {os.path.getsize(out)}; test accuracy "
            f"{metrics['accuracy']:.4f} at MACs ratio {metrics['macs_ratio']:.4f} (load with torch.load(FILE, "
            f"weights_only=False))")


class Ladder(Method):
    name = "ladder"
    summary = ("Torch-Pruning L1 networks at several MACs budgets, and a learned per-input choice of re-running an "
               "input on a dearer one")
    fields = COMMON | {"agent_iterations", "lr_rerun", "entropy_rerun", "rerun_width", "num_env_runners"}
    iteration_field = "agent_iterations"
    sweep_iterations = RunConfig.agent_iterations
    space_file = "ladder.yaml"
    swept = True
    sweep_note = (" of the ladder's re-run agent (`--method ladder`: each trial first makes or copies from the rung "
                  "cache its Torch-Pruning L1 rungs, then reports every PPO iteration of its agent)")
    unset_param_budget = ("parameter budget 1 (the rungs a ladder keeps and its policy store no more than the dense "
                          "model)")
    resume_may_change = ("param_budget",)       # its agent is trained again under the new cap

    def run(self, cfg: RunConfig, on_iteration, log, resume: bool) -> dict:
        return run_ladder(cfg, on_iteration, log, resume)

    def trial_finetuning(self, max_iterations: int) -> int:
        return RunConfig.iterations           # its sweep's iterations are its agent's; its rungs fine-tune as default

    def export(self, folder: str, path: str, budget: float | None, out: str) -> str:
        return export_ladder(folder, budget, out)

    def traceable(self, model):
        return TraceableLadder(model)


METHOD = Ladder()
