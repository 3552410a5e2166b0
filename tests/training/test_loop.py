"""Training loop and training step: phase schedule and lazy regularization, the gradient guard, EMA, statistics,
and tiny end-to-end runs on the CPU (resume from the fixtures, snapshot, resume again, killed runs, FreezeD, ADA)."""

import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
import torch
from training_fixtures import REPO, TINY_COND, TINY_UNCOND, ddp_rank_worker, make_zip, subprocess_env

from stylegan_rlo.checkpoints import pickles
from stylegan_rlo.checkpoints.pickles import load_network_pkl
from stylegan_rlo.data.dataset import DatasetError, ImageFolderDataset
from stylegan_rlo.training.config import setup_training_options
from stylegan_rlo.training.launch import launch_training, prepare_run_dir
from stylegan_rlo.training.data_loading import next_batch
from stylegan_rlo.training.stats import StatsAccumulator, fan_out
from stylegan_rlo.training.step import Batch, TrainingStep, build_phases, ema_beta, sanitize_gradients_, update_ema

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
    """Stands in for StyleGAN2Loss to observe what TrainingStep.run_phases asks for (phase, rows, sync, gain, z)."""

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
    step = TrainingStep(phases, loss, G=G, G_ema=G, batch_gpu=batch_gpu, num_gpus=1, ema_kimg=10, ema_rampup=None,
                        report=stats.report)
    schedule = {}
    for batch_idx in range(17):
        loss.calls.clear()
        step.run_phases(Batch(torch.zeros(batch, 3), torch.zeros(batch, 0), gen_z, torch.zeros(len(phases) * batch, 0)),
                        batch_idx)
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

def train(tmp_path, data, resume, kimg, outdir="runs", show_progress=False, **opts):
    """Set up and run a tiny CPU training in-process; returns the run directory."""
    opts = dict(dict(device="cpu", workers=0, batch=4, tick=0.004, snap=1), **opts)
    run_desc, options = setup_training_options(data=str(data), resume=str(resume), kimg=kimg, **opts)
    return launch_training(run_desc, options, str(tmp_path / outdir), show_progress=show_progress,
                           image_grid=(4, 2))


class Terminal(io.StringIO):
    """A captured stderr that says it is a terminal (the progress bar only draws on terminals)."""

    def isatty(self):
        return True


