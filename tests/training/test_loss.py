"""StyleGAN2Loss on tiny networks: adversarial terms against the objective's direct float64 formula, gradients
against plain autograd references, R1 and path length against independently computed values, style mixing."""

import numpy as np
import pytest
import torch

from stylegan_rlo.model import networks
from stylegan_rlo.objectives import Objective
from stylegan_rlo.training.loss import StyleGAN2Loss
from torch_utils.ops import conv2d_gradfix, grid_sample_gradfix

RES, Z, BATCH = 16, 16, 4
OBJECTIVES = [("logistic", None), ("rooted", 8.0), ("rooted", 2.0)]


@pytest.fixture(autouse=True)
def training_like_setup():
    """One CPU thread (the machine is shared) and the gradfix ops the training loop enables; restored after."""
    saved = torch.get_num_threads(), conv2d_gradfix.enabled, grid_sample_gradfix.enabled
    torch.set_num_threads(1)
    conv2d_gradfix.enabled = grid_sample_gradfix.enabled = True
    yield
    torch.set_num_threads(saved[0])
    conv2d_gradfix.enabled, grid_sample_gradfix.enabled = saved[1], saved[2]


def make_nets(seed=0):
    """Tiny G and D with fp16 blocks declared (the loss must run them in fp32 on the CPU)."""
    torch.manual_seed(seed)
    G = networks.Generator(z_dim=Z, c_dim=0, w_dim=Z, img_resolution=RES, img_channels=3,
                           mapping_kwargs=dict(num_layers=2),
                           synthesis_kwargs=dict(channel_base=128, channel_max=16, num_fp16_res=2, conv_clamp=256))
    D = networks.Discriminator(c_dim=0, img_resolution=RES, img_channels=3, channel_base=128, channel_max=16,
                               num_fp16_res=2, conv_clamp=256, epilogue_kwargs=dict(mbstd_group_size=2))
    return G.train().requires_grad_(False), D.train().requires_grad_(False)


def inputs(seed=1):
    gen = torch.Generator().manual_seed(seed)
    real = torch.rand([BATCH, 3, RES, RES], generator=gen) * 2 - 1
    z = torch.randn([BATCH, Z], generator=gen)
    return real, z, torch.zeros([BATCH, 0])


def objective64(z, name, k):
    """The adversarial objective straight from its definition, in float64."""
    z = np.asarray(z, dtype=np.float64)
    if name == "logistic":
        return np.log1p(np.exp(-z))
    return k * ((1 + np.exp(-z)) ** (1 / k) - 1)


def objective_torch(z, name, k):
    return torch.nn.functional.softplus(-z) if name == "logistic" else k * ((1 + torch.exp(-z)) ** (1 / k) - 1)


def grads_of(module):
    return {n: p.grad.detach().clone() for n, p in module.named_parameters() if p.grad is not None}


def clear_grads(module):
    for p in module.parameters():
        p.grad = None


def assert_grads_close(actual, expected, rtol=1e-4, atol=1e-6):
    """Same gradients; a parameter missing on one side must have an all-zero gradient on the other."""
    assert actual and expected
    for name in actual.keys() | expected.keys():
        a = actual.get(name, torch.zeros_like(expected.get(name, actual.get(name))))
        e = expected.get(name, torch.zeros_like(a))
        torch.testing.assert_close(a, e, rtol=rtol, atol=atol, msg=name)


@pytest.mark.parametrize("name,k", OBJECTIVES)
def test_discriminator_main_terms_and_gradients(name, k):
    G, D = make_nets()
    real, z, c = inputs()
    loss = StyleGAN2Loss("cpu", G, D, objective=Objective(name, k), style_mixing_prob=0, r1_gamma=0)
    D.requires_grad_(True)
    torch.manual_seed(5)
    terms = loss.accumulate_gradients("Dmain", real, c, z, c, sync=True, gain=1)
    actual = grads_of(D)

    clear_grads(D)
    torch.manual_seed(5)  # same noise draws in the synthesis network
    with torch.no_grad():
        fake = G.synthesis(G.mapping(z, c, skip_w_avg_update=True), force_fp32=True)
    fake_logits = D(fake, c, force_fp32=True)
    real_logits = D(real, c, force_fp32=True)
    expected_terms = objective64(-fake_logits.detach(), name, k) + objective64(real_logits.detach(), name, k)
    np.testing.assert_allclose(terms["Loss/D/loss"].numpy(), expected_terms, rtol=2e-5, atol=1e-6)
    torch.testing.assert_close(terms["Loss/scores/real"], real_logits.detach())
    torch.testing.assert_close(terms["Loss/scores/fake"], fake_logits.detach())
    torch.testing.assert_close(terms["Loss/signs/real"], real_logits.detach().sign())
    (objective_torch(-fake_logits, name, k).mean() + objective_torch(real_logits, name, k).mean()).backward()
    assert_grads_close(actual, grads_of(D))
    assert not any(p.grad is not None for p in G.parameters())


