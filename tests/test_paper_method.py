"""`--method paper`, ingredient by ingredient: each pinned to the paper's formula on hand-made inputs (the rewards and
their running mean, the keep-fraction clamp, the trade-off pruner's masks and dpratio split, the gate's output, the
per-layer encoder), the env's terminal reward against those formulas on a real network, and a sweep end to end."""
import json
import math

import numpy as np
import pytest
import torch

from conftest import run_cli
from rtsearch.net.cost import CostModel
from rtsearch.net.models import build_model
from rtsearch.net.tradeoff import PaperNet, gate_product, keep_mask, nest, resolve
from rtsearch.rl import paper_reward
from rtsearch.rl.paper_reward import RunningMean


# ------------------------------------------------------------------------------------------------ rewards

def test_runtime_reward_under_the_cap_is_minus_ce_over_m_plus_a_tenth_of_what_is_left():
    r = paper_reward.runtime_reward(np.array([0.5]), 0.25, np.array([0.2]), cap=0.3, scale=1.2, temperature=0.03)
    assert r[0] == pytest.approx(-0.5 / 0.25 + 0.1 * (0.3 - 0.2))


def test_runtime_reward_over_the_cap_is_the_exponential_wall():
    r = paper_reward.runtime_reward(np.array([0.5, 0.5]), 0.5, np.array([0.33, 0.36]), cap=0.3, scale=1.2,
                                    temperature=0.03)
    assert r[0] == pytest.approx(-1.0 - 1.2 * (math.exp(0.03 / 0.03) - 1.0))
    assert r[1] == pytest.approx(-1.0 - 1.2 * (math.exp(0.06 / 0.03) - 1.0))
    at_cap = paper_reward.budget_term(np.array([0.3]), 0.3, 1.2, 0.03)
    assert at_cap[0] == 0.0         # the two branches meet at the cap


def test_static_reward_has_no_bonus_under_its_cap_and_the_same_wall_over_it():
    under = paper_reward.static_reward(np.array([0.7]), 0.35, np.array([0.2]), cap=0.3, scale=2.0, temperature=0.05)
    over = paper_reward.static_reward(np.array([0.7]), 0.35, np.array([0.4]), cap=0.3, scale=2.0, temperature=0.05)
    assert under[0] == pytest.approx(-2.0)
    assert over[0] == pytest.approx(-2.0 - 2.0 * (math.exp(0.1 / 0.05) - 1.0))


def test_under_target_both_agents_pay_the_walls_slope_at_the_cap_for_what_they_leave_under_it():
    """--paper-under target (not the paper's): -(scale / T)(cap - cost) under the cap for the runtime and the static
    agent, the same wall over it, the two branches meeting at the cap; on the batch's mean, that slope under it."""
    r = paper_reward.runtime_reward(np.array([0.5]), 0.25, np.array([0.2]), cap=0.3, scale=1.2, temperature=0.03,
                                    under="target")
    assert r[0] == pytest.approx(-0.5 / 0.25 - 1.2 / 0.03 * (0.3 - 0.2))
    over = paper_reward.budget_term(np.array([0.33, 0.3]), 0.3, 1.2, 0.03, under="target")
    assert over.tolist() == pytest.approx([-1.2 * (math.exp(1.0) - 1.0), 0.0])
    s = paper_reward.static_reward(np.array([0.7, 0.7]), 0.35, np.array([0.2, 0.4]), cap=0.3, scale=2.0,
                                   temperature=0.05, under="target")
    assert s.tolist() == pytest.approx([-2.0 - 2.0 / 0.05 * 0.1, -2.0 - 2.0 * (math.exp(0.1 / 0.05) - 1.0)])
    mean = paper_reward.mean_budget_term(np.array([0.1, 0.2]), cap=0.25, scale=1.2, temperature=0.03, under="target")
    assert mean.tolist() == pytest.approx([-40 * 0.1 - 40 * 0.05, -40 * 0.1 + 40 * 0.05])