def read_stats(run_dir):
    with open(os.path.join(run_dir, "stats.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def ada_by_hand(stats, p0, target, step, interval):
    """Expected Progress/augment of each tick when every tick is one iteration: after every `interval`-th
    iteration, p += sign(mean sign of the real logits over those iterations - target) * step, floored at 0."""
    p, total, num, expected = p0, 0, 0, []
    for i, s in enumerate(stats):
        signs = s["Loss/signs/real"]
        total += round(signs["mean"] * signs["num"])  # a sum of +-1 values
        num += signs["num"]
        if (i + 1) % interval == 0:
            p = max(p + np.sign(total / num - target) * step, 0.0)
            total, num = 0, 0
        expected.append(p)
    return expected


def snapshot_of(run_dir):
    names = sorted(n for n in os.listdir(run_dir) if n.startswith("network-snapshot-") and n.endswith(".pkl"))
    return os.path.join(run_dir, names[-1])


@pytest.mark.parametrize("loss,k,target", [("logistic", None, 0.6), ("rooted", 8.0, 0.3)])
def test_resume_official_pickle_then_our_snapshot(tmp_path, one_thread, loss, k, target):
    data = make_zip(tmp_path / "dogs.zip", num=8)
    run1 = train(tmp_path, data, TINY_UNCOND, kimg=0.032, loss=loss, k=k, p=0.2, target=target,
                 snap=4)
    expected_name = "00000-dogs-auto-" + ("logistic" if loss == "logistic" else "rooted8")
    assert os.path.basename(run1) == expected_name
    for name in ("log.txt", "training_options.json", "stats.jsonl", "reals.png", "fakes_init.png",
                 "fakes000000.png", "network-snapshot-000000.pkl"):  # int(kimg) names: later ones replace
        assert os.path.isfile(os.path.join(run1, name)), name
    with open(os.path.join(run1, "training_options.json"), encoding="utf-8") as f:
        options = json.load(f)
    assert options["objective"] == {"logistic": "logistic", "rooted": "rooted:8"}[loss]
    assert "tick 0" in open(os.path.join(run1, "log.txt"), encoding="utf-8").read()

    stats1 = read_stats(run1)  # a fresh start reports after its first iteration, then every 4 images
    assert [s["Progress/kimg"]["mean"] for s in stats1] == pytest.approx([0.004 * i for i in range(1, 9)])
    assert [s["Progress/tick"]["mean"] for s in stats1] == list(range(8))
    for key in ("Loss/D/loss", "Loss/G/loss", "Loss/scores/real", "Loss/scores/fake", "Loss/signs/real",
                "Loss/r1_penalty", "Loss/pl_penalty", "Progress/augment", "Timing/sec_per_kimg",
                "Grad/nonfinite_G", "Grad/nonfinite_D", "Resources/cpu_mem_gb"):
        assert key in stats1[0] or key in stats1[1], key
    assert stats1[0]["Grad/nonfinite_G"]["mean"] == 0

    # ADA, by hand from the logged signs of D's real logits: every 4 iterations p moves by
    # batch * interval / (ada_kimg * 1000) = 16 / 1e5 (ada_kimg is 100 when resuming) toward the target.
    p_by_hand = ada_by_hand(stats1, p0=0.2, target=target, step=4 * 4 / (100 * 1000), interval=4)
    assert [s["Progress/augment"]["mean"] for s in stats1] == pytest.approx(p_by_hand, abs=1e-6)
    assert p_by_hand[-1] != 0.2

    snap1 = load_network_pkl(snapshot_of(run1))
    assert snap1["progress"]["cur_nimg"] == 32 and snap1["progress"]["cur_tick"] == 7
    assert snap1["progress"]["batch_idx"] == 8
    p1 = snap1["progress"]["augment_p"]
    assert p1 == pytest.approx(float(snap1["augment_pipe"].p)) == pytest.approx(p_by_hand[-1], abs=1e-6)
    official = load_network_pkl(TINY_UNCOND)
    assert not torch.equal(snap1["G"].synthesis.b32.conv1.weight, official["G"].synthesis.b32.conv1.weight)

    # Resuming our snapshot continues kimg, tick, batch index and the ADA p (--p only sets a fresh start).
    run2 = train(tmp_path, data, snapshot_of(run1), kimg=0.048, loss=loss, k=k, p=0.5, snap=4)
    assert os.path.basename(run2).startswith("00001-")
    stats2 = read_stats(run2)
    assert [s["Progress/kimg"]["mean"] for s in stats2] == pytest.approx([0.036, 0.040, 0.044, 0.048])
    assert [s["Progress/tick"]["mean"] for s in stats2] == [8, 9, 10, 11]
    p_by_hand = ada_by_hand(stats2, p0=p1, target=0.6, step=16 / 1e5, interval=4)  # --target not given: 0.6
    assert [s["Progress/augment"]["mean"] for s in stats2] == pytest.approx(p_by_hand, abs=1e-6)
    snap2 = load_network_pkl(snapshot_of(run2))
    assert snap2["progress"]["cur_nimg"] == 48 and snap2["progress"]["batch_idx"] == 12
    assert snap2["progress"]["augment_p"] == pytest.approx(p_by_hand[-1], abs=1e-6)


def test_conditional_resume_with_freezed_mirror_subset_and_progress_bar(tmp_path, one_thread, monkeypatch):
    data = make_zip(tmp_path / "pets.zip", num=9, classes=3)
    monkeypatch.setattr(sys, "stderr", Terminal())
    run = train(tmp_path, data, TINY_COND, kimg=0.008, loss="logistic", cond=True, freezed=2, mirror=True, subset=6,
                aug="noaug", show_progress=True)
    bar = sys.stderr.getvalue()
    monkeypatch.undo()
    assert "4/8" in bar and "8/8" in bar and "img/s" in bar
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
        "from stylegan_rlo.training.config import setup_training_options\n"
        "from stylegan_rlo.training.launch import launch_training\n"
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


def test_a_float_sum_length_ends_on_its_iteration(tmp_path, one_thread):
    """--kimg as the sum start + budget (0.004 + 0.032 = 0.036000000000000004 in floats) stops after 36 images, not
    one batch later (compare_objectives passes such sums)."""
    data = make_zip(tmp_path / "dogs.zip", num=8)
    kimg = 0.004 + 0.032
    assert kimg * 1000 > 36
    run_dir = train(tmp_path, data, TINY_UNCOND, kimg=kimg, tick=1)
    assert load_network_pkl(snapshot_of(run_dir))["progress"]["cur_nimg"] == 36
    assert [s["Progress/kimg"]["mean"] for s in read_stats(run_dir)][-1] == pytest.approx(0.036)


def test_exception_while_writing_a_snapshot_keeps_the_previous_one(tmp_path, one_thread, monkeypatch):
    data = make_zip(tmp_path / "dogs.zip", num=8)
    real_dump, calls = pickles.pickle.dump, []

    def dump_that_fails_the_third_time(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and "progress" in obj:  # a training snapshot
            calls.append(1)
            if len(calls) == 3:
                f.write(b"the first bytes of a snapshot")
                raise RuntimeError("injected failure while writing a snapshot")
        real_dump(obj, f, *args, **kwargs)

    monkeypatch.setattr(pickles.pickle, "dump", dump_that_fails_the_third_time)
    with pytest.raises(RuntimeError, match="injected"):
        train(tmp_path, data, TINY_UNCOND, kimg=1, aug="fixed", p=0.3)
    monkeypatch.undo()
    run_dir = str(tmp_path / "runs" / "00000-dogs-auto-rooted8")
    assert not [n for n in os.listdir(run_dir) if n.endswith(".tmp")]
    snap = load_network_pkl(snapshot_of(run_dir))  # the second snapshot (tick 1), complete
    assert snap["progress"]["cur_nimg"] == 8 and snap["progress"]["cur_tick"] == 1
    stats = read_stats(run_dir)
    assert [s["Progress/tick"]["mean"] for s in stats] == [0, 1]
    assert [s["Progress/augment"]["mean"] for s in stats] == pytest.approx([0.3, 0.3])  # --aug fixed: p stays put
    with open(os.path.join(run_dir, "log.txt"), encoding="utf-8") as f:
        assert "tick 2" in f.read()  # pending log lines are written even when the run dies
    run2 = train(tmp_path, data, snapshot_of(run_dir), kimg=0.012)
    assert [(s["Progress/tick"]["mean"], s["Progress/kimg"]["mean"]) for s in read_stats(run2)] == [(2, 0.012)]


def test_loader_worker_dataset_error_is_reraised_with_its_own_message(tmp_path):
    data = make_zip(tmp_path / "dogs.zip", num=2)
    with zipfile.ZipFile(data) as zf:
        good = zf.read("img00000.png")
    with zipfile.ZipFile(data, "a") as zf:
        zf.writestr("img00001b.png", good[:len(good) // 2])  # header intact, pixel data cut off
    dataset = ImageFolderDataset(data)
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, num_workers=1)
    with pytest.raises(DatasetError) as info:
        next_batch(iter(loader))
    message = str(info.value)
    assert message.startswith("image 'img00001b.png' in ") and "truncated" in message
    assert "Traceback" not in message and "\n" not in message


def test_ddp_two_gloo_processes_keep_parameters_identical(tmp_path):
    data = make_zip(tmp_path / "dogs.zip", num=8)
    run_desc, options = setup_training_options(data=data, resume=str(TINY_UNCOND), device="cpu", workers=0, batch=4,
                                               gpus=2, kimg=0.012, tick=0.004, snap=10, p=0.2)
    assert options.num_gpus == 2 and options.batch_gpu == 2
    run_dir = prepare_run_dir(str(tmp_path / "runs"), run_desc, options)
    torch.multiprocessing.spawn(ddp_rank_worker, nprocs=2,
                                args=(dict(options), run_dir, str(tmp_path / "init"), str(tmp_path)))
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert ranks[0]["cur_nimg"] == ranks[1]["cur_nimg"] == 12 and ranks[0]["batch_idx"] == 3
    official = {f"{net}.{name}": t for net in ("G", "D", "G_ema")
                for name, t in load_network_pkl(TINY_UNCOND)[net].named_parameters()}
    trained = [name for name in official if not torch.equal(ranks[0]["tensors"][name], official[name])]
    assert any(n.startswith("G.") for n in trained) and any(n.startswith("D.") for n in trained)
    for name, tensor in ranks[0]["tensors"].items():
        if not name.endswith("w_avg"):  # w_avg tracks each rank's own latents, as upstream
            assert torch.equal(tensor, ranks[1]["tensors"][name]), name
    snap = load_network_pkl(snapshot_of(run_dir))  # rank 0 wrote the snapshot
    assert snap["progress"]["cur_nimg"] == 12
    assert torch.equal(snap["D"].b4.out.weight, ranks[0]["tensors"]["D.b4.out.weight"])
