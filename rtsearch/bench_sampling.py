"""Rollout throughput of the runtime agent, behind `python -m rtsearch.bench --sampling` and results/sampling.md.

Measures, in one run, the runtime agent's agent steps per second on `RuntimeVectorEnv` (the real
network) next to the very same RLlib set-up (same spaces, batch, rollout fragment and PPO config,
`runtime_algo_config`) on `NoOpVectorEnv`, a natively batched env that only returns zeros. The
ratio says how much of RLlib's own speed the real env keeps (docs/method.md §4; target >= 50 %).

For each `--num-env-runners N` it reports
- learning included: agent steps sampled per second of wall time over repeated `algo.train()`;
- sampling only: agent steps per second of `EnvRunner.sample()` on all runners at once;
- env only (real env, no RLlib): one batched `step()` per layer, timed directly;
and the per-iteration timers RLlib reports (sampling, learner update), the inputs of the scaling
projection in results/scaling.md. `--train-iterations K` (default 2) also times K iterations of the
real training loop (`rtsearch.train.run`, both agents, fine-tuning, evaluation).

    python -m rtsearch.bench --sampling [--dataset mnist5k] [--model small] [--seconds 20]
    python -m rtsearch.bench --scaling          # the same for --num-env-runners 0 1 2
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector.utils import batch_space

from rtsearch.rl.observations import OBS_BOUND, RUNTIME_OBS_DIM

class NoOpVectorEnv(gym.vector.VectorEnv):
    """RuntimeVectorEnv's spaces and episode shape (L steps, the whole batch ends together, NEXT_STEP
    autoreset) with no work at all: observations and rewards are zeros."""

    metadata = {"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP}

    def __init__(self, config: dict | None = None, num_envs: int | None = None, **kwargs):
        config = {**dict(config or {}), **kwargs}
        self.num_envs = int(num_envs if num_envs is not None else config.get("num_envs", 1))
        self.num_layers = len(config["world"]["model"]["widths"])
        p_max = float(config.get("p_max", 0.95))
        self.single_observation_space = spaces.Box(-OBS_BOUND, OBS_BOUND, (RUNTIME_OBS_DIM,), np.float32)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.single_action_space = spaces.Box(0.0, p_max, (1,), np.float32)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._obs = np.zeros((self.num_envs, RUNTIME_OBS_DIM), dtype=np.float32)
        self._zeros = np.zeros(self.num_envs)
        self._false = np.zeros(self.num_envs, dtype=bool)
        self._true = np.ones(self.num_envs, dtype=bool)
        self.t = 0
        self._needs_reset = True

    def reset(self, *, seed=None, options=None):
        self.t, self._needs_reset = 0, False
        return self._obs.copy(), {}

    def step(self, actions):
        if self._needs_reset:                 # NEXT_STEP autoreset: this step only resets
            self.t, self._needs_reset = 0, False
            return self._obs.copy(), self._zeros.copy(), self._false.copy(), self._false.copy(), {}
        self.t += 1
        done = self.t >= self.num_layers
        self._needs_reset = done
        return (self._obs.copy(), self._zeros.copy(), (self._true if done else self._false).copy(),
                self._false.copy(), {})


# --------------------------------------------------------------------------------------------------
# set-up

def network(dataset: str, model: str, seed: int = 0, data_dir: str | None = None):
    """The cached dense network if there is one, else the same architecture freshly initialised:
    every channel is computed and masked either way (models.py), so the cost per step is the same."""
    import torch

    from rtsearch import data
    from rtsearch.net import checkpoint, dense
    from rtsearch.net.models import build_model
    splits = data.load(dataset, seed, data_dir)
    path = dense.cache_path(dataset, model, seed, splits)
    if os.path.isfile(path):
        return checkpoint.network(checkpoint.load(path)), "cached dense weights"
    torch.manual_seed(seed)
    return build_model(model, splits.input_shape, splits.num_classes), "untrained weights (same compute)"


def real_algo(cfg, net):
    """The runtime agent's algorithm exactly as a run builds it (loop.Agents: config, env_config,
    starting policy); the static agent it also builds is stopped at once."""
    from rtsearch.net.cost import CostModel
    from rtsearch.rl.loop import Agents
    crew = Agents(cfg, net, CostModel(net, predictors=cfg.predictors_kept))
    if crew.static is not None:
        crew.static.stop()
        crew.static = None
    return crew.runtime


def noop_algo(real_config):
    """The same AlgorithmConfig (spaces, batch, fragment, PPO settings) on NoOpVectorEnv."""
    config = real_config.copy(copy_frozen=False)
    config.environment(NoOpVectorEnv, env_config=dict(config.env_config))
    return config.build_algo()


# --------------------------------------------------------------------------------------------------
# measurements

class PhaseClock:
    """Wall time of the phases of PPO's training_step, summed over train() calls: sampling
    (synchronous_parallel_sample), learner update (LearnerGroup.update), weight sync to the runners.
    RLlib's own timers are exponential moving averages that remember the first, slow call for long."""

    def __init__(self, algo):
        from ray.rllib.algorithms.ppo import ppo
        self.totals = {"sampling": 0.0, "learner": 0.0, "sync_weights": 0.0}
        self._module, self._original = ppo, ppo.synchronous_parallel_sample
        ppo.synchronous_parallel_sample = self._timed("sampling", self._original)
        algo.learner_group.update = self._timed("learner", algo.learner_group.update)
        algo.env_runner_group.sync_weights = self._timed("sync_weights", algo.env_runner_group.sync_weights)

    def _timed(self, name, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.totals[name] += time.perf_counter() - start
        return wrapper

    def reset(self) -> None:
        self.totals = {k: 0.0 for k in self.totals}

    def close(self) -> None:
        self._module.synchronous_parallel_sample = self._original


def measure_train(algo, seconds: float) -> dict:
    """Agent steps per second over repeated train() (one warm-up call first), with the time per
    train() call spent sampling, in the learner, syncing weights and elsewhere (driver overhead)."""
    clock = PhaseClock(algo)
    try:
        algo.train()
        clock.reset()
        steps, calls = 0, 0
        start = time.perf_counter()
        while True:
            result = algo.train()
            calls += 1
            steps += int(result["env_runners"]["num_env_steps_sampled"])
            elapsed = time.perf_counter() - start
            if elapsed >= seconds and calls >= 2:
                break
    finally:
        clock.close()
    per_call = {f"{k}_s_per_train": v / calls for k, v in clock.totals.items()}
    per_call["other_s_per_train"] = elapsed / calls - sum(per_call.values())
    return {"steps_per_s": steps / elapsed, "steps": steps, "train_calls": calls, "seconds": elapsed,
            "s_per_train": elapsed / calls, "steps_per_train": steps / calls, **per_call}


def measure_sample(algo, seconds: float) -> dict:
    """Agent steps per second of EnvRunner.sample() alone, on every runner at once (no learning)."""
    group = algo.env_runner_group
    remote = group.num_remote_env_runners() > 0

    def one_round() -> int:
        if not remote:
            return sum(len(e) for e in group.local_env_runner.sample())
        return sum(group.foreach_env_runner(lambda r: sum(len(e) for e in r.sample()), local_env_runner=False))

    one_round()
    steps, rounds = 0, 0
    start = time.perf_counter()
    while True:
        steps += one_round()
        rounds += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and rounds >= 2:
            break
    return {"steps_per_s": steps / elapsed, "steps": steps, "rounds": rounds, "seconds": elapsed}


def measure_env(env_config: dict, batch: int, seconds: float) -> dict:
    """The real env alone: agent steps per second of batched step() calls with random actions."""
    from rtsearch.rl.runtime_env import RuntimeVectorEnv
    env = RuntimeVectorEnv(dict(env_config), num_envs=batch)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    steps, start = 0, time.perf_counter()
    while True:
        env.step(rng.uniform(0.0, env.p_max, (batch, 1)).astype(np.float32))
        steps += batch
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and steps >= 20 * batch:
            break
    # every L + 1 calls one is the autoreset step (a new batch, first observations): counted as steps,
    # as RLlib counts it too
    return {"steps_per_s": steps / elapsed, "us_per_step": 1e6 * elapsed / steps}


def measure_runners(cfg, net, seconds: float, sample_only: bool, log) -> tuple[dict, dict]:
    """Both figures for the real env, then for the no-op env on a copy of the very same config.
    Returns (measurements, the real algorithm's env_config)."""
    out = {}
    algo = real_algo(cfg, net)
    config = algo.config
    for kind in ("real", "noop"):
        if kind == "noop":
            algo = noop_algo(config)
        try:
            out[kind] = {"train": measure_train(algo, seconds)}
            if sample_only:
                out[kind]["sample"] = measure_sample(algo, seconds / 2)
        finally:
            algo.stop()
        t = out[kind]["train"]
        log(f"  {kind:>4}: {t['steps_per_s']:9,.0f} agent steps/s with learning (train(): {t['s_per_train']:.3f} s "
            f"per call, {t['steps_per_train']:,.0f} steps: sampling {t['sampling_s_per_train']:.3f} s, "
            f"learner {t['learner_s_per_train']:.3f} s, weight sync {t['sync_weights_s_per_train']:.3f} s, "
            f"other {t['other_s_per_train']:.3f} s)"
            + (f"; {out[kind]['sample']['steps_per_s']:9,.0f} sampling only" if sample_only else ""))
    out["batch"] = config.num_envs_per_env_runner
    out["rollout_fragment_length"] = config.get_rollout_fragment_length()
    out["train_batch_size"] = config.total_train_batch_size
    return out, dict(config.env_config)


def time_training(cfg, iterations: int, log) -> dict:
    """K iterations of the real loop (rtsearch.train.run); seconds per iteration from the rows."""
    from rtsearch.methods import run
    rows: list[dict] = []
    folder = tempfile.mkdtemp(prefix="rtsearch-bench-run-")
    try:
        run_cfg = type(cfg).from_dict({**cfg.to_dict(), "iterations": iterations, "out": folder})
        run(run_cfg, on_iteration=rows.append, log=lambda m: None)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    seconds = [rows[0]["seconds"]] + [b["seconds"] - a["seconds"] for a, b in zip(rows, rows[1:])]
    phases = {p: float(np.mean([r.get(f"seconds_{p}", 0.0) for r in rows])) for p in
              ("runtime", "static", "finetune", "eval")}
    return {"iterations": len(rows), "s_per_iteration": seconds, "mean_s_per_iteration": float(np.mean(seconds)),
            "phases_mean_s": phases}


def measure_network(model: str, input_shape: tuple, num_classes: int, batch: int, seconds: float) -> dict:
    """Per-image costs of a backbone, for projections to data this machine does not have (CIFAR-10):
    one gated walk at runtime ratio 0.5 (what a rollout computes per agent step, summed over the
    layers) and one fine-tuning step (forward and backward) on random inputs of the same shape."""
    import torch
    import torch.nn.functional as F

    from rtsearch.net.cost import CostModel
    from rtsearch.net.models import build_model
    from rtsearch.net.supervised import fixed_policy, policy_forward
    torch.manual_seed(0)
    net = build_model(model, input_shape, num_classes)
    x, y = torch.randn(batch, *input_shape), torch.randint(0, num_classes, (batch,))
    policy = fixed_policy(torch.full((net.num_layers,), 0.5))

    def timed(fn) -> float:
        fn()
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds or n < 2:
            fn()
            n += 1
        return (time.perf_counter() - start) / n / batch

    def walk():
        net.eval()
        with torch.no_grad():
            policy_forward(net, x, None, policy)

    opt = torch.optim.SGD(net.parameters(), lr=1e-3)

    def train_step():
        net.train()
        opt.zero_grad()
        logits, _ = policy_forward(net, x, None, policy)
        F.cross_entropy(logits, y).backward()
        opt.step()

    return {"model": model, "input_shape": list(input_shape), "layers": net.num_layers,
            "dense_macs": int(CostModel(net).dense_macs), "batch": batch,
            "walk_s_per_image": timed(walk), "train_s_per_image": timed(train_step)}


def start_ray(num_cpus: int) -> str:
    """A private local Ray (own temp dir, no dashboard): never joins someone else's instance."""
    import ray
    temp_dir = tempfile.mkdtemp(prefix="rtsb-", dir="/tmp")
    os.environ.pop("RAY_ADDRESS", None)
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False,
             _temp_dir=temp_dir)
    return temp_dir


