"""StyleGAN2Loss with the hinge and least squares objectives, LeCam regularization and DiffAugment: per-sample terms
against float64 formulas, the LeCam anchors against a naive float64 weighted average over several D passes,
gradients against plain autograd references, DiffAugment on every D input (R1 included), the anchors' state."""

import numpy as np
import pytest
import torch
from test_loss import assert_grads_close, clear_grads, grads_of, inputs, make_nets

from stylegan_rlo.model.diffaugment import DiffAugment
from stylegan_rlo.objectives import Objective
from stylegan_rlo.training.loss import LeCamAnchors, StyleGAN2Loss
from torch_utils.ops import conv2d_gradfix


@pytest.fixture(autouse=True)
def gradfix_like_training():
    """One CPU thread and the gradfix ops on, as in training (restored after)."""
    saved = torch.get_num_threads(), conv2d_gradfix.enabled
    torch.set_num_threads(1)
    conv2d_gradfix.enabled = True
    yield
    torch.set_num_threads(saved[0])
    conv2d_gradfix.enabled = saved[1]


def terms64(name, real, fake):
    """D real + D fake and G terms straight from the definitions, float64 (hinge; lsgan with labels 1, -1, 0)."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    if name == "hinge":
        return np.maximum(0, 1 - real) + np.maximum(0, 1 + fake), -fake
    return (real - 1) ** 2 / 2 + (fake + 1) ** 2 / 2, fake ** 2 / 2


def terms_torch(name, real, fake):
    """The same with torch ops, for the gradient references."""
    if name == "hinge":
        return torch.clamp(1 - real, min=0) + torch.clamp(1 + fake, min=0), -fake
    return (real - 1) ** 2 / 2 + (fake + 1) ** 2 / 2, fake ** 2 / 2


def generate(G, z, c, seed):
    torch.manual_seed(seed)  # the synthesis noise the loss drew
    return G.synthesis(G.mapping(z, c, skip_w_avg_update=True), force_fp32=True)


@pytest.mark.parametrize("name", ["hinge", "lsgan"])
def test_hinge_and_least_squares_terms_and_gradients(name):
    G, D = make_nets()
    real, z, c = inputs()
    loss = StyleGAN2Loss("cpu", G, D, objective=name, style_mixing_prob=0, r1_gamma=0, pl_weight=0)
    D.requires_grad_(True)
    torch.manual_seed(5)
    d_terms = loss.accumulate_gradients("Dmain", real, c, z, c, sync=True, gain=2)
    d_grads = grads_of(D)
    clear_grads(D)
    D.requires_grad_(False)
    G.requires_grad_(True)
    torch.manual_seed(6)
    g_terms = loss.accumulate_gradients("Gmain", None, None, z, c, sync=True, gain=1)
    g_grads = grads_of(G)

    clear_grads(G)
    G.requires_grad_(False)
    D.requires_grad_(True)
    with torch.no_grad():
        fake = generate(G, z, c, 5)
    fake_logits, real_logits = D(fake, c, force_fp32=True), D(real, c, force_fp32=True)
    d_want, _ = terms64(name, real_logits.detach(), fake_logits.detach())
    np.testing.assert_allclose(d_terms["Loss/D/loss"].numpy(), d_want, rtol=1e-5, atol=1e-6)
    terms_torch(name, real_logits, fake_logits)[0].mean().mul(2).backward()
    assert_grads_close(d_grads, grads_of(D))

    D.requires_grad_(False)
    G.requires_grad_(True)
    logits = D(generate(G, z, c, 6), c, force_fp32=True)
    np.testing.assert_allclose(g_terms["Loss/G/loss"].numpy(), terms64(name, logits.detach(), logits.detach())[1],
                               rtol=1e-5, atol=1e-6)
    terms_torch(name, logits, logits)[1].mean().backward()
    assert_grads_close(g_grads, grads_of(G))


def anchors64(means, decay):
    """Zero-debiased EMA after each update: sum_i decay^(t-i) x_i / sum_i decay^(t-i), from the definition."""
    out = []
    for t in range(1, len(means) + 1):
        weights = np.array([decay ** (t - i) for i in range(1, t + 1)], dtype=np.float64)
        out.append(float(np.dot(weights, means[:t]) / weights.sum()))
    return out


@pytest.mark.parametrize("name,k", [("logistic", None), ("rooted", 2.0), ("hinge", None)])
def test_lecam_penalty_and_anchors_match_naive_float64_over_several_passes(name, k):
    G, D = make_nets()
    weight, decay = 0.3, 0.9
    loss = StyleGAN2Loss("cpu", G, D, objective=Objective(name, k), style_mixing_prob=0, r1_gamma=0,
                         lecam_weight=weight, lecam_decay=decay)
    D.requires_grad_(True)
    real_means, fake_means = [], []
    for step in range(4):
        real, z, c = inputs(seed=10 + step)
        torch.manual_seed(step)
        terms = loss.accumulate_gradients("Dmain", real, c, z, c, sync=True, gain=1)
        real_logits = terms["Loss/scores/real"].double().numpy()
        fake_logits = terms["Loss/scores/fake"].double().numpy()
        real_means.append(real_logits.mean())
        fake_means.append(fake_logits.mean())
        a_real, a_fake = anchors64(real_means, decay)[-1], anchors64(fake_means, decay)[-1]
        assert float(loss.lecam.real) == pytest.approx(a_real, rel=1e-5, abs=1e-7)
        assert float(loss.lecam.fake) == pytest.approx(a_fake, rel=1e-5, abs=1e-7)
        want = np.maximum(0, real_logits - a_fake) ** 2 + np.maximum(0, a_real - fake_logits) ** 2
        np.testing.assert_allclose(terms["Loss/lecam_penalty"].numpy(), want, rtol=1e-4, atol=1e-7)
    assert loss.lecam.updates == 4
    # The first pass's anchors are its own means (zero-debiased); a plain EMA from 0 would be 10x smaller here.
    assert anchors64(real_means[:1], decay) == [real_means[0]]


def test_lecam_gradient_is_the_weighted_penalty_with_the_anchors_held_fixed():
    G, D = make_nets()
    weight = 5.0  # large, so that the LeCam part of the gradient is not lost in the tolerance
    loss = StyleGAN2Loss("cpu", G, D, objective="logistic", style_mixing_prob=0, r1_gamma=0, lecam_weight=weight)
    loss.lecam.real.fill_(0.5)  # anchors that make both relu terms active for some samples
    loss.lecam.fake.fill_(-0.5)
    loss.lecam.updates = 3
    real, z, c = inputs()
    D.requires_grad_(True)
    torch.manual_seed(5)
    terms = loss.accumulate_gradients("Dmain", real, c, z, c, sync=True, gain=1)
    actual = grads_of(D)
    assert float(terms["Loss/lecam_penalty"].sum()) > 0

    clear_grads(D)
    with torch.no_grad():
        fake = generate(G, z, c, 5)
    fake_logits, real_logits = D(fake, c, force_fp32=True), D(real, c, force_fp32=True)
    w = (1 - 0.99) / (1 - 0.99 ** 4)  # the fourth update's weight
    a_real = 0.5 + w * (float(real_logits.detach().mean()) - 0.5)
    a_fake = -0.5 + w * (float(fake_logits.detach().mean()) + 0.5)
    penalty = torch.clamp(real_logits - a_fake, min=0) ** 2 + torch.clamp(a_real - fake_logits, min=0) ** 2
    total = torch.nn.functional.softplus(-real_logits) + torch.nn.functional.softplus(fake_logits) + weight * penalty
    total.mean().backward()
    assert_grads_close(actual, grads_of(D))
    # Without the LeCam part the gradients differ (the check above can fail).
    clear_grads(D)
    fake_logits, real_logits = D(fake, c, force_fp32=True), D(real, c, force_fp32=True)
    (torch.nn.functional.softplus(-real_logits) + torch.nn.functional.softplus(fake_logits)).mean().backward()
    with pytest.raises(AssertionError):
        assert_grads_close(actual, grads_of(D))


def test_lecam_is_off_by_default_and_only_in_the_main_d_phase():
    G, D = make_nets()
    assert StyleGAN2Loss("cpu", G, D).lecam is None
    assert StyleGAN2Loss("cpu", G, D, lecam_weight=0).lecam is None
    loss = StyleGAN2Loss("cpu", G, D, lecam_weight=1, style_mixing_prob=0, r1_gamma=1)
    real, z, c = inputs()
    D.requires_grad_(True)
    assert "Loss/lecam_penalty" not in loss.accumulate_gradients("Dreg", real, c, z, c, sync=True, gain=1)
    assert loss.lecam.updates == 0
    assert "Loss/lecam_penalty" in loss.accumulate_gradients("Dboth", real, c, z, c, sync=True, gain=1)
    assert loss.lecam.updates == 1


def test_lecam_anchor_decay_one_is_the_plain_mean():
    anchors = LeCamAnchors(1.0, torch.device("cpu"))
    for value in (2.0, 4.0, 9.0):
        anchors.update(torch.full([3, 1], value), torch.full([3, 1], -value))
    assert float(anchors.real) == pytest.approx(5.0) and float(anchors.fake) == pytest.approx(-5.0)


def test_lecam_anchor_state_round_trip_and_refusals():
    a = LeCamAnchors(0.99, torch.device("cpu"))
    a.update(torch.tensor([[1.0], [2.0]]), torch.tensor([[-3.0], [0.0]]))
    b = LeCamAnchors(0.99, torch.device("cpu"))
    b.load_state_dict(a.state_dict())
    assert (float(b.real), float(b.fake), b.updates) == (1.5, -1.5, 1)
    for bad in (dict(real=torch.tensor(float("nan")), fake=torch.tensor(0.0), updates=1),
                dict(real=torch.zeros(3), fake=torch.tensor(0.0), updates=1),
                dict(real=torch.tensor(0.0), fake=torch.tensor(0.0), updates=-1)):
        with pytest.raises(ValueError):
            b.load_state_dict(bad)


def test_diffaugment_transforms_every_d_input_and_r1_differentiates_through_it():
    G, D = make_nets()
    policy = "color,translation,cutout"
    real, z, c = inputs()
    loss = StyleGAN2Loss("cpu", G, D, style_mixing_prob=0, r1_gamma=1, diffaugment=policy)
    D.requires_grad_(True)
    torch.manual_seed(11)
    terms = loss.accumulate_gradients("Dboth", real, c, z, c, sync=True, gain=1)

    augment = DiffAugment(policy)
    torch.manual_seed(11)  # the same draws in the same order: G's noise, T(fake), T(real)
    with torch.no_grad():
        fake = G.synthesis(G.mapping(z, c, skip_w_avg_update=True), force_fp32=True)
        fake_logits = D(augment(fake), c, force_fp32=True)
    x = real.detach().requires_grad_(True)
    real_logits = D(augment(x), c, force_fp32=True)
    (grad,) = torch.autograd.grad(real_logits.sum(), x)
    torch.testing.assert_close(terms["Loss/scores/fake"], fake_logits)
    torch.testing.assert_close(terms["Loss/scores/real"], real_logits.detach())
    torch.testing.assert_close(terms["Loss/r1_penalty"], grad.square().sum([1, 2, 3]), rtol=1e-4, atol=1e-8)
    # And they differ from D's outputs on the plain images.
    with torch.no_grad():
        assert not torch.allclose(terms["Loss/scores/real"], D(real, c, force_fp32=True))


def test_diffaugment_passes_gradients_to_g():
    G, D = make_nets()
    _, z, c = inputs()
    loss = StyleGAN2Loss("cpu", G, D, style_mixing_prob=0, pl_weight=0, diffaugment="translation,cutout")
    G.requires_grad_(True)
    torch.manual_seed(2)
    loss.accumulate_gradients("Gmain", None, None, z, c, sync=True, gain=1)
    grads = grads_of(G)
    assert grads and all(torch.isfinite(g).all() for g in grads.values())
    assert any(float(g.abs().sum()) > 0 for name, g in grads.items() if name.startswith("synthesis"))
