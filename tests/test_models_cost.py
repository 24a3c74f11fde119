import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from rtsearch.net.cost import CostModel
from rtsearch.net.models import MODELS, _plain, build_model
from rtsearch.net.pruning import keep_count

SHAPES = {"small": (1, 28, 28), "mcifarnet": (3, 32, 32), "resnet20": (3, 32, 32), "resnet56": (3, 32, 32),
          "resnet18": (3, 224, 224)}


@pytest.mark.parametrize("name", MODELS)
def test_dense_macs_equal_torch_flop_counter(name):
    net = build_model(name, SHAPES[name], 10).eval()
    with FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, *SHAPES[name]))
    assert CostModel(net).dense_macs * 2 == counter.get_total_flops()
    assert CostModel(net).params(CostModel(net).widths) == sum(p.numel() for p in net.parameters())


def test_mcifarnet_layout():
    net = build_model("mcifarnet", (3, 32, 32), 10)
    assert [g.out_channels for g in net.gates] == [64, 64, 128, 128, 128, 192, 192, 192]
    assert [g.conv.stride[0] for g in net.gates] == [1, 1, 2, 1, 1, 2, 1, 1]


def test_masked_macs_by_hand_on_two_layer_net():
    # image 1x4x4 -> conv(1->4) -> conv(4->6) -> GAP -> linear(6->2); 3x3 convs, stride 1, padding 1.
    net = _plain("tiny", (1, 4, 4), 2, [4, 6], [1, 1], True).eval()
    cost = CostModel(net)
    static = torch.tensor([0.5, 0.0])            # layer 0 keeps 2 of 4 channels for good
    runtime = torch.tensor([[0.0, 0.5], [0.5, 0.9]])
    _, walk = net.forward_walk(torch.randn(2, 1, 4, 4), static, runtime)
    assert walk.static_kept.tolist() == [2, 6]
    assert walk.runtime_kept.tolist() == [[2, 3], [1, 1]]
    per_pixel = 9 * 16

    def by_hand(k0, k1):
        conv0 = 1 * k0 * per_pixel
        conv1 = k0 * k1 * per_pixel
        predictors = 1 * 2 + k0 * 6        # in: image / layer-0 kept; out: static keep sets (2, 6)
        head = k1 * 2
        return conv0 + conv1 + predictors + head

    dense = 1 * 4 * per_pixel + 4 * 6 * per_pixel + 1 * 4 + 4 * 6 + 6 * 2
    assert cost.dense_macs == dense
    macs = cost.macs(walk.runtime_kept, walk.static_kept)
    assert macs.tolist() == [by_hand(2, 3), by_hand(1, 1)]


@pytest.mark.parametrize("name", ["small", "resnet20"])
def test_runtime_keep_set_inside_static_keep_set(name):
    torch.manual_seed(0)
    net = build_model(name, SHAPES[name], 10).eval()
    for g in net.gates:
        g.static_importance.data.uniform_(0, 1)
    walk = net.walk(torch.randn(3, *SHAPES[name]), torch.full((net.num_layers,), 0.5))
    while not walk.done:
        static_keep = walk.static_keeps[walk.t]
        assert (walk.importance()[:, ~static_keep] == 0).all()
        walk.step(torch.tensor([0.0, 0.5, 0.999]))
    kept, static = walk.runtime_kept, walk.static_kept
    assert (kept[0] == static).all()
    assert (kept[2] == 1).all()  # at least one channel is always kept
    assert (kept[1] == keep_count(torch.tensor(0.5), static)).all()


def test_gating_zeroes_pruned_channels():
    net = build_model("small", (1, 28, 28), 10).eval()
    x = torch.randn(2, 1, 28, 28)
    gate = net.gates[0]
    keep_static = gate.static_keep(0.5)
    y, keep = gate(x, keep_static, torch.tensor([0.5, 0.0]), lam=0.5)
    assert (y[:, ~keep_static] == 0).all()
    assert (y[0][~keep[0]] == 0).all() and keep[0].sum() == 4 and keep[1].sum() == 8