def _measure_runner_counts(args, base, net, results: dict, log) -> dict:
    """Phase 1: the runtime env against the no-op env at each asked number of env runners, into
    results["runners"]; returns the env config of the last one."""
    from rtsearch.config import RunConfig
    env_config = None
    for n in args.num_env_runners:
        log(f"num_env_runners={n}:")
        cfg = RunConfig.from_dict({**base.to_dict(), "num_env_runners": n})
        net.lam = cfg.lam
        m, env_config = measure_runners(cfg, net, args.seconds, not args.no_sample_only, log)
        m["ratio_train"] = m["real"]["train"]["steps_per_s"] / m["noop"]["train"]["steps_per_s"]
        line = (f"  runtime env: {m['real']['train']['steps_per_s']:,.0f} agent steps/s, no-op env: "
                f"{m['noop']['train']['steps_per_s']:,.0f} agent steps/s (learning included, batch "
                f"{m['batch']}, {m['train_batch_size']:,} steps per update); ratio {m['ratio_train']:.2f}")
        if "sample" in m["real"]:
            m["ratio_sample"] = m["real"]["sample"]["steps_per_s"] / m["noop"]["sample"]["steps_per_s"]
            line += f"; sampling only ratio {m['ratio_sample']:.2f}"
        log(line + " (target >= 0.50)")
        results["runners"][str(n)] = m
    return env_config


