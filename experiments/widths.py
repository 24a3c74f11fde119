"""Is there room for a learned allocation at a tight budget? (`python -m experiments.widths`)

Three supervised probes on mnist5k / small, no agents, so each answers one question cheaply:

1. fine-tuning: the dense network fine-tuned at the uniform ratio of the budget with cross-entropy
   ("greedy", what the fixed-ratio baseline does), with distillation from the dense model added
   ("kd"), and with a second path per batch at a random per-input ratio in a band around the uniform
   one ("band-kd": the network made tolerant of the widths a policy would explore). Each network's
   test accuracy at a grid of uniform ratios says how brittle it is off the budget's ratio.
2. difficulty signal: on the band-kd network, a linear classifier on the pooled input of layer t
   (features a runtime policy could observe there at almost no cost), and the Spearman correlation of
   its confidence with the dense model's confidence on each test input; then a two-level per-input
   policy (layers before t at the uniform ratio, layers from t on wider for the least confident
   inputs, narrower for the rest, thresholds chosen on validation) against uniform at the same MACs.
   The band-kd network is also measured with its BatchNorm statistics recomputed at each ratio: a
   network shared across widths has running statistics that match none of them.
3. allocation over layers: random per-layer ratios shifted onto the budget, each fine-tuned like
   the greedy network, against uniform.

Writes a markdown table per seed and probe to --out (and prints it as it goes).
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from rtsearch.data import load
from rtsearch.config import Pruning
from rtsearch.net.baseline import budget_shift, uniform_ratios
from rtsearch.net.cost import CostModel
from rtsearch.net.dense import pretrained
from rtsearch.net.pruning import keep_count
from rtsearch.net.sandwich import recalibrate_bn
from rtsearch.net.supervised import distill, evaluate, fit, fixed_policy, policy_forward

GRID = (0.0, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9)
WIDE, SHARE_WIDE, NARROW_STEP = (0.5, 0.6, 0.7), (0.05, 0.1, 0.2, 0.3), (0.0, 0.05)


def spearman(a, b) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def finetuned(dense, splits, kind: str, ratios: torch.Tensor, epochs: int, seed: int):
    """A copy of the dense network fine-tuned at `ratios` by `kind` (greedy | kd | band-kd)."""
    net, zeros, policy = copy.deepcopy(dense), torch.zeros(dense.num_layers), fixed_policy(ratios)
    gen = torch.Generator().manual_seed(seed)
    if kind == "greedy":
        fit(net, *splits.train, epochs, 1e-3, zeros, policy, seed=seed, generator=gen)
        return net
    low = max(0.0, 1.0 - 2.0 * (1.0 - float(ratios.mean())))     # keep between twice and a twentieth of uniform

    def loss(xb, yb):
        with torch.no_grad():
            teacher = dense(xb)
        paths = [policy]
        if kind == "band-kd":
            drawn = low + (0.95 - low) * torch.rand(len(xb), generator=gen)
            paths.append(lambda walk: drawn)
        total = 0.0
        for path in paths:
            logits, _ = policy_forward(net, xb, zeros, path)
            total = total + 0.5 * F.cross_entropy(logits, yb) + distill(logits, teacher)
        return total

    fit(net, *splits.train, epochs, 1e-3, zeros, seed=seed, loss=loss, generator=gen)
    return net


@torch.no_grad()
def pooled_inputs(net, x, ratio: float) -> list[torch.Tensor]:
    """The pooled input of every prunable layer, every layer at `ratio`."""
    net.eval()
    walk, feats = net.walk(x, torch.zeros(net.num_layers)), []
    while not walk.done:
        feats.append(walk.h.mean(dim=(2, 3)).clone())
        walk.step(torch.full((len(x),), ratio))
    return feats


def linear_probe(features, labels, classes: int, seed: int) -> torch.nn.Linear:
    torch.manual_seed(seed)
    head = torch.nn.Linear(features.shape[1], classes)
    opt = torch.optim.Adam(head.parameters(), 1e-2)
    for _ in range(300):
        opt.zero_grad()
        F.cross_entropy(head(features), labels).backward()
        opt.step()
    return head


def two_level(confidence: torch.Tensor, threshold: float, layer: int, base: float, wide: float, narrow: float):
    """Layers before `layer` at `base`; from it on, `wide` for inputs at or under `threshold`, else `narrow`.
    `confidence` is indexed by the input's position in the split (evaluated as one batch)."""
    def act(walk):
        n = walk.h.shape[0]
        if walk.t < layer:
            return torch.full((n,), base)
        return torch.where(confidence[:n] <= threshold, torch.tensor(wide), torch.tensor(narrow))
    return act