@pytest.mark.parametrize("name,k", OBJECTIVES)
def test_generator_main_term_and_gradients(name, k):
    G, D = make_nets()
    _, z, c = inputs()
    loss = StyleGAN2Loss("cpu", G, D, objective=Objective(name, k), style_mixing_prob=0, pl_weight=0)
    G.requires_grad_(True)
    torch.manual_seed(7)
    terms = loss.accumulate_gradients("Gmain", None, None, z, c, sync=True, gain=3)
    actual = grads_of(G)

    clear_grads(G)
    torch.manual_seed(7)
    logits = D(G.synthesis(G.mapping(z, c, skip_w_avg_update=True), force_fp32=True), c, force_fp32=True)
    np.testing.assert_allclose(terms["Loss/G/loss"].numpy(), objective64(logits.detach(), name, k),
                               rtol=2e-5, atol=1e-6)
    (objective_torch(logits, name, k).mean() * 3).backward()  # gain multiplies the gradient
    assert_grads_close(actual, grads_of(G))
    assert not any(p.grad is not None for p in D.parameters())


def test_objective_switch_changes_only_the_adversarial_value():
    """Same networks and draws: logistic and rooted see the same logits but give different losses."""
    results = {}
    for name, k in [("logistic", None), ("rooted", 8.0)]:
        G, D = make_nets()
        _, z, c = inputs()
        loss = StyleGAN2Loss("cpu", G, D, objective=Objective(name, k), style_mixing_prob=0)
        G.requires_grad_(True)
        torch.manual_seed(3)
        results[name] = loss.accumulate_gradients("Gmain", None, None, z, c, sync=True, gain=1)
    torch.testing.assert_close(results["logistic"]["Loss/scores/fake"], results["rooted"]["Loss/scores/fake"])
    assert not torch.allclose(results["logistic"]["Loss/G/loss"], results["rooted"]["Loss/G/loss"])
    logits = results["rooted"]["Loss/scores/fake"].numpy()
    np.testing.assert_allclose(results["rooted"]["Loss/G/loss"].numpy(), objective64(logits, "rooted", 8.0),
                               rtol=2e-5)


def test_unknown_phase_and_objective_are_rejected():
    G, D = make_nets()
    with pytest.raises(ValueError, match="objective"):
        StyleGAN2Loss("cpu", G, D, objective="bogus")
    loss = StyleGAN2Loss("cpu", G, D)
    _, z, c = inputs()
    with pytest.raises(ValueError, match="phase"):
        loss.accumulate_gradients("Gfoo", None, None, z, c, sync=True, gain=1)


def r1_reference(D, real, c):
    """R1 penalty and its D gradient with plain PyTorch ops (native double backward)."""
    conv2d_gradfix.enabled = False
    try:
        x = real.detach().requires_grad_(True)
        logits = D(x, c, force_fp32=True)
        grad, = torch.autograd.grad(logits.sum(), x, create_graph=True)
        penalty = grad.square().sum([1, 2, 3])
        return penalty, logits
    finally:
        conv2d_gradfix.enabled = True


@pytest.mark.parametrize("gamma", [1.0, 10.0])
def test_r1_penalty_and_gradient_match_autograd_reference(gamma):
    G, D = make_nets()
    real, z, c = inputs()
    loss = StyleGAN2Loss("cpu", G, D, r1_gamma=gamma, style_mixing_prob=0)
    D.requires_grad_(True)
    terms = loss.accumulate_gradients("Dreg", real, c, z, c, sync=True, gain=16)
    actual = grads_of(D)
    assert "Loss/D/loss" not in terms  # Dreg alone has no adversarial term

    clear_grads(D)
    penalty, _ = r1_reference(D, real, c)
    torch.testing.assert_close(terms["Loss/r1_penalty"], penalty.detach(), rtol=1e-4, atol=1e-8)
    torch.testing.assert_close(terms["Loss/D/reg"], penalty.detach() * gamma / 2, rtol=1e-4, atol=1e-8)
    (penalty * gamma / 2).mean().mul(16).backward()
    assert_grads_close(actual, grads_of(D), rtol=1e-3, atol=1e-7)


