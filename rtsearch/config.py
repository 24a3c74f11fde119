"""One run's settings: what the CLI, the search and the cluster pass to `rtsearch.train.run`."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

METHODS = ("both", "runtime-only", "static-only", "ladder")
DEFAULT_METHOD = "ladder"   # what `rtsearch.train` and `rtsearch.tune` run without --method: it beats every fixed
                            # rule at tight budgets (results/agents.md); RunConfig's own default stays "both"
EXPLORE_STD = 0.15          # sandwich fine-tuning noise of a per-budget run
RANGE_EXPLORE_STD = 0.05    # ... and of a budget-range run (RunConfig.explore_std)


@dataclass
class RunConfig:
    dataset: str = "mnist5k"
    model: str = "small"
    budget: float = 0.5            # F_B: MACs budget, fraction of dense MACs (with budget_range: its top)
    budget_range: list[float] | None = None   # [lo, hi]: one runtime agent for every budget in it (rl/budgets.py)
    param_budget: float = 1.0      # P_B: parameter budget, fraction of dense parameters
    iterations: int = 10
    seed: int = 0
    data_dir: str | None = None
    num_env_runners: int = 0
    out: str = "runs/latest"
    method: str = "both"
    fixed_ratios: bool = False
    torch_pruning_l1: bool = False  # the static-only baseline pruned by Torch-Pruning's L1 pruner (net/magnitude.py)
    lstm: bool = False
    # searched hyperparameters (search_spaces/default.yaml)
    lr_runtime: float = 3e-4       # runtime agent (PPO) learning rate
    lr_static: float = 3e-4        # static agent (PPO) learning rate
    lr_finetune: float = 1e-3      # network fine-tuning learning rate
    beta_f: float = 1.0            # start value of the MACs Lagrange multiplier
    eta_f: float = 2.0             # dual-ascent step of beta_f
    beta_p: float = 2.0            # parameter-budget penalty weight of the static agent
    lam: float = 0.5               # trade-off coefficient between runtime and static importance
    p_max: float = 0.95            # largest pruning ratio an agent may choose
    finetune_epochs: int = 1       # fine-tuning per iteration, in passes over the training split
    dense_epochs: int | None = None   # dense pre-training epochs (None: the dataset's recipe, net.dense.recipe)
    device: str = "auto"           # where the run computes: auto | cpu | cuda (rtsearch.device)
    warm_start: bool = True        # agents start at the uniform ratios that meet the budgets (else at 0)
    warmup_epochs: int = 2         # fine-tuning under those uniform ratios before the first agent update
    # fine-tuning paths: "greedy" (the agents' greedy ratios) or "sandwich"; None: sandwich for a
    # budget range (its ends and the budgets between, measured in results/any-budget.md), else greedy
    finetune: str | None = None
    # sandwich: noise on the agent's runtime ratios in its explored fine-tuning path; None: 0.05 for a
    # budget range (its drawn budgets already vary the widths; 0.15 cost 0.01-0.03 at budgets 0.15 to
    # 0.05, results/any-budget-attempts.md), else 0.15
    explore_std: float | None = None
    agent_share: float = 0.0       # share of the training split kept out of fine-tuning for the agents' rewards
    distill: bool = False          # fine-tuning adds knowledge distillation from the dense model (KL to its predictions)
    calibrate: bool = True         # shift the runtime agent's ratios so validation MACs meet the budget
    calibration_images: int = 256  # validation images the shift is bisected on (0: all of them; see rl/loop.py)
    holdout_share: float = 0.0     # share of the training split no phase touches (the search re-ranks its top trials there)
    mlflow_run_id: str | None = None
    agent_iterations: int = 40     # method "ladder": PPO iterations of its re-run agent (rl/ladder.py)
    lr_rerun: float = 1e-3         # method "ladder": its re-run agent's PPO learning rate (search_spaces/ladder.yaml)
    entropy_rerun: float = 0.01    # method "ladder": its re-run agent's PPO entropy coefficient
    rerun_width: int = 64          # method "ladder": its re-run policy's two hidden layers' width

    @property
    def predictors_kept(self) -> bool:
        """A static-only model has no use for the runtime importance predictors and drops them."""
        return self.method != "static-only"

    def __post_init__(self):
        if self.finetune is None:
            self.finetune = "sandwich" if self.budget_range else "greedy"
        if self.explore_std is None:
            self.explore_std = RANGE_EXPLORE_STD if self.budget_range else EXPLORE_STD

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "RunConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})