def test_the_mean_budget_charges_each_input_its_first_order_share_of_the_batchs_mean():
    """--paper-budget mean: b on the batch's mean MACs, plus b'(mean) (c - mean) per input, on both branches."""
    over = paper_reward.mean_budget_term(np.array([0.2, 0.4]), cap=0.25, scale=1.2, temperature=0.03)
    b, slope = -1.2 * (math.exp(0.05 / 0.03) - 1.0), -1.2 / 0.03 * math.exp(0.05 / 0.03)
    assert over.tolist() == pytest.approx([b - 0.1 * slope, b + 0.1 * slope])
    under = paper_reward.mean_budget_term(np.array([0.1, 0.2]), cap=0.25, scale=1.2, temperature=0.03)
    assert under.tolist() == pytest.approx([0.01 + 0.005, 0.01 - 0.005])
    assert under.sum() == pytest.approx(2 * float(paper_reward.budget_term(np.array([0.15]), 0.25, 1.2, 0.03)[0]))
    r = paper_reward.runtime_reward(np.array([0.5, 0.5]), 0.5, np.array([0.1, 0.2]), 0.25, 1.2, 0.03, "mean")
    assert r.tolist() == pytest.approx((-1.0 + under).tolist())


def test_the_lagrangian_reward_is_minus_ce_minus_beta_macs_and_beta_rises_only_while_over():
    """--paper-reward lagrangian: --method both's runtime reward, its multiplier moved by dual ascent."""
    r = paper_reward.lagrangian_reward(np.array([0.5, 0.1]), np.array([0.2, 0.4]), beta=1.5)
    assert r.tolist() == pytest.approx([-0.5 - 0.3, -0.1 - 0.6])
    assert paper_reward.dual_ascent(1.0, macs=0.3, budget=0.25, step=2.0) == pytest.approx(1.1)
    assert paper_reward.dual_ascent(1.0, macs=0.2, budget=0.25, step=2.0) == pytest.approx(0.9)
    assert paper_reward.dual_ascent(0.05, macs=0.1, budget=0.25, step=2.0) == 0.0       # never negative


def test_running_mean_is_a_plain_mean_then_decays():
    m = RunningMean(0.9)
    values = [float(v) for v in range(1, paper_reward.WARM_STEPS + 1)]
    for v in values:
        m.update(v)
    assert m.value == pytest.approx(np.mean(values))
    before = m.value
    assert m.update(1000.0) == pytest.approx(0.9 * before + 0.1 * 1000.0)
    assert RunningMean(**m.state()).value == m.value


def test_keep_fraction_is_budget_plus_output_clamped_into_a_tenth_to_one():
    keep = paper_reward.keep_fraction(0.5, [-0.6, -0.1, 0.0, 0.3, 0.7])
    assert keep.tolist() == pytest.approx([0.1, 0.4, 0.5, 0.8, 1.0])


def test_the_runtime_cap_is_the_budget_and_the_param_cap_the_uniform_width_s():
    net = build_model("small", (1, 8, 8))
    cost = CostModel(net)
    width = paper_reward.uniform_width(cost, 0.255)
    macs_cap, param_cap = paper_reward.caps(cost, width)
    assert macs_cap == pytest.approx(0.255, abs=1e-6) and 0 < width < 1
    assert param_cap == pytest.approx(cost.params(width * cost.widths.double()) / cost.dense_params)
    assert paper_reward.params_ratio(cost, torch.ones(1, net.num_layers))[0] == pytest.approx(1.0)


def test_a_static_budget_of_its_own_is_the_uniform_width_that_stores_that_share_of_the_parameters():
    cost = CostModel(build_model("small", (1, 8, 8)))
    width = paper_reward.uniform_width(cost, 0.78, of="params")
    assert 0.78 - 1e-4 < paper_reward.caps(cost, width)[1] <= 0.78
    assert width > paper_reward.uniform_width(cost, 0.78)          # parameters fall slower with width than MACs
    assert paper_reward.uniform_width(cost, 1.0, of="params") == 1.0


