"""Training loop and training step: phase schedule and lazy regularization, the gradient guard, EMA, statistics,
and tiny end-to-end runs on the CPU (resume from the fixtures, snapshot, resume again, killed runs, FreezeD, ADA)."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from stylegan_rlo.launch import launch_training
from stylegan_rlo.pickles import load_network_pkl
from stylegan_rlo.stats import StatsAccumulator, fan_out
from stylegan_rlo.training_config import setup_training_options
from stylegan_rlo.training_step import Phase, build_phases, ema_beta, run_phases, sanitize_gradients_, update_ema
from training_fixtures import TINY_COND, TINY_UNCOND, make_zip, one_thread, subprocess_env  # noqa: F401

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------------------------------------------------------
# Training step pieces.

def test_lazy_regularization_phases_use_the_mb_ratio_correction():
    G, D = torch.nn.Linear(2, 2), torch.nn.Linear(3, 3)
    phases = build_phases(G, D, dict(lr=0.002, betas=[0, 0.99], eps=1e-8), dict(lr=0.003, betas=[0.5, 0.9]), 4, 16)
    assert [(p.name, p.interval) for p in phases] == [("Gmain", 1), ("Greg", 4), ("Dmain", 1), ("Dreg", 16)]
    assert phases[0].opt is phases[1].opt and phases[2].opt is phases[3].opt
    g, d = phases[0].opt.param_groups[0], phases[2].opt.param_groups[0]
    assert g["lr"] == pytest.approx(0.002 * 4 / 5) and d["lr"] == pytest.approx(0.003 * 16 / 17)
    assert g["betas"] == pytest.approx((0.0, 0.99 ** 0.8)) and d["betas"] == pytest.approx((0.5 ** (16 / 17),
                                                                                             0.9 ** (16 / 17)))
    assert g["eps"] == 1e-8
    both = build_phases(G, D, dict(lr=0.002, betas=[0, 0.99]), dict(lr=0.002, betas=[0, 0.99]), None, None)
    assert [(p.name, p.interval, p.opt.param_groups[0]["lr"]) for p in both] == [("Gboth", 1, 0.002),
                                                                                  ("Dboth", 1, 0.002)]


class RecordingLoss:
    """Stands in for StyleGAN2Loss to observe what run_phases asks for (phase, rows, sync, gain, which z)."""

    def __init__(self):
        self.calls = []

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, sync, gain):
        self.calls.append((phase, real_img.shape[0], int(gen_z[0, 0]), sync, gain))


def test_run_phases_schedule_rounds_sync_and_gain():
    G, D = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    phases = build_phases(G, D, dict(lr=0.01, betas=[0, 0.99]), dict(lr=0.01, betas=[0, 0.99]), 4, 16)
    loss, stats = RecordingLoss(), StatsAccumulator()
    batch, batch_gpu = 8, 4
    gen_z = torch.arange(len(phases) * batch, dtype=torch.float32)[:, None].repeat(1, 3)  # row index as value
    schedule = {}
    for batch_idx in range(17):
        loss.calls.clear()
        run_phases(phases, loss, batch_idx, torch.zeros(batch, 3), torch.zeros(batch, 0), gen_z,
                   torch.zeros(len(phases) * batch, 0), batch_gpu, 1, stats.report)
        schedule[batch_idx] = sorted({c[0] for c in loss.calls})
        for phase_idx, phase in enumerate(phases):
            rounds = [c for c in loss.calls if c[0] == phase.name]
            if rounds:  # two rounds of batch_gpu rows, own slice of z, sync only on the last, gain = interval
                assert [(c[1], c[2], c[3], c[4]) for c in rounds] == [
                    (4, phase_idx * batch, False, phase.interval), (4, phase_idx * batch + 4, True, phase.interval)]
    for batch_idx, names in schedule.items():
        expected = ["Dmain", "Gmain"] + (["Greg"] if batch_idx % 4 == 0 else []) + \
            (["Dreg"] if batch_idx % 16 == 0 else [])
        assert names == sorted(expected), batch_idx
    assert not G.weight.requires_grad and not D.weight.requires_grad  # frozen again after each phase


def test_sanitize_gradients_replaces_and_counts_nonfinite_entries():
    a, b, c = (torch.nn.Parameter(torch.zeros(n)) for n in (4, 3, 2))
    a.grad = torch.tensor([1.0, float("nan"), float("inf"), -float("inf")])
    b.grad = torch.tensor([0.5, -2.0, 3.0])
    count = sanitize_gradients_([a, b, c])
    assert int(count) == 3
    assert a.grad.tolist() == [1.0, 0.0, 1e5, -1e5] and b.grad.tolist() == [0.5, -2.0, 3.0]
    assert int(sanitize_gradients_([c])) == 0


def test_ema_update_and_beta():
    G, G_ema = torch.nn.BatchNorm1d(3), torch.nn.BatchNorm1d(3)
    with torch.no_grad():
        G.weight.copy_(torch.tensor([1.0, 2.0, 3.0]))
        G_ema.weight.copy_(torch.tensor([3.0, 2.0, 1.0]))
        G.running_mean.fill_(7)
    update_ema(G_ema, G, 0.25)
    assert G_ema.weight.tolist() == pytest.approx([0.25 * 3 + 0.75 * 1, 2.0, 0.25 * 1 + 0.75 * 3])
    assert G_ema.running_mean.tolist() == [7, 7, 7]
    assert ema_beta(32, 0, 10, None) == pytest.approx(0.5 ** (32 / 10000))
    assert ema_beta(32, 1000, 10, 0.05) == pytest.approx(0.5 ** (32 / 50))  # ramp-up: half-life <= 5% of nimg
    assert ema_beta(32, 0, 10, 0.05) == pytest.approx(0.0, abs=1e-300)


def test_stats_accumulator_moments_and_filter():
    rnd = np.random.RandomState(0)
    a, b = rnd.randn(5, 1), rnd.randn(7)
    acc, signs = StatsAccumulator(), StatsAccumulator(names=("x",))
    report = fan_out(acc, signs)
    report("x", torch.tensor(a, dtype=torch.float32))
    report("x", torch.tensor(b, dtype=torch.float32))
    report("y", torch.tensor([2.0]))
    result = acc.reduce()
    both = np.concatenate([a.ravel(), b])
    assert result["x"]["num"] == 12
    assert result["x"]["mean"] == pytest.approx(both.mean(), rel=1e-6)
    assert result["x"]["std"] == pytest.approx(both.std(), rel=1e-5)
    assert result["y"] == dict(num=1, mean=2.0, std=0.0)
    assert set(signs.reduce()) == {"x"}
    assert acc.reduce() == {}  # reduce starts afresh


# ---------------------------------------------------------------------------------------------------------------
# End to end on tiny networks.

def train(tmp_path, data, resume, kimg, outdir="runs", **opts):
    """Set up and run a tiny CPU training in-process; returns the run directory."""
    opts = dict(dict(device="cpu", workers=0, batch=4, tick=0.004, snap=1), **opts)
    run_desc, options = setup_training_options(data=str(data), resume=str(resume), kimg=kimg, **opts)
    return launch_training(run_desc, options, str(tmp_path / outdir), show_progress=False, image_grid=(4, 2))


def read_stats(run_dir):
    with open(os.path.join(run_dir, "stats.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def snapshot_of(run_dir):
    names = sorted(n for n in os.listdir(run_dir) if n.startswith("network-snapshot-") and n.endswith(".pkl"))
    return os.path.join(run_dir, names[-1])


@pytest.mark.parametrize("loss,k", [("logistic", None), ("rooted", 8.0)])
def test_resume_official_pickle_then_our_snapshot(tmp_path, one_thread, loss, k):
    data = make_zip(tmp_path / "dogs.zip", num=8)
    run1 = train(tmp_path, data, TINY_UNCOND, kimg=0.016, loss=loss, k=k, p=0.2, target=0.6)
    expected_name = "00000-dogs-auto-" + ("logistic" if loss == "logistic" else "rooted8")
    assert os.path.basename(run1) == expected_name
    for name in ("log.txt", "training_options.json", "stats.jsonl", "reals.png", "fakes_init.png",
                 "fakes000000.png", "network-snapshot-000000.pkl"):
        assert os.path.isfile(os.path.join(run1, name)), name
    with open(os.path.join(run1, "training_options.json"), encoding="utf-8") as f:
        options = json.load(f)
    assert options["loss"] == loss and options["k"] == k
    assert "tick 0" in open(os.path.join(run1, "log.txt"), encoding="utf-8").read()

    stats1 = read_stats(run1)  # a fresh start reports after its first iteration, then every 4 images
    assert [s["Progress/kimg"]["mean"] for s in stats1] == pytest.approx([0.004, 0.008, 0.012, 0.016])
    assert [s["Progress/tick"]["mean"] for s in stats1] == [0, 1, 2, 3]
    for key in ("Loss/D/loss", "Loss/G/loss", "Loss/scores/real", "Loss/scores/fake", "Loss/signs/real",
                "Loss/r1_penalty", "Loss/pl_penalty", "Progress/augment", "Timing/sec_per_kimg",
                "Grad/nonfinite_G", "Grad/nonfinite_D", "Resources/cpu_mem_gb"):
        assert key in stats1[0] or key in stats1[1], key
    assert stats1[0]["Grad/nonfinite_G"]["mean"] == 0

    snap1 = load_network_pkl(snapshot_of(run1))
    assert snap1["progress"]["cur_nimg"] == 16 and snap1["progress"]["cur_tick"] == 3
    assert snap1["progress"]["batch_idx"] == 4
    p1 = snap1["progress"]["augment_p"]
    assert p1 == pytest.approx(float(snap1["augment_pipe"].p))
    # ADA adjusted once (after iteration 4) by batch * interval / (ada_kimg * 1000) = 16 / 1e5 (resume: 100 kimg).
    assert abs(p1 - 0.2) == pytest.approx(16 / 1e5, rel=1e-3)
    official = load_network_pkl(TINY_UNCOND)
    assert not torch.equal(snap1["G"].synthesis.b32.conv1.weight, official["G"].synthesis.b32.conv1.weight)

    # Resuming our snapshot continues kimg, tick, batch index and the ADA p (--p only sets a fresh start).
    run2 = train(tmp_path, data, snapshot_of(run1), kimg=0.024, loss=loss, k=k, p=0.5)
    assert os.path.basename(run2).startswith("00001-")
    stats2 = read_stats(run2)
    assert [s["Progress/kimg"]["mean"] for s in stats2] == pytest.approx([0.020, 0.024])
    assert [s["Progress/tick"]["mean"] for s in stats2] == [4, 5]
    assert stats2[0]["Progress/augment"]["mean"] == pytest.approx(p1)
    snap2 = load_network_pkl(snapshot_of(run2))
    assert snap2["progress"]["cur_nimg"] == 24 and snap2["progress"]["batch_idx"] == 6
    assert abs(snap2["progress"]["augment_p"] - p1) <= 16 / 1e5 + 1e-7


def test_conditional_resume_with_freezed_mirror_and_subset(tmp_path, one_thread):
    data = make_zip(tmp_path / "pets.zip", num=9, classes=3)
    run = train(tmp_path, data, TINY_COND, kimg=0.008, loss="logistic", cond=True, freezed=2, mirror=True, subset=6,
                aug="noaug")
    snap = load_network_pkl(snapshot_of(run))
    official = load_network_pkl(TINY_COND)
    assert snap["G"].c_dim == 3 and snap["augment_pipe"] is None
    assert snap["training_set_kwargs"]["use_labels"] and snap["training_set_kwargs"]["xflip"]
    assert snap["training_set_kwargs"]["max_size"] == 6
    # FreezeD: the first two D layers (b32.fromrgb, b32.conv0) are buffers now and keep the pickle's values.
    D, D0 = snap["D"], official["D"]
    for name in ("b32.fromrgb.weight", "b32.conv0.weight"):
        assert name in dict(D.named_buffers())
        torch.testing.assert_close(dict(D.named_buffers())[name], dict(D0.named_parameters())[name])
    assert "b32.conv1.weight" in dict(D.named_parameters())
    assert not torch.equal(D.b32.conv1.weight, D0.b32.conv1.weight)
    z, c = torch.randn([3, snap["G_ema"].z_dim]), torch.eye(3)
    img = snap["G_ema"](z, c, noise_mode="const", force_fp32=True)
    assert img.shape == (3, 3, 32, 32) and torch.isfinite(img).all()


def test_killed_run_resumes_from_its_last_snapshot(tmp_path, one_thread):
    data = make_zip(tmp_path / "dogs.zip", num=8)
    outdir = tmp_path / "killed"
    script = (
        "import sys\n"
        "from stylegan_rlo.training_config import setup_training_options\n"
        "from stylegan_rlo.launch import launch_training\n"
        f"desc, opts = setup_training_options(data={str(data)!r}, resume={str(TINY_UNCOND)!r}, device='cpu', "
        "workers=0, batch=4, kimg=1000, tick=0.004, snap=1)\n"
        f"launch_training(desc, opts, {str(outdir)!r}, show_progress=False, image_grid=(2, 2))\n")
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=subprocess_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        stats_path = None
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            runs = os.listdir(outdir) if outdir.is_dir() else []
            stats_path = os.path.join(outdir, runs[0], "stats.jsonl") if runs else None
            if stats_path and os.path.exists(stats_path) and len(open(stats_path).readlines()) >= 3:
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        proc.send_signal(signal.SIGKILL)  # no chance to clean up: whatever is on disk must be usable
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
    run_dir = os.path.dirname(stats_path)
    snap = load_network_pkl(snapshot_of(run_dir))
    start = snap["progress"]["cur_nimg"]
    assert start >= 12 and start % 4 == 0
    run2 = train(tmp_path, data, snapshot_of(run_dir), kimg=(start + 4) / 1000, outdir="killed")
    stats = read_stats(run2)
    assert [s["Progress/kimg"]["mean"] for s in stats] == pytest.approx([(start + 4) / 1000])
    assert load_network_pkl(snapshot_of(run2))["progress"]["cur_nimg"] == start + 4