def _measure_env_and_training(args, base, env_config: dict, results: dict, log) -> None:
    """Phase 2: the env alone (no RLlib), then, when asked, a few iterations of the real training loop."""
    env = measure_env(env_config, results["runners"][str(args.num_env_runners[0])]["batch"],
                      min(args.seconds, 5.0))
    results["env_only"] = env
    log(f"env only (RuntimeVectorEnv.step, no RLlib): {env['steps_per_s']:,.0f} agent steps/s "
        f"({env['us_per_step']:.1f} us per agent step)")
    if args.train_iterations > 0:
        t = time_training(base, args.train_iterations, log)
        results["training"] = t
        log(f"training loop (rtsearch.train.run, {args.dataset}/{args.model}, defaults, 0 env runners): "
            + ", ".join(f"{s:.1f}" for s in t["s_per_iteration"]) + " s per iteration; phases (mean s): "
            + ", ".join(f"{k} {v:.2f}" for k, v in t["phases_mean_s"].items()))


def _measure_named_network(args, results: dict, log) -> None:
    """Phase 3 (without Ray): the walk and a training step of the network --network names."""
    name, shape = args.network
    n = measure_network(name, shape, 10, 64, min(args.seconds, 10.0))
    results["network"] = n
    log(f"network {name} {','.join(map(str, shape))} ({n['dense_macs']:,} dense MACs): walk at runtime "
        f"ratio 0.5 {1e3 * n['walk_s_per_image']:.3f} ms per image, training step "
        f"{1e3 * n['train_s_per_image']:.3f} ms per image (batch 64, 1 thread)")