@pytest.mark.parametrize("static_budget", [None, 0.78])
def test_the_run_centres_the_static_agent_on_its_own_width_and_caps_its_parameters_there(static_budget,
                                                                                          monkeypatch):
    """`--paper-static-budget`: the Crew gives the static env the width storing that share and the cap at that
    width; without it both follow the runtime budget, as the paper's code ties them."""
    from types import SimpleNamespace

    from rtsearch.config import RunConfig
    from rtsearch.net.tradeoff import from_dense
    from rtsearch.rl import paper_loop
    net = build_model("small", (1, 8, 8))
    cfg = RunConfig(dataset="digits", method="paper", budget=0.255, paper_static_budget=static_budget).check()
    built = []

    def build(cfg, env_config, role, layers, gpu):      # what each agent's env is given, not RLlib, is pinned here
        built.append((role, env_config))
        return SimpleNamespace(get_module=lambda: None)
    monkeypatch.setattr(paper_loop.paper_agents, "build", build)
    crew = paper_loop.Crew(cfg, from_dense(net, torch.randn(16, 1, 8, 8)), 128)
    cost = CostModel(net)
    width = paper_reward.uniform_width(cost, 0.255)
    want = width if static_budget is None else paper_reward.uniform_width(cost, static_budget, of="params")
    assert crew.width == pytest.approx(width) and crew.static_width == pytest.approx(want)
    assert crew.keep_s == [pytest.approx(want)] * net.num_layers
    assert crew.param_cap == pytest.approx(paper_reward.caps(cost, want)[1])
    assert crew.macs_cap == pytest.approx(0.255, abs=1e-6)
    for role, env_config in built:
        assert (env_config["width"], env_config["static_width"], env_config["param_cap"]) == (
            crew.width, crew.static_width, crew.param_cap), role


def test_the_lagrangian_reward_reaches_the_runtime_env_with_its_multiplier_and_refuses_the_mean_budget(monkeypatch):
    """`--paper-reward lagrangian`: the Crew hands the runtime env the reward's form and --method both's start value
    of the multiplier, and every world it pushes carries the multiplier's current value to the env."""
    from types import SimpleNamespace

    from rtsearch.config import RunConfig
    from rtsearch.errors import UsageError
    from rtsearch.net.tradeoff import from_dense
    from rtsearch.rl import paper_loop
    net = build_model("small", (1, 8, 8))
    cfg = RunConfig(dataset="digits", method="paper", budget=0.255, paper_reward="lagrangian").check()
    built = {}
    monkeypatch.setattr(paper_loop.paper_agents, "build", lambda cfg, env_config, role, layers, gpu: (
        built.__setitem__(role, env_config), SimpleNamespace(get_module=lambda: None))[1])
    crew = paper_loop.Crew(cfg, from_dense(net, torch.randn(16, 1, 8, 8)), 128)
    assert built["runtime"]["reward_form"] == "lagrangian" and built["runtime"]["beta"] == RunConfig.beta_f == 1.0
    crew.beta = 1.7
    assert crew.world()["beta"] == 1.7 and crew.run_state()["beta"] == 1.7
    env = env_of("runtime", reward_form="lagrangian")[0]
    env.set_world({"beta": crew.world()["beta"]})
    assert env.beta == 1.7
    with pytest.raises(UsageError, match="drop --paper-budget mean"):
        RunConfig(dataset="digits", method="paper", paper_reward="lagrangian", paper_budget="mean").check()


def test_under_target_reaches_both_envs_and_the_static_env_pays_it(monkeypatch):
    """`--paper-under target`: the Crew hands both agents' envs the form, and the static env's reward charges the
    parameters its keep leaves under the cap."""
    from types import SimpleNamespace

    from rtsearch.config import RunConfig
    from rtsearch.net.tradeoff import from_dense
    from rtsearch.rl import paper_loop
    built = {}
    monkeypatch.setattr(paper_loop.paper_agents, "build", lambda cfg, env_config, role, layers, gpu: (
        built.__setitem__(role, env_config), SimpleNamespace(get_module=lambda: None))[1])
    cfg = RunConfig(dataset="digits", method="paper", budget=0.255, paper_under="target").check()
    paper_loop.Crew(cfg, from_dense(build_model("small", (1, 8, 8)), torch.randn(16, 1, 8, 8)), 128)
    assert built["runtime"]["under"] == built["static"]["under"] == "target"
    rewards = {}
    for under in ("bonus", "target"):
        env = env_of("static", under=under)[0]
        env._greedy_runtime = lambda: np.full(4, 0.5)     # the runtime side's keep, as its greedy agent would give it
        env.reset(seed=1)
        for _ in range(env.net.num_layers):
            _, reward, _, _, _ = env.step(np.full((4, 1), -0.5, dtype=np.float32))     # keeps well under the cap
        rewards[under] = reward
    assert (rewards["target"] < rewards["bonus"]).all()


