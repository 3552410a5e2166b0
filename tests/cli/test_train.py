"""scripts/train.py through its click entry (stylegan_rlo.cli.train.main): tiny CPU runs for both objectives that
resume the official-format fixtures, snapshot, and resume their own snapshot; --dry-run; and the errors a user
sees for bad datasets, contradicting options and unknown metrics (clean messages, no tracebacks)."""

import io
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from training_fixtures import REPO, TINY_COND, TINY_UNCOND, free_port, make_zip, subprocess_env

from stylegan_rlo.checkpoints.pickles import load_network_pkl
from stylegan_rlo.cli.train import main

FAST = ["--device", "cpu", "--workers", "0", "--batch", "4", "--tick", "0.004"]


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=True)


def only_run_dir(outdir):
    runs = sorted(os.listdir(outdir))
    return os.path.join(outdir, runs[-1])


def read_stats(run_dir):
    with open(os.path.join(run_dir, "stats.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def tick_lines(output):
    return [line for line in output.splitlines() if line.startswith("tick ")]


@pytest.mark.parametrize("fixture,loss", [("uncond", "logistic"), ("cond", "rooted")])
def test_cli_resumes_fixture_then_its_own_snapshot(tmp_path, one_thread, small_grids, fixture, loss):
    cond = fixture == "cond"
    data = make_zip(tmp_path / "pets.zip", num=8, classes=3 if cond else None)
    pkl = TINY_COND if cond else TINY_UNCOND
    extra = (["--cond"] if cond else []) + (["--k", "4"] if loss == "rooted" else [])
    outdir = tmp_path / "runs"
    result = cli("--data", data, "--outdir", outdir, "--resume", pkl, "--loss", loss, *extra, "--kimg", 0.008,
                 "--snap", 5, "--p", 0.25, *FAST)
    assert result.exit_code == 0, result.output
    run1 = only_run_dir(outdir)
    assert os.path.basename(run1) == "00000-pets-auto-" + ("rooted4" if loss == "rooted" else "logistic")
    # One status line per tick; an official pickle starts at kimg 0 and tick 0.
    assert [line.split()[:4] for line in tick_lines(result.output)] == [["tick", "0", "kimg", "0.004"],
                                                                        ["tick", "1", "kimg", "0.008"]]
    names = set(os.listdir(run1))
    assert {"log.txt", "training_options.json", "stats.jsonl", "reals.png", "fakes_init.png", "fakes000000.png",
            "network-snapshot-000000.pkl"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    with open(os.path.join(run1, "log.txt"), encoding="utf-8") as f:
        log = f.read()
    assert len(tick_lines(log)) == 2
    assert "float16" not in log  # the module summary shows the fp32 that CPU training runs in
    with open(os.path.join(run1, "training_options.json"), encoding="utf-8") as f:
        options = json.load(f)
    assert options["objective"] == ("rooted:4" if loss == "rooted" else "logistic")
    assert options["resume_pkl"] == str(pkl) and options["run_dir"] == run1
    stats = read_stats(run1)
    for key in ("Progress/kimg", "Progress/tick", "Progress/augment", "Loss/D/loss", "Loss/G/loss",
                "Loss/scores/real", "Loss/signs/real", "Timing/sec_per_kimg", "Grad/nonfinite_G",
                "Grad/nonfinite_D"):
        assert key in stats[0], key

    snap1 = load_network_pkl(os.path.join(run1, "network-snapshot-000000.pkl"))
    assert snap1["G"].c_dim == (3 if cond else 0)
    progress1 = snap1["progress"]
    assert (progress1["cur_nimg"], progress1["cur_tick"], progress1["batch_idx"]) == (8, 1, 2)
    assert progress1["augment_p"] == pytest.approx(0.25) == pytest.approx(float(snap1["augment_pipe"].p))
    assert snap1["training_set_kwargs"]["use_labels"] == cond

    # Resume our own snapshot: kimg, tick and p continue (the new --p applies only to fresh starts).
    result = cli("--data", data, "--outdir", outdir, "--resume", os.path.join(run1, "network-snapshot-000000.pkl"),
                 "--loss", loss, *extra, "--kimg", 0.016, "--snap", 5, "--p", 0.9, *FAST,
                 "--workers", 1)  # the last --workers wins: one loader process this time
    assert result.exit_code == 0, result.output
    run2 = only_run_dir(outdir)
    assert os.path.basename(run2).startswith("00001-")
    assert [line.split()[:4] for line in tick_lines(result.output)] == [["tick", "2", "kimg", "0.012"],
                                                                        ["tick", "3", "kimg", "0.016"]]
    stats = read_stats(run2)
    assert stats[0]["Progress/augment"]["mean"] == pytest.approx(progress1["augment_p"])
    snap2 = load_network_pkl(os.path.join(run2, "network-snapshot-000000.pkl"))
    assert (snap2["progress"]["cur_nimg"], snap2["progress"]["cur_tick"]) == (16, 3)
    assert not np.array_equal(snap2["G_ema"].synthesis.b32.torgb.weight.numpy(),
                              snap1["G_ema"].synthesis.b32.torgb.weight.numpy())


def test_dry_run_prints_options_and_writes_nothing(tmp_path):
    data = make_zip(tmp_path / "dogs.zip", num=4)
    result = cli("--data", data, "--outdir", tmp_path / "runs", "--resume", TINY_UNCOND, "--dry-run", "--aug", "fixed",
                 "--p", 0.3, "--augpipe", "bgcfnc", "--kimg", 1, "--device", "cpu", "--desc", "try1")
    assert result.exit_code == 0, result.output
    printed = result.output.split("Training options:\n", 1)[1]
    options = json.JSONDecoder().raw_decode(printed)[0]
    assert options["objective"] == "rooted:8"
    assert options["augment_p"] == 0.3 and options["ada_target"] is None
    assert set(options["augment_kwargs"]) == {"xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac",
                                              "brightness", "contrast", "lumaflip", "hue", "saturation",
                                              "imgfilter", "noise", "cutout"}
    assert "00000-dogs-auto-rooted8-try1" in result.output and "Dry run" in result.output
    assert not (tmp_path / "runs").exists()


def dry_run_options(result):
    assert result.exit_code == 0, result.output
    return json.JSONDecoder().raw_decode(result.output.split("Training options:\n", 1)[1])[0]


def test_dry_run_records_the_gpu_switches(tmp_path):
    data = make_zip(tmp_path / "dogs.zip", num=4)
    base = ["--data", data, "--outdir", tmp_path / "runs", "--resume", TINY_UNCOND, "--dry-run", "--device", "cpu"]
    default = dry_run_options(cli(*base))
    assert default["cudnn_benchmark"] is True and default["allow_tf32"] is False
    assert default["G_kwargs"]["synthesis_kwargs"]["num_fp16_res"] == 1  # the pickle's own
    assert "fp16_channels_last" not in default["G_kwargs"]["synthesis_kwargs"]
    for flags in (["--fp32", "--nhwc", "--allow-tf32", "--nobench"],
                  ["--fp32=1", "--nhwc=true", "--allow-tf32=yes", "--nobench=1"]):
        options = dry_run_options(cli(*base, *flags))
        synthesis, D = options["G_kwargs"]["synthesis_kwargs"], options["D_kwargs"]
        assert (synthesis["num_fp16_res"], synthesis["conv_clamp"], D["num_fp16_res"], D["conv_clamp"]) == \
            (0, None, 0, None)
        assert synthesis["fp16_channels_last"] is True and D["block_kwargs"]["fp16_channels_last"] is True
        assert options["cudnn_benchmark"] is False and options["allow_tf32"] is True
    assert dry_run_options(cli(*base, "--fp32=0", "--nobench=false")) == default
    assert not (tmp_path / "runs").exists()


def test_tiny_run_with_the_gpu_switches(tmp_path, one_thread, small_grids):
    """Harmless on the CPU: the run trains and snapshots networks built with the switched kwargs."""
    data = make_zip(tmp_path / "dogs.zip", num=4)
    result = cli("--data", data, "--outdir", tmp_path / "runs", "--resume", TINY_UNCOND, "--kimg", 0.004, "--snap", 5,
                 "--fp32", "--nhwc", "--nobench", "--allow-tf32", *FAST)
    assert result.exit_code == 0, result.output
    run_dir = only_run_dir(tmp_path / "runs")
    with open(os.path.join(run_dir, "training_options.json"), encoding="utf-8") as f:
        options = json.load(f)
    assert options["cudnn_benchmark"] is False and options["allow_tf32"] is True
    snap = load_network_pkl(os.path.join(run_dir, "network-snapshot-000000.pkl"))
    for name in ("G", "G_ema"):
        kwargs = snap[name].init_kwargs["synthesis_kwargs"]
        assert (kwargs["num_fp16_res"], kwargs["fp16_channels_last"]) == (0, True)
    assert snap["D"].init_kwargs["num_fp16_res"] == 0 and snap["D"].init_kwargs["block_kwargs"]["fp16_channels_last"]
    assert snap["progress"]["cur_nimg"] == 4


@pytest.mark.parametrize("args", [
    ["--loss", "hinge", "--freezed", 1, "--p", 0.2],  # ADA adapting, FreezeD
    ["--loss", "lsgan", "--lecam", 0.3],
    ["--diffaugment", "color,translation,cutout", "--aug", "noaug"],  # the default objective, rooted k=8
    ["--loss", "rooted", "--k", 8, "--lecam", 0.3, "--diffaugment", "color,translation,cutout", "--aug", "noaug"],
], ids=["hinge-ada-freezed", "lsgan-lecam", "diffaugment", "rooted8-lecam-diffaugment"])
def test_tiny_run_with_other_objectives_lecam_and_diffaugment(tmp_path, one_thread, small_grids, args):
    """One iteration (every phase: G and D main steps, path length, R1) of the fixture; a loadable snapshot that
    trained, and the choices recorded in training_options.json."""
    data = make_zip(tmp_path / "dogs.zip", num=4)
    result = cli("--data", data, "--outdir", tmp_path / "runs", "--resume", TINY_UNCOND, "--kimg", 0.004, *args,
                 *FAST)
    assert result.exit_code == 0, result.output
    run_dir = only_run_dir(tmp_path / "runs")
    with open(os.path.join(run_dir, "training_options.json"), encoding="utf-8") as f:
        loss_kwargs = json.load(f)["loss_kwargs"]
    flags = dict(zip(args[::2], args[1::2]))
    objective = flags.get("--loss", "rooted") + (":8" if flags.get("--loss", "rooted") == "rooted" else "")
    assert loss_kwargs["objective"] == objective
    assert loss_kwargs["lecam_weight"] == flags.get("--lecam", 0) and loss_kwargs["lecam_decay"] == 0.99
    assert loss_kwargs["diffaugment"] == flags.get("--diffaugment")
    stats = read_stats(run_dir)[-1]
    assert ("Loss/lecam_penalty" in stats) == ("--lecam" in flags)
    for key in ("Loss/D/loss", "Loss/G/loss", "Loss/r1_penalty", "Loss/pl_penalty"):
        assert np.isfinite(stats[key]["mean"]), key
    snap = load_network_pkl(os.path.join(run_dir, "network-snapshot-000000.pkl"))
    start = load_network_pkl(TINY_UNCOND)
    assert snap["progress"]["cur_nimg"] == 4
    for net in ("G", "D"):
        trained = [name for name, p in snap[net].named_parameters()
                   if not torch.equal(p, dict(start[net].named_parameters())[name])]
        assert trained, net
    if "--freezed" in flags:  # FreezeD: the first D layer kept its weights
        assert torch.equal(snap["D"].b32.fromrgb.weight, start["D"].b32.fromrgb.weight)


# ---------------------------------------------------------------------------------------------------------------
# Errors: one clean line `Error: ...` and exit status 2, for bad options and inputs, also for data found bad later.

def png_bytes(shape, seed=0):
    pixels = (np.random.RandomState(seed).rand(*shape) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def write_zip(path, files):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return str(path)


BAD_DATASETS = {
    "empty": ({"readme.txt": b"no images"}, ["no images found"]),
    "non-square": ({"a.png": png_bytes((32, 16, 3))}, ["'a.png'", "32", "square"]),  # 16 wide, 32 high
    "non-power-of-two": ({"a.png": png_bytes((24, 24, 3))}, ["'a.png'", "24x24", "power of two"]),
    "mixed sizes": ({"a.png": png_bytes((32, 32, 3)), "b.png": png_bytes((16, 16, 3))},
                    ["'a.png'", "'b.png'", "16x16"]),
    "mixed channels": ({"a.png": png_bytes((32, 32, 3)), "b.png": png_bytes((32, 32))},
                       ["'a.png'", "'b.png'", "channel"]),
    "unreadable": ({"a.png": png_bytes((32, 32, 3)), "b.png": b"\x89PNG not really"}, ["'b.png'", "readable"]),
    "labels for unknown images": ({"a.png": png_bytes((32, 32, 3)),
                                   "dataset.json": json.dumps({"labels": [["a.png", 0], ["zzz.png", 1]]})},
                                  ["dataset.json", "'zzz.png'"]),
    "labels missing": ({"a.png": png_bytes((32, 32, 3)), "b.png": png_bytes((32, 32, 3), 1),
                        "dataset.json": json.dumps({"labels": [["a.png", 0]]})}, ["no label", "'b.png'"]),
}


@pytest.mark.parametrize("case", list(BAD_DATASETS))
def test_bad_dataset_is_a_usage_error_naming_the_problem(tmp_path, case):
    files, words = BAD_DATASETS[case]
    data = write_zip(tmp_path / "bad.zip", files)
    result = cli("--data", data, "--outdir", tmp_path / "runs", "--device", "cpu", "--cond", "--dry-run")
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output and "Error: --data" in result.output
    for word in words:
        assert word in result.output, (word, result.output)


def test_truncated_image_fails_cleanly_naming_the_file(tmp_path, one_thread, small_grids):
    good = png_bytes((32, 32, 3))
    data = write_zip(tmp_path / "trunc.zip", {"a.png": good, "b.png": good[:len(good) // 2]})
    result = cli("--data", data, "--outdir", tmp_path / "runs", "--resume", TINY_UNCOND, "--kimg", 0.008, *FAST)
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output and "Error: " in result.output
    assert "'b.png'" in result.output and "truncated" in result.output


@pytest.mark.parametrize("args,words", [
    (["--cbase", 1024], ["--cbase", "1024", "channel_base 512"]),
    (["--map-depth", 8], ["--map-depth", "8", "num_layers 3"]),
    (["--cfg", "paper256"], ["--cfg paper256", "16384", "channel_base 512"]),
    (["--cond"], ["c_dim"]),
    (["--kimg", 0], ["--kimg"]),
    (["--loss", "logistic", "--k", 2], ["--k", "rooted"]),
    (["--aug", "fixed"], ["--aug fixed", "--p"]),
    (["--aug", "noaug", "--augpipe", "bgc"], ["--augpipe", "noaug"]),
    (["--aug", "fixed", "--p", 0.2, "--target", 0.5], ["--target", "--aug ada"]),
    (["--augpipe", "bogus"], ["--augpipe", "bgcfnc", "bogus"]),
    (["--metrics", "bogus_metric"], ["--metrics", "bogus_metric", "fid50k_full"]),
    (["--batch", 6, "--batch-gpu", 4], ["--batch 6", "--batch-gpu 4"]),
    (["--loss", "hinge", "--k", 2], ["--k", "only applies to the rooted", "hinge"]),
    (["--loss", "lsgan", "--k", 8], ["--k", "only applies to the rooted", "lsgan"]),
    (["--diffaugment", "color"], ["--diffaugment color", "--aug noaug"]),
    (["--diffaugment", "color", "--aug", "fixed", "--p", 0.2], ["--diffaugment", "--aug is fixed", "--aug noaug"]),
    (["--diffaugment", "colour", "--aug", "noaug"], ["--diffaugment", "'colour'", "color,translation,cutout"]),
    (["--lecam-decay", 0.5], ["--lecam-decay", "needs --lecam"]),
    (["--lecam", -1], ["--lecam", ">= 0"]),
    (["--lecam", 1, "--lecam-decay", 1.5], ["--lecam-decay", "[0, 1]"]),
])
def test_contradicting_or_bad_options_are_usage_errors(tmp_path, args, words):
    data = make_zip(tmp_path / "dogs.zip", num=2, classes=2 if "--cond" in args else None)
    result = cli("--data", data, "--outdir", tmp_path / "runs", "--resume", TINY_UNCOND, "--device", "cpu", *args)
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    for word in words:
        assert word in result.output, (word, result.output)
    assert not (tmp_path / "runs").exists()


def test_resolution_mismatch_names_both_resolutions(tmp_path):
    data = make_zip(tmp_path / "big.zip", num=2, res=64)
    result = cli("--data", data, "--outdir", tmp_path / "runs", "--resume", TINY_UNCOND, "--device", "cpu")
    assert result.exit_code == 2, result.output
    assert "32x32" in result.output and "64x64" in result.output


# ---------------------------------------------------------------------------------------------------------------
# Several processes: `--gpus 2` (spawned gloo ranks on the CPU) and the environment torchrun sets.

TRAIN_SCRIPT = """
from stylegan_rlo.training import loop as training_loop
training_loop.default_grid_size = lambda image_shape: (2, 2)  # small grids; spawned ranks re-import this file
from stylegan_rlo.cli.train import main
if __name__ == "__main__":
    main()
"""


def run_script(tmp_path, args, env=None):
    script = tmp_path / "train_small_grids.py"
    script.write_text(TRAIN_SCRIPT)
    return subprocess.Popen([sys.executable, str(script)] + [str(a) for a in args], cwd=REPO,
                            env=dict(subprocess_env(), **(env or {})), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def check_two_rank_run(outdir):
    """One run directory, written by rank 0, for a 4-image batch split over two ranks."""
    run_dir = only_run_dir(outdir)
    assert len(os.listdir(outdir)) == 1
    with open(os.path.join(run_dir, "training_options.json"), encoding="utf-8") as f:
        options = json.load(f)
    assert options["num_gpus"] == 2 and options["batch_size"] == 4 and options["batch_gpu"] == 2
    assert [s["Progress/kimg"]["mean"] for s in read_stats(run_dir)] == pytest.approx([0.004, 0.008])
    snap = load_network_pkl(os.path.join(run_dir, "network-snapshot-000000.pkl"))
    assert snap["progress"]["cur_nimg"] == 8


@pytest.mark.slow  # ~15-30 s; its worker is covered by test_training's DDP test, the CLI by the torchrun test
def test_cli_gpus_2_spawns_two_gloo_ranks(tmp_path):
    data = make_zip(tmp_path / "dogs.zip", num=8)
    proc = run_script(tmp_path, ["--data", data, "--outdir", tmp_path / "runs", "--resume", TINY_UNCOND, "--gpus", 2,
                                 "--kimg", 0.008, "--snap", 5, *FAST])
    output = proc.communicate(timeout=400)[0]
    assert proc.returncode == 0, output[-3000:]
    assert "Number of processes: 2 (cpu)" in output and len(tick_lines(output)) == 2
    check_two_rank_run(tmp_path / "runs")


def test_cli_runs_under_torchrun_environment(tmp_path):
    data = make_zip(tmp_path / "dogs.zip", num=8)
    args = ["--data", data, "--outdir", tmp_path / "runs", "--resume", TINY_UNCOND, "--kimg", 0.008, "--snap", 5,
            *FAST]
    port = str(free_port())
    procs = [run_script(tmp_path, args, env=dict(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2",
                                                 MASTER_ADDR="127.0.0.1", MASTER_PORT=port)) for r in range(2)]
    outputs = [p.communicate(timeout=400)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert "Number of processes: 2 (cpu)" in outputs[0] and len(tick_lines(outputs[0])) == 2
    assert "Training options" not in outputs[1] and not tick_lines(outputs[1])  # rank 1 stays quiet
    check_two_rank_run(tmp_path / "runs")


def test_gpus_contradicting_torchrun_is_a_usage_error(tmp_path, monkeypatch):
    data = make_zip(tmp_path / "dogs.zip", num=2)
    for name, value in dict(RANK="0", LOCAL_RANK="0", WORLD_SIZE="2").items():
        monkeypatch.setenv(name, value)
    result = cli("--data", data, "--outdir", tmp_path / "runs", "--gpus", 3, "--device", "cpu", "--dry-run")
    assert result.exit_code == 2 and "WORLD_SIZE=2" in result.output, result.output