def measure(args, command: str) -> dict:
    """Every measurement the parsed `python -m rtsearch.bench` arguments ask for; prints as it goes and
    writes the JSON to args.out when given."""
    import ray
    import torch

    from rtsearch import methods
    from rtsearch.config import RunConfig
    from rtsearch.rl.world import n_layers

    log = lambda m: print(m, flush=True)  # noqa: E731
    # Many tiny tensor ops per step: one thread is far faster than two on a small CPU (the driver
    # samples and learns itself with 0 env runners; Ray sets 1 thread in its workers).
    torch.set_num_threads(1)
    net, weights = network(args.dataset, args.model, data_dir=args.data_dir)
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, ray {ray.__version__}"
    log(f"{command}\n{machine}, load average {os.getloadavg()[0]:.2f} at start; "
        f"{args.dataset}/{args.model} ({weights})")
    results = {"command": command, "machine": machine, "dataset": args.dataset, "model": args.model,
               "weights": weights, "runners": {},
               "load_average_start": os.getloadavg()[0]}
    temp_dir = start_ray(max(os.cpu_count() or 1, 1 + max(args.num_env_runners)))
    try:
        base = methods.configured(RunConfig(dataset=args.dataset, model=args.model, method="both",
                                            data_dir=args.data_dir))
        env_config = _measure_runner_counts(args, base, net, results, log)
        results["layers"] = n_layers(env_config["world"])
        _measure_env_and_training(args, base, env_config, results, log)
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
    if args.network:
        _measure_named_network(args, results, log)
    results["load_average_end"] = os.getloadavg()[0]
    log(f"load average {results['load_average_end']:.2f} at the end")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2, default=float)
        log(f"wrote {args.out}")
    return results