def test_the_nested_pruner_reaches_the_envs_network_and_refuses_a_dpratio(monkeypatch):
    """`--paper-pruner nested`: the run's network and the one each env builds from the world merge by nesting; a
    dpratio beside it, which it would ignore, exits 2 naming the flag to drop."""
    from rtsearch.config import RunConfig
    from rtsearch.errors import UsageError
    from rtsearch.net.tradeoff import from_dense
    from rtsearch.rl import paper_agents, paper_loop
    from rtsearch.rl.paper_env import paper_network
    from types import SimpleNamespace
    monkeypatch.setattr(paper_agents, "build", lambda *args, **kwargs: SimpleNamespace(get_module=lambda: None))
    cfg = RunConfig(dataset="digits", method="paper", budget=0.255, paper_pruner="nested").check()
    net = build_model("small", (1, 8, 8))
    crew = paper_loop.Crew(cfg, from_dense(net, torch.randn(16, 1, 8, 8), cfg.paper_pruner), 128)
    assert crew.paper.pruner == "nested" and paper_network(crew.world()).pruner == "nested"
    with pytest.raises(UsageError, match="drop --paper-dpratio"):
        RunConfig(dataset="digits", method="paper", paper_pruner="nested", paper_dpratio=0.3).check()


def test_the_static_env_centres_its_keep_fractions_on_the_static_width():
    env = env_of("static")[0]
    env.static_width = 0.9
    env.reset(seed=1)
    env._greedy_runtime = lambda: np.full(env.num_envs, 0.5)        # the runtime side greedy, at any fraction
    env.step(np.array([[0.0], [-0.2], [0.05], [0.5]], dtype=np.float32))
    assert env._static_keeps[0].tolist() == pytest.approx([0.9, 0.7, 0.95, 1.0])


# ------------------------------------------------------------------------------------------------ trade-off pruner

def test_keep_mask_keeps_the_ceil_of_fraction_times_channels_highest():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.3, 0.7]])
    mask = keep_mask(scores, torch.tensor([0.5]))
    assert mask[0].nonzero().flatten().tolist() == [1, 2, 4]          # ceil(2.5) = 3: 0.9, 0.7, 0.5
    assert keep_mask(scores, torch.tensor([0.0])).sum() == 1           # at least one channel


def hand_made():
    """10 channels: runtime keeps {0,1,2,3} (a_r 0.4), static keeps {2,...,6} (a_s 0.5), both prune {7,8,9}."""
    gates = torch.tensor([[10.0, 9, 8, 7, 6, 5, 4, 3, 2, 1]])
    static = torch.tensor([5.0, 4, 10, 9, 8, 7, 6, 3, 2, 1])
    runtime_keep = keep_mask(gates, torch.tensor([0.4]))
    static_keep = keep_mask(static.expand(1, -1), torch.tensor([0.5]))
    return gates, static, runtime_keep, static_keep


def test_channels_pruned_by_both_stay_pruned_and_the_rest_is_split_by_dpratio():
    gates, static, runtime_keep, static_keep = hand_made()
    runtime, stat, overlap = resolve(runtime_keep, static_keep, gates, static, dpratio=0.5)
    assert overlap[0].nonzero().flatten().tolist() == [7, 8, 9]
    # a_r' = a_s' = 1 - (1 - 0.4 - 0.3) * 0.5 - 0.3 = 0.55 -> 6 channels each, outside the overlap
    assert runtime[0].nonzero().flatten().tolist() == [0, 1, 2, 3, 4, 5]
    assert stat[0].nonzero().flatten().tolist() == [0, 2, 3, 4, 5, 6]
    assert (runtime & stat)[0].nonzero().flatten().tolist() == [0, 2, 3, 4, 5]
    assert not ((runtime | stat) & overlap).any()


def test_dpratio_one_leaves_the_runtime_mask_and_zero_the_static_one():
    gates, static, runtime_keep, static_keep = hand_made()
    runtime, stat, _ = resolve(runtime_keep, static_keep, gates, static, dpratio=1.0)
    assert torch.equal(runtime & stat, runtime_keep)
    runtime, stat, _ = resolve(runtime_keep, static_keep, gates, static, dpratio=0.0)
    assert torch.equal(runtime & stat, static_keep)