def difficulty(net, dense, splits, cost, base: float, budget: float, seed: int) -> list[dict]:
    """Probe 2: per layer, the probe's Spearman with the dense confidence and the best two-level policy."""
    zeros = torch.zeros(net.num_layers)
    (xtr, ytr), (xv, yv), (xt, yt) = splits.train, splits.val, splits.test
    with torch.no_grad():
        dense_conf = F.softmax(dense(xt), 1).amax(1).numpy()
    train_f, val_f, test_f = (pooled_inputs(net, x, base) for x in (xtr, xv, xt))
    rows = []
    for layer in range(1, net.num_layers):
        head = linear_probe(train_f[layer], ytr, splits.num_classes, seed)
        with torch.no_grad():
            conf_v, conf_t = (F.softmax(head(f[layer]), 1).amax(1) for f in (val_f, test_f))
        best = None
        for wide in WIDE:
            for share in SHARE_WIDE:
                for step in NARROW_STEP:
                    threshold = float(torch.quantile(conf_v, share))
                    v = evaluate(net, cost, xv, yv, zeros, two_level(conf_v, threshold, layer, base, wide, base + step),
                                 batch_size=len(xv))
                    if v["macs_ratio"] <= budget + 0.002 and (best is None or v["accuracy"] > best[0]["accuracy"]):
                        best = (v, wide, share, step, threshold)
        row = {"layer": layer, "probe_accuracy": float((head(test_f[layer]).argmax(1) == yt).float().mean()),
               "spearman": spearman(conf_t.detach().numpy(), dense_conf)}
        if best:
            v, wide, share, step, threshold = best
            t = evaluate(net, cost, xt, yt, zeros,
                         two_level(conf_t.detach(), threshold, layer, base, wide, base + step), batch_size=len(xt))
            row.update(wide=wide, share=share, narrow=base + step, val_accuracy=v["accuracy"],
                       test_accuracy=t["accuracy"], test_macs=t["macs_ratio"])
        rows.append(row)
    return rows


def allocations(dense, splits, cost, uniform: torch.Tensor, budget: float, count: int, epochs: int, seed: int):
    """Probe 3: random per-layer ratios (uniform +- 0.3, then shifted onto the budget), fine-tuned greedily."""
    rng = np.random.default_rng(100 + seed)
    zeros = torch.zeros(dense.num_layers)

    def macs(r):
        kept = keep_count(torch.as_tensor(r, dtype=torch.float32), cost.widths)
        return float(cost.macs_ratio(kept[None, :], cost.widths)[0])

    rows = []
    for i in range(count):
        shape = uniform.numpy() + rng.uniform(-0.3, 0.3, dense.num_layers)
        shift = budget_shift(lambda s: macs(np.clip(shape + s, 0, 0.97)), budget, 0.97)
        ratios = torch.as_tensor(np.clip(shape + shift, 0, 0.97), dtype=torch.float32)
        net = finetuned(dense, splits, "greedy", ratios, epochs, seed)
        t = evaluate(net, cost, *splits.test, zeros, fixed_policy(ratios))
        rows.append({"kept": keep_count(ratios, cost.widths).tolist(), "test_accuracy": t["accuracy"],
                     "test_macs": t["macs_ratio"]})
    return rows


def study(seed: int, budget: float, epochs: int, count: int, log) -> dict:
    splits = load("mnist5k", seed)
    dense, _ = pretrained("mnist5k", "small", seed, splits, log=lambda _: None)
    dense.eval()
    cost = CostModel(dense)
    uniform = uniform_ratios(cost, budget, Pruning(static=False, runtime=True))[1]
    zeros = torch.zeros(dense.num_layers)
    out = {"seed": seed, "uniform_kept": keep_count(uniform, cost.widths).tolist()}
    nets = {}
    for kind in ("greedy", "kd", "band-kd"):
        started = time.time()
        nets[kind] = net = finetuned(dense, splits, kind, uniform, epochs, seed)
        out[kind] = [{"ratio": p, **{k: evaluate(net, cost, *splits.test, zeros,
                                                 fixed_policy(torch.full_like(uniform, p)))[k]
                                     for k in ("accuracy", "macs_ratio")}}
                     for p in (*GRID, float(uniform[0]))]
        log(f"seed {seed} {kind}: test accuracy at the uniform ratio {out[kind][-1]['accuracy']:.4f} "
            f"({time.time() - started:.0f}s)")
    # the band-kd network with its BatchNorm statistics recomputed at each ratio (on a copy)
    out["band-kd, BN per ratio"] = []
    for p in (*GRID, float(uniform[0])):
        net, policy = copy.deepcopy(nets["band-kd"]), fixed_policy(torch.full_like(uniform, p))
        recalibrate_bn(net, splits.train[0], zeros, policy, seed=seed)
        out["band-kd, BN per ratio"].append({"ratio": p, **{k: evaluate(net, cost, *splits.test, zeros, policy)[k]
                                                            for k in ("accuracy", "macs_ratio")}})
    out["difficulty"] = difficulty(nets["band-kd"], dense, splits, cost, float(uniform[0]), budget, seed)
    log(f"seed {seed} difficulty: " + json.dumps(out["difficulty"]))
    out["allocations"] = allocations(dense, splits, cost, uniform, budget, count, epochs, seed)
    log(f"seed {seed} allocations: " + json.dumps(out["allocations"]))
    return out


