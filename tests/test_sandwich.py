"""Fine-tuning over widths (`--finetune sandwich`): the narrow paths learn, and BatchNorm statistics are
recomputed under the policy that will be deployed."""
import pytest
import torch

from rtsearch import data
from rtsearch.net.cost import CostModel
from rtsearch.net.models import build_model
from rtsearch.net.sandwich import fit_sandwich, recalibrate_bn
from rtsearch.net.supervised import evaluate, fit, fixed_policy, policy_forward


def test_recalibrated_statistics_are_those_of_the_deployed_policy():
    torch.manual_seed(0)
    net = build_model("small", (1, 8, 8))
    x = torch.randn(64, 1, 8, 8)
    policy = fixed_policy(torch.full((net.num_layers,), 0.5))
    recalibrate_bn(net, x, None, policy, batches_of=64, max_batches=1)
    seen = {}
    hook = net.gates[2].bn.register_forward_pre_hook(lambda m, args: seen.setdefault("input", args[0].detach()))
    net.eval()
    with torch.no_grad():
        policy_forward(net, x, None, policy)
    hook.remove()
    # (the eval-mode walk normalises earlier layers with their running statistics: close, not identical)
    assert torch.allclose(net.gates[2].bn.running_mean, seen["input"].mean(dim=(0, 2, 3)), atol=1e-3)
    widest = net.gates[2].bn.running_mean.clone()
    recalibrate_bn(net, x, None, fixed_policy(torch.zeros(net.num_layers)), batches_of=64, max_batches=1)
    assert not torch.allclose(net.gates[2].bn.running_mean, widest, atol=1e-2)   # another policy, other statistics


@pytest.mark.slow
def test_sandwich_fine_tuning_teaches_the_narrow_widths():
    torch.manual_seed(0)
    splits = data.load("digits", 0)
    net = build_model("small", splits.input_shape, splits.num_classes)
    cost = CostModel(net)
    narrow = fixed_policy(torch.full((net.num_layers,), 0.75))
    fit(net, *splits.train, 4, 2e-3, seed=0)                                 # a dense start
    before = evaluate(net, cost, *splits.val, None, narrow)["accuracy"]
    fit_sandwich(net, *splits.train, 3, 1e-3, None, narrow, p_max=0.95, seed=0)
    after = evaluate(net, cost, *splits.val, None, narrow)["accuracy"]
    widest = evaluate(net, cost, *splits.val, None, fixed_policy(torch.zeros(net.num_layers)))["accuracy"]
    assert after > before + 0.1, (before, after)
    assert widest > 0.5


def test_a_range_runs_sandwich_trains_the_given_ends_and_leaves_statistics_to_the_caller():
    torch.manual_seed(0)
    splits = data.load("digits", 0)
    net = build_model("small", splits.input_shape, splits.num_classes)
    walked = {"top": 0, "bottom": 0, "agent": 0}

    def counted(name, ratio):
        inner = fixed_policy(torch.full((net.num_layers,), ratio))

        def policy(walk):
            walked[name] += walk.t == 0
            return inner(walk)
        return policy

    x, y = splits.train[0][:128], splits.train[1][:128]
    batches = -(-len(x) // 64)
    for recalibrate, recalibration_walks in ((False, 0), (True, 1)):   # recalibrate_bn walks 256 images at a time
        walked.update(top=0, bottom=0, agent=0)
        fit_sandwich(net, x, y, 1, 1e-3, None, counted("agent", 0.5), p_max=0.95, widest=counted("top", 0.2),
                     narrowest=counted("bottom", 0.8), recalibrate=recalibrate)
        assert walked == {"top": batches, "bottom": batches, "agent": batches + recalibration_walks}


@pytest.mark.slow
def test_a_dense_teacher_is_distilled_from_and_left_unchanged():
    torch.manual_seed(0)
    splits = data.load("digits", 0)
    teacher = build_model("small", splits.input_shape, splits.num_classes)
    fit(teacher, *splits.train, 4, 2e-3, seed=0)
    frozen = {k: v.clone() for k, v in teacher.state_dict().items()}
    x, y = splits.train[0][:256], splits.train[1][:256]
    soft = torch.randint(0, splits.num_classes, y.shape)      # labels the teacher never saw: only it can teach

    def agreement(net):
        net.eval()
        with torch.no_grad():
            a, _ = policy_forward(net, x, None, fixed_policy(torch.zeros(net.num_layers)))
            b, _ = policy_forward(teacher, x, None, fixed_policy(torch.zeros(net.num_layers)))
        return float((a.argmax(1) == b.argmax(1)).float().mean())

    students = {}
    for name, given in (("alone", None), ("taught", teacher)):
        torch.manual_seed(1)
        students[name] = build_model("small", splits.input_shape, splits.num_classes)
        fit_sandwich(students[name], x, soft, 3, 2e-3, None, fixed_policy(torch.full((teacher.num_layers,), 0.5)),
                     p_max=0.95, seed=0, teacher=given)
    assert all(torch.equal(v, frozen[k]) for k, v in teacher.state_dict().items())
    assert agreement(students["taught"]) > agreement(students["alone"]) + 0.1