def test_the_nested_pruner_keeps_the_runtime_count_inside_the_static_set_by_the_mixed_rank():
    """--paper-pruner nested (--method both's pruner on the paper's gates): the static set stands as the static agent
    picked it; inside it, min(k_r, k_s) channels, the highest by lam spread(u_r) + (1 - lam) spread(u_s)."""
    gates, static, runtime_keep, static_keep = hand_made()
    runtime, stat = nest(runtime_keep, static_keep, gates, static, lam=1.0)
    assert torch.equal(stat, static_keep)
    # k_r = 4 of the static set {2,...,6}, by the runtime gate alone: 8, 7, 6, 5
    assert runtime[0].nonzero().flatten().tolist() == [2, 3, 4, 5]
    runtime, _ = nest(runtime_keep, static_keep, gates, static, lam=0.0)
    assert runtime[0].nonzero().flatten().tolist() == [2, 3, 4, 5]       # by u_s alone: 10, 9, 8, 7
    # a signed runtime gate that ranks channel 6 first (spread over the set: 1 for 6, 0 for 2) against u_s (2 first)
    signed = torch.tensor([[10.0, 9, -5, -4, -3, -2, -1, 3, 2, 1]])
    runtime, _ = nest(runtime_keep, static_keep, signed, static, lam=0.75)
    assert runtime[0].nonzero().flatten().tolist() == [3, 4, 5, 6]
    wide = keep_mask(gates, torch.tensor([0.9]))           # the runtime side asks for more than the static set holds
    runtime, _ = nest(wide, static_keep, gates, static, lam=0.5)
    assert torch.equal(runtime, static_keep)


def test_the_nested_layer_computes_min_k_r_k_s_channels_and_only_inside_the_static_set():
    torch.manual_seed(0)
    paper = PaperNet(build_model("small", (1, 8, 8)), pruner="nested").eval()
    x = torch.randn(4, 1, 8, 8)
    keep_r, keep_s = torch.tensor([0.2, 0.5, 0.7, 1.0]), torch.full((4,), 0.6)
    with torch.no_grad():
        _, active = paper.layer(0, x, keep_r, keep_s, 0.5)
        static = keep_mask(paper.static_scores(0).expand(4, -1), keep_s)
    channels = paper.net.gates[0].out_channels
    want = torch.minimum(torch.ceil(keep_r * channels - 1e-6), torch.ceil(keep_s * channels - 1e-6))
    assert active.sum(1).tolist() == want.tolist()
    assert not (active & ~static).any()


def test_gate_product_keeps_two_negative_gates_negative():
    r, s = torch.tensor([2.0, 2.0, -2.0, -2.0]), torch.tensor([3.0, -3.0, 3.0, -3.0])
    assert gate_product(r, s).tolist() == [6.0, -6.0, -6.0, -6.0]


def test_a_layer_outputs_relu_of_z_times_both_gates_plus_beta_on_the_channels_both_keep():
    torch.manual_seed(0)
    paper = PaperNet(build_model("small", (1, 8, 8))).eval()
    for beta in paper.beta:
        beta.data.normal_()
    x = torch.randn(3, 1, 8, 8)
    keep_r, keep_s = torch.tensor([0.5, 0.7, 1.0]), torch.full((3,), 0.6)
    y, active = paper.layer(0, x, keep_r, keep_s, 0.5)
    gate = paper.net.gates[0]
    with torch.no_grad():
        gates, scores = paper.runtime_gates(0, x), paper.static_scores(0)
        runtime, static, _ = resolve(keep_mask(gates, keep_r), keep_mask(scores.expand_as(gates), keep_s), gates,
                                     scores, 0.5)
        z = gate.bn(gate.conv(x))
        want = torch.relu(z * (gate_product(gates, scores) * active)[:, :, None, None]
                          + (paper.beta[0] * active)[:, :, None, None])
    assert torch.equal(active, runtime & static)
    assert torch.allclose(y, want)
    assert (y[~active] == 0).all()


def test_all_channels_kept_cost_the_dense_macs():
    paper = PaperNet(build_model("small", (1, 8, 8))).eval()
    ones = torch.ones(2, paper.num_layers)
    _, kept = paper(torch.randn(2, 1, 8, 8), ones, ones, 0.5)
    cost = CostModel(paper.net)
    assert cost.macs_ratio(kept, cost.widths).tolist() == [1.0, 1.0]