def markdown(results: list[dict], budget: float, epochs: int, command: str) -> str:
    lines = [f"# Room for a learned allocation at budget {budget:g} (mnist5k / small)", "",
             f"Produced by `{command}`. Test split 1,000 images; every network fine-tuned {epochs} epochs from the "
             "seed's cached dense model. See the module docstring of experiments/widths.py for the three probes.",
             "", "## 1. Fine-tuning at the uniform ratio, and accuracy off it", "",
             "| seed | network | " + " | ".join(f"p={p:g}" for p in GRID) + " | at the uniform ratio (MACs) |",
             "|---|---|" + "---|" * (len(GRID) + 1)]
    for r in results:
        for kind in ("greedy", "kd", "band-kd", "band-kd, BN per ratio"):
            cells = " | ".join(f"{c['accuracy']:.3f}" for c in r[kind][:-1])
            last = r[kind][-1]
            lines.append(f"| {r['seed']} | {kind} | {cells} | {last['accuracy']:.4f} ({last['macs_ratio']:.4f}) |")
    for kind in ("greedy", "kd", "band-kd"):
        values = [r[kind][-1]["accuracy"] for r in results]
        lines.append(f"\n{kind}: mean {np.mean(values):.4f} ± {np.std(values, ddof=1) if len(values) > 1 else 0:.4f} "
                     f"at the uniform ratio over {len(values)} seed(s).")
    lines += ["", "## 2. Difficulty signal at layer t and the best two-level policy (band-kd network)", "",
              "| seed | layer t | probe accuracy | Spearman(probe conf, dense conf) | "
              "policy (wide, share wide, narrow) | val accuracy | test accuracy (MACs) | uniform, same network |",
              "|---|---|---|---|---|---|---|---|"]
    for r in results:
        uniform = r["band-kd"][-1]
        for d in r["difficulty"]:
            policy = (f"{d['wide']:g}, {d['share']:g}, {d['narrow']:.3f}" if "wide" in d else "none within budget")
            test = f"{d['test_accuracy']:.4f} ({d['test_macs']:.4f})" if "wide" in d else "-"
            lines.append(f"| {r['seed']} | {d['layer']} | {d['probe_accuracy']:.3f} | {d['spearman']:+.3f} | "
                         f"{policy} | "
                         f"{d.get('val_accuracy', float('nan')):.4f} | {test} | {uniform['accuracy']:.4f} "
                         f"({uniform['macs_ratio']:.4f}) |")
    lines += ["", "## 3. Random allocations over layers, fine-tuned like greedy", "",
              "| seed | kept channels per layer | test accuracy | MACs ratio | greedy uniform |",
              "|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['seed']} | {r['uniform_kept']} (uniform) | {r['greedy'][-1]['accuracy']:.4f} | "
                     f"{r['greedy'][-1]['macs_ratio']:.4f} | |")
        for a in r["allocations"]:
            lines.append(f"| {r['seed']} | {a['kept']} | {a['test_accuracy']:.4f} | {a['test_macs']:.4f} | "
                         f"{a['test_accuracy'] - r['greedy'][-1]['accuracy']:+.4f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.widths", description=__doc__.splitlines()[0])
    p.add_argument("--budget", type=float, default=0.08)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--allocations", type=int, default=6)
    p.add_argument("--out", default="results/widths")
    args = p.parse_args(argv)
    if not 0 < args.budget <= 1 or args.epochs < 1 or args.allocations < 0:
        print("--budget must be in (0, 1], --epochs at least 1, --allocations 0 or more", file=sys.stderr)
        return 2
    torch.set_num_threads(1)     # small tensors: one thread is as fast, and leaves a CPU to other work
    command = "python -m experiments.widths " + " ".join(argv if argv is not None else sys.argv[1:])
    results = []
    for seed in (int(s) for s in args.seeds.split(",")):
        results.append(study(seed, args.budget, args.epochs, args.allocations, lambda m: print(m, flush=True)))
        with open(args.out + ".json", "w") as f:
            json.dump(results, f, indent=1)
        with open(args.out + ".md", "w") as f:
            f.write(markdown(results, args.budget, args.epochs, command))
    print(f"wrote {args.out}.md and {args.out}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