def test_r1_goes_through_the_augmentation_pipe():
    augment = pytest.importorskip("stylegan_rlo.model.augment")
    G, D = make_nets()
    real, z, c = inputs()
    pipe = augment.AugmentPipe(**augment.AUGPIPE_SPECS["bgc"]).train().requires_grad_(False)
    pipe.p.copy_(torch.as_tensor(1.0))
    loss = StyleGAN2Loss("cpu", G, D, augment_pipe=pipe, r1_gamma=1, style_mixing_prob=0)
    D.requires_grad_(True)
    torch.manual_seed(11)
    terms = loss.accumulate_gradients("Dreg", real, c, z, c, sync=True, gain=1)
    assert all(torch.isfinite(p.grad).all() for p in D.parameters() if p.grad is not None)

    torch.manual_seed(11)  # same augmentation draws; first-order gradient w.r.t. the un-augmented reals
    x = real.detach().requires_grad_(True)
    grad, = torch.autograd.grad(D(pipe(x), c, force_fp32=True).sum(), x)
    torch.testing.assert_close(terms["Loss/r1_penalty"], grad.square().sum([1, 2, 3]), rtol=1e-4, atol=1e-8)


def test_path_length_penalty_and_gradient_match_reference():
    G, D = make_nets()
    _, z, c = inputs()
    loss = StyleGAN2Loss("cpu", G, D, style_mixing_prob=0, pl_weight=2, pl_batch_shrink=2, pl_decay=0.01)
    G.requires_grad_(True)
    torch.manual_seed(9)
    terms = loss.accumulate_gradients("Greg", None, None, z, c, sync=True, gain=4)
    actual = grads_of(G)
    pl_mean_after = float(loss.pl_mean)

    clear_grads(G)
    conv2d_gradfix.enabled = False
    try:
        torch.manual_seed(9)
        ws = G.mapping(z[:BATCH // 2], c[:BATCH // 2], skip_w_avg_update=True)
        img = G.synthesis(ws, force_fp32=True)
        noise = torch.randn_like(img) / np.sqrt(RES * RES)
        grad, = torch.autograd.grad((img * noise).sum(), ws, create_graph=True)
        lengths = grad.square().sum(2).mean(1).sqrt()
        pl_mean = 0.01 * lengths.mean()  # lerp from the initial running mean 0
        penalty = (lengths - pl_mean).square()
        (penalty * 2).mean().mul(4).backward()
    finally:
        conv2d_gradfix.enabled = True
    assert terms["Loss/pl_penalty"].shape == (BATCH // 2,)
    torch.testing.assert_close(terms["Loss/pl_penalty"], penalty.detach(), rtol=1e-4, atol=1e-9)
    torch.testing.assert_close(terms["Loss/G/reg"], 2 * penalty.detach(), rtol=1e-4, atol=1e-9)
    assert pl_mean_after == pytest.approx(float(pl_mean.detach()), rel=1e-5)
    assert_grads_close(actual, grads_of(G), rtol=1e-3, atol=1e-7)


def test_path_length_running_mean_carries_over_between_calls():
    """Two identical draws: the running mean moves from d*L to d*L + d*(L - d*L) (lerp with decay d)."""
    G, D = make_nets()
    _, z, c = inputs()
    loss = StyleGAN2Loss("cpu", G, D, style_mixing_prob=0, pl_decay=0.5)
    G.requires_grad_(True)
    means = []
    for _ in range(2):
        torch.manual_seed(21)
        loss.accumulate_gradients("Greg", None, None, z, c, sync=True, gain=1)
        means.append(float(loss.pl_mean))
    assert means[0] > 0
    assert means[1] == pytest.approx(1.5 * means[0], rel=1e-5)


@pytest.mark.parametrize("prob", [0.0, 1.0])
def test_style_mixing_switches_latents_at_one_cutoff(prob):
    G, D = make_nets()
    _, z, c = inputs()
    loss = StyleGAN2Loss("cpu", G, D, style_mixing_prob=prob)
    seen_cutoffs = set()
    for seed in range(6):
        torch.manual_seed(seed)
        with torch.no_grad():
            _, ws = loss.run_G(z, c, sync=True)
        base = G.mapping(z, c, skip_w_avg_update=True)
        same = [torch.allclose(ws[:, i], base[:, i]) for i in range(ws.shape[1])]
        cutoff = same.index(False) if False in same else ws.shape[1]
        assert all(same[:cutoff]) and not any(same[cutoff:])
        assert all(torch.allclose(ws[:, i], ws[:, cutoff]) for i in range(cutoff, ws.shape[1]))
        seen_cutoffs.add(cutoff)
    if prob == 0:
        assert seen_cutoffs == {G.num_ws}
    else:
        assert seen_cutoffs <= set(range(1, G.num_ws)) and len(seen_cutoffs) > 1