def test_the_taylor_term_is_taken_at_the_given_widths_so_a_filter_no_input_computes_scores_zero():
    torch.manual_seed(0)
    paper = PaperNet(build_model("small", (1, 8, 8))).eval()
    x, y = torch.randn(6, 1, 8, 8), torch.randint(0, 10, (6,))
    with torch.no_grad():       # which filters of layer 0 any input computes at those widths (before the refresh)
        keep = torch.full((6,), 0.3)
        _, active = paper.layer(0, paper.net.stem(x), keep, keep, 0.5)
    paper.refresh_features(x, y, 0.3, 0.3, 0.5)
    taylor = paper.features(0)[2]
    assert (taylor[~active.any(0)] == 0).all() and (taylor[active.any(0)] > 0).all()
    for t in range(paper.num_layers):       # each row over its layer's norm + 1e-3: distance and norm near 1
        norms = paper.features(t).norm(dim=1).tolist()
        assert norms[:2] == pytest.approx([1.0] * 2, abs=1e-2) and 0 <= norms[2] < 1


def test_refreshing_the_features_of_a_network_whose_loss_overflows_stops_the_run():
    paper = PaperNet(build_model("small", (1, 8, 8))).eval()
    with torch.no_grad():
        paper.beta[-1].fill_(float("inf"))
    with pytest.raises(FloatingPointError, match="loss is"):
        paper.refresh_features(torch.randn(4, 1, 8, 8), torch.zeros(4, dtype=torch.long), 0.5, 0.5, 0.5)


# ------------------------------------------------------------------------------------------------ observations

def test_the_block_observation_makes_one_linear_layer_a_per_layer_encoder():
    from rtsearch.rl.paper_env import Layout
    layout = Layout([1, 4], [4, 6], "blocks")
    assert layout.dim == (1 + 4) + (4 + 6) + 2 + 1
    pooled, gates = torch.tensor([[2.0, 3, 4, 5]]), torch.tensor([[1.0, -1, 0.5, 0, 7, 8]])
    obs = torch.from_numpy(layout.observe(1, pooled, gates, 0.4, 1))
    encoder = torch.nn.Linear(layout.dim, 3)
    # layer 1's own encoder: the columns of its slot, its one-hot's column as its bias, the budget's column
    own = obs[0, 5:15] @ encoder.weight[:, 5:15].T + encoder.weight[:, 16] + 0.4 * encoder.weight[:, 17] + encoder.bias
    assert torch.allclose(encoder(obs)[0], own)
    assert obs[0, :5].abs().sum() == 0 and obs[0, 15] == 0 and obs[0, 16] == 1
    padded = Layout([1, 4], [4, 6], "padded")
    assert padded.dim == 4 + 6 + 2 + 1


def test_the_static_observation_is_channels_in_plus_out_over_their_max():
    from rtsearch.rl.paper_env import static_observation
    assert static_observation([1, 16], [16, 32], 0, 2)[:, 0] == pytest.approx([17 / 48, 17 / 48])
    assert static_observation([1, 16], [16, 32], 1, 1).tolist() == [[1.0]]


# ------------------------------------------------------------------------------------------------ the env

def env_of(role: str, batch: int = 4, budget_form: str = "input", reward_form: str = "wall", under: str = "bonus"):
    from rtsearch.net.tradeoff import from_dense
    from rtsearch.rl.paper_env import PaperVectorEnv
    torch.manual_seed(0)
    net = build_model("small", (1, 8, 8))
    paper = from_dense(net, torch.randn(16, 1, 8, 8))
    cost = CostModel(net)
    width = paper_reward.uniform_width(cost, 0.3)
    macs_cap, param_cap = paper_reward.caps(cost, width)
    world = {"model": net.config(), "paper_state": paper.state_dict(), "static_keep": [0.7] * net.num_layers}
    config = {"world": world, "dataset": "digits", "seed": 0, "width": width, "macs_cap": macs_cap,
              "param_cap": param_cap, "dpratio": 0.5, "penalty_scale": 1.2, "penalty_temperature": 0.03,
              "mean_decay": 0.995, "role": role, "budget_form": budget_form, "reward_form": reward_form, "beta": 0.7,
              "under": under}
    return PaperVectorEnv(config, num_envs=batch), paper, cost, width, macs_cap


@pytest.mark.parametrize("budget_form, reward_form, under", [("input", "wall", "bonus"), ("mean", "wall", "bonus"),
                                                             ("input", "lagrangian", "bonus"),
                                                             ("input", "wall", "target")])
def test_the_runtime_env_pays_the_formula_once_at_the_last_layer_on_exact_macs(budget_form, reward_form, under):
    env, paper, cost, width, cap = env_of("runtime", budget_form=budget_form, reward_form=reward_form, under=under)
    obs, _ = env.reset(seed=1)
    assert obs.shape == (4, env.layout.dim)
    x = env.x[torch.from_numpy(np.random.default_rng(1).choice(len(env.x), 4, replace=False))]   # the env's batch
    actions = np.array([[-0.2], [0.0], [0.1], [0.6]], dtype=np.float32)
    rewards = []
    for t in range(paper.num_layers):
        obs, reward, terminated, _, _ = env.step(actions)
        rewards.append(reward)
    assert terminated.all() and all((r == 0).all() for r in rewards[:-1])
    keep_r = torch.from_numpy(paper_reward.keep_fraction(width, actions[:, 0])).float()
    with torch.no_grad():
        logits, kept = paper(x, keep_r[:, None].expand(4, paper.num_layers), torch.full((paper.num_layers,), 0.7),
                             0.5)
        y = env._y
        ce = torch.nn.functional.cross_entropy(logits, y, reduction="none").double().numpy()
    macs = cost.macs_ratio(kept, cost.widths).numpy()
    want = (paper_reward.lagrangian_reward(ce, macs, 0.7) if reward_form == "lagrangian"      # beta: the env's
            else paper_reward.runtime_reward(ce, ce.mean(), macs, cap, 1.2, 0.03, budget_form, under))  # m: 1st batch's
    assert rewards[-1] == pytest.approx(want, rel=1e-5)
    assert env.pop_stats()["macs_ratio"] == pytest.approx(macs.mean())


def test_inputs_whose_activations_overflow_reach_the_agent_as_zeros_and_stop_the_run():
    from rtsearch.rl.paper_loop import check_finite
    env, paper, _, _, _ = env_of("runtime")
    env.reset(seed=1)
    with torch.no_grad():
        env.net.beta[0][0] = float("inf")       # the channel the gate ranks first: every input computes it
    seen = [env.step(np.zeros((4, 1), dtype=np.float32)) for _ in range(paper.num_layers)]
    assert all(np.isfinite(obs).all() and np.isfinite(reward).all() for obs, reward, *_ in seen)
    stats = env.pop_stats()
    assert stats["overflowed"] == 1.0
    check_finite({"runtime": [{"overflowed": 0.0}], "static": []})
    with pytest.raises(FloatingPointError, match="100% of the runtime agent's inputs in RL batch 1"):
        check_finite({"runtime": [stats], "static": []})


def test_a_run_that_diverges_ends_with_exit_1_and_one_line(capsys):
    from rtsearch.cli import guarded

    @guarded
    def main(argv=None):
        raise FloatingPointError("validation metrics are not finite")
    with pytest.raises(SystemExit) as stop:
        main([])
    err = capsys.readouterr().err
    assert stop.value.code == 1 and err.count("\n") == 1
    assert "error: the run diverged: validation metrics are not finite;" in err and "--lr-finetune" in err


# ------------------------------------------------------------------------------------------------ end to end

@pytest.mark.slow
def test_a_paper_sweep_runs_end_to_end_and_logs_to_mlflow(tmp_path, monkeypatch):
    """rtsearch.tune --method paper --budget 0.255 on digits: one trial of one outer epoch (--max-iterations sets its
    --paper-epochs) (RL and backbone epochs
    fixed small by a space of its own), its iterations to the best recorded, its run logged to MLflow."""
    monkeypatch.setenv("RTSEARCH_CACHE", str(tmp_path / "cache"))
    (tmp_path / "tiny.yaml").write_text("paper_rl_epochs: 1\npaper_backbone_epochs: 1\npaper_batch: 512\n"
                                        "paper_dpratio: {distribution: uniform, low: 0.3, high: 0.7}\n")
    result = run_cli("rtsearch.tune", "--method", "paper", "--budget", "0.255", "--dataset", "digits", "--model",
                     "small", "--dense-epochs", "1", "--num-samples", "1", "--max-iterations", "1", "--num-cpus", "2",
                     "--no-baseline", "--space", str(tmp_path / "tiny.yaml"), "--name", "paper", cwd=tmp_path,
                     timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.load(open(tmp_path / "runs" / "sweeps" / "paper" / "summary.json"))
    assert summary["settings"]["method"] == "paper"
    sweep = summary["sweeps"]["0.255"]
    best = sweep["best"]
    assert best["status"] == "completed" and best["iterations"] == 1 and best["iters_to_best"] == 1
    assert sweep["sweep_iters_to_best"] == 1
    assert 0.3 <= best["config"]["paper_dpratio"] <= 0.7
    # its best model goes to the Model Registry (pickled: no fixed-shape form) unless it misses its budget on test
    assert "was not registered in MLflow" not in result.stdout + result.stderr, result.stdout[-3000:]
    assert ("[budget 0.255] best model (trial" in result.stdout and "models:/rtsearch-digits-small-paper@best-0_255"
            in result.stdout) or "[budget 0.255] best model not registered in MLflow: trial" in result.stdout, \
        result.stdout[-3000:]
    import mlflow
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlruns.db")
    runs = mlflow.search_runs(experiment_names=["paper"])
    children = runs[runs["tags.mlflow.parentRunId"].notna()]      # the trials, beside the sweep's parent run
    assert len(children) == 1 and float(children["params.paper_dpratio"].iloc[0]) == pytest.approx(
        best["config"]["paper_dpratio"])
    assert children["params.budget"].iloc[0] == "0.255" and children["params.paper_epochs"].iloc[0] == "1"


@pytest.mark.parametrize("recurrent", [True, False])
def test_the_deployed_model_answers_a_batch_as_it_answers_each_input(recurrent):
    """PaperModel: the runtime agent's greedy walk (its LSTM state carried across layers, or with
    --no-paper-recurrent none), batched or one input at a time, gives the same logits and channel counts (what the
    run's test figures and the deployed-model check rely on)."""
    import gymnasium as gym
    from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import DefaultPPOTorchRLModule
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from rtsearch.rl.paper_agents import model_config
    from rtsearch.rl.paper_env import Layout, layer_inputs
    from rtsearch.rl.paper_policy import PaperModel
    torch.manual_seed(0)
    net = build_model("small", (1, 8, 8))
    layout = Layout(layer_inputs(net), [g.out_channels for g in net.gates], "blocks")
    module = RLModuleSpec(module_class=DefaultPPOTorchRLModule,
                          observation_space=gym.spaces.Box(-np.inf, np.inf, (layout.dim,), np.float32),
                          action_space=gym.spaces.Box(-1.0, 1.0, (1,), np.float32),
                          model_config=model_config(net.num_layers, recurrent)).build()
    assert module.is_stateful() == recurrent
    with torch.no_grad():
        for p in module.parameters():       # an agent whose keep fractions differ between inputs
            p.normal_(0.0, 0.5)
    model = PaperModel(PaperNet(net), module, [0.6] * net.num_layers, 0.5, 0.5, "blocks")
    x = torch.randn(6, 1, 8, 8)
    logits, kept = model.counts(x)
    one = [model.run(x[i:i + 1]) for i in range(len(x))]
    assert torch.allclose(torch.cat([o[0] for o in one]), logits, atol=1e-5)
    assert [o[1] for o in one] == kept.tolist()
    assert torch.allclose(model(x), logits) and len(set(map(tuple, kept.tolist()))) > 1
    model.shift = -1.0      # the runtime keep's centre moved down: the first layer (whose input no shift changes)
    fewer = model.counts(x)[1]      # computes at most as many channels for every input, the network fewer in all
    assert (fewer[:, 0] <= kept[:, 0]).all() and fewer.sum() < kept.sum()
    model.shift = 1.0       # up to the clamp's ceiling on every layer: no fewer than the trained keep
    assert (model.counts(x)[1][:, 0] >= kept[:, 0]).all()


def test_the_merged_masks_compute_dpratio_k_r_plus_the_rest_of_k_s_whatever_the_overlap():
    """What the split implies: |R' & S'| = dpratio k_r + (1 - dpratio) k_s up to rounding, so an input's MACs depend
    on the two keep fractions alone; the overlap only decides which channels."""
    gen = torch.Generator().manual_seed(0)
    for dpratio in (0.0, 0.3, 0.5, 1.0):
        gates, static = torch.randn(200, 32, generator=gen), torch.randn(32, generator=gen)
        a_r, a_s = torch.rand(200, generator=gen) * 0.9 + 0.1, torch.full((200,), 0.45)
        runtime_keep, static_keep = keep_mask(gates, a_r), keep_mask(static.expand(200, -1), a_s)
        runtime, stat, _ = resolve(runtime_keep, static_keep, gates, static, dpratio)
        want = dpratio * runtime_keep.sum(1) + (1 - dpratio) * static_keep.sum(1)
        assert ((runtime & stat).sum(1) - want).abs().max() < 2.0       # each merged count is rounded up
