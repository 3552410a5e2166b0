"""--adapt-resolution: resuming the 32x32 fixtures at 16x16 (exact for the skip generator: the truncated G outputs
the image the full G has accumulated at 16x16) and at 64x64, the transfer report, and the errors that remain."""

import json
import os

import pytest
import torch
from click.testing import CliRunner
from training_fixtures import TINY_COND, TINY_UNCOND, make_zip

from stylegan_rlo.checkpoints.pickles import load_network_pkl
from stylegan_rlo.cli.train import main
from stylegan_rlo.model import networks
from stylegan_rlo.training import adapt_resolution

FAST = ["--device", "cpu", "--workers", "0", "--batch", "4", "--tick", "0.004", "--kimg", "0.004"]


def adapted(data, resolution):
    """G_ema, G and D of the pickle `data` rebuilt at `resolution` with the shared tensors copied; + report rows."""
    G_kwargs, D_kwargs, report = adapt_resolution.adapt(data, dict(data["G"].init_kwargs), dict(data["D"].init_kwargs),
                                                        resolution, "fixture")
    G, G_ema, D = networks.Generator(**G_kwargs), networks.Generator(**G_kwargs), networks.Discriminator(**D_kwargs)
    adapt_resolution.apply(report, data, G, D, G_ema)
    return G_ema.eval(), G, D, report


def tensors(module):
    return dict(list(module.named_parameters()) + list(module.named_buffers()))


@pytest.mark.parametrize("fixture", [TINY_UNCOND, TINY_COND])
def test_truncated_skip_generator_outputs_the_full_generators_16x16_image(fixture, one_thread):
    data = load_network_pkl(fixture)
    full = data["G_ema"].eval()
    G16, _, _, report = adapted(data, 16)
    assert G16.img_resolution == 16 and G16.num_ws == full.num_ws - 2  # b32 used two ws (conv0/conv1, torgb)
    captured = {}
    hook = full.synthesis.b16.register_forward_hook(lambda m, args, out: captured.update(img=out[1]))
    z = torch.randn([3, full.z_dim], generator=torch.Generator().manual_seed(1))
    c = torch.eye(max(full.c_dim, 1))[:3, :full.c_dim].expand(3, full.c_dim) if full.c_dim else torch.zeros([3, 0])
    with torch.no_grad():
        full(z, c, noise_mode="const", force_fp32=True)
        img16 = G16(z, c, noise_mode="const", force_fp32=True)
    hook.remove()
    assert img16.shape == (3, 3, 16, 16)
    assert torch.equal(img16, captured["img"])  # the same computation, bit for bit
    assert report["from_resolution"] == 32 and report["to_resolution"] == 16


def test_down_and_up_reports_count_every_parameter(one_thread):
    data = load_network_pkl(TINY_UNCOND)
    for res in (16, 64):
        G_ema, G, D, report = adapted(data, res)
        rows = report["modules"]
        for net, source, target in (("G", data["G"], G), ("D", data["D"], D)):
            total = {a: sum(r["params"] for r in rows if r["network"] == net and r["action"] == a)
                     for a in adapt_resolution.ACTIONS}
            assert total["copied"] + total["fresh"] == sum(p.numel() for p in target.parameters())
            assert total["copied"] + total["dropped"] == sum(p.numel() for p in source.parameters())
            src, dst = tensors(source), tensors(target)
            for name, t in dst.items():  # shared tensors copied, others as freshly built
                if name in src:
                    assert torch.equal(t, src[name]), name
        actions = {(r["network"], r["module"]): r["action"] for r in rows}
        if res == 16:
            assert actions[("G", "synthesis.b32")] == "dropped" and actions[("G", "mapping")] == "copied"
            assert actions[("D", "b32")] == "dropped" and actions[("D", "b16.fromrgb")] == "fresh"
            assert actions[("D", "b16.conv0")] == "copied" and actions[("D", "b4")] == "copied"
        else:
            assert actions[("G", "synthesis.b64")] == "fresh" and actions[("G", "synthesis.b32")] == "copied"
            assert actions[("D", "b64")] == "fresh" and actions[("D", "b32.fromrgb")] == "dropped"
            assert torch.equal(tensors(G_ema)["synthesis.b32.torgb.weight"],
                               tensors(data["G_ema"])["synthesis.b32.torgb.weight"])
        text = adapt_resolution.format_report(rows, 32, res)
        assert f"from 32x32 to {res}x{res}" in text and "fresh" in text


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=True)


@pytest.mark.parametrize("fixture,extra", [(TINY_UNCOND, []), (TINY_COND, ["--cond", "1"])])
def test_cli_fine_tunes_a_32x32_pickle_on_16x16_data(tmp_path, one_thread, fixture, extra):
    data = make_zip(tmp_path / "small.zip", num=8, res=16, classes=3 if extra else None)
    result = cli("--data", data, "--outdir", tmp_path / "runs", "--resume", fixture, "--adapt-resolution", "1",
                 "--snap", 1, *FAST, *extra)
    assert result.exit_code == 0, result.output
    run_dir = os.path.join(tmp_path / "runs", os.listdir(tmp_path / "runs")[0])
    with open(os.path.join(run_dir, "training_options.json"), encoding="utf-8") as f:
        options = json.load(f)
    transfer = options["resume_transfer"]
    assert transfer["from_resolution"] == 32 and transfer["to_resolution"] == 16
    assert {"network": "D", "module": "b16.fromrgb", "action": "fresh", "params": 128} in transfer["modules"]
    with open(os.path.join(run_dir, "log.txt"), encoding="utf-8") as f:
        log = f.read()
    assert "Adapting the resumed networks from 32x32 to 16x16" in log and "b16.fromrgb" in log
    snap = load_network_pkl(os.path.join(run_dir, "network-snapshot-000000.pkl"))
    assert snap["G"].img_resolution == 16 and snap["D"].img_resolution == 16
    assert snap["progress"]["cur_nimg"] == 4  # an adapted network starts counting afresh


@pytest.mark.parametrize("args,words", [
    ([], ["--adapt-resolution", "32x32", "16x16"]),                        # the plain error names the option
    (["--adapt-resolution", "1", "--cfg", "cifar"], ["--cfg cifar", "channel_base 512"]),  # another architecture
    (["--adapt-resolution", "1", "--cmax", "64"], ["max 64", "channel_max 32"]),  # other channel counts
])
def test_adapting_still_refuses_what_does_not_fit(tmp_path, args, words):
    data = make_zip(tmp_path / "small.zip", num=2, res=16)
    result = cli("--data", data, "--outdir", tmp_path / "runs", "--resume", TINY_UNCOND, "--device", "cpu",
                 "--dry-run", "1", *args)
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    for word in words:
        assert word in result.output, result.output


def test_channel_mismatch_and_missing_resume_are_clear_errors(tmp_path):
    gray = make_zip(tmp_path / "gray.zip", num=2, res=16, channels=1)
    result = cli("--data", gray, "--outdir", tmp_path / "runs", "--resume", TINY_UNCOND, "--adapt-resolution", "1",
                 "--device", "cpu", "--dry-run", "1")
    assert result.exit_code == 2 and "3-channel" in result.output and "1 channel" in result.output, result.output
    result = cli("--data", gray, "--outdir", tmp_path / "runs", "--adapt-resolution", "1", "--device", "cpu",
                 "--dry-run", "1")
    assert result.exit_code == 2 and "--adapt-resolution needs --resume" in result.output, result.output


def test_shape_conflict_names_the_tensor():
    small = networks.Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=8, img_channels=3,
                               synthesis_kwargs=dict(channel_base=64, channel_max=8))
    other = networks.Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=8, img_channels=3,
                               synthesis_kwargs=dict(channel_base=64, channel_max=16))
    with pytest.raises(adapt_resolution.AdaptResolutionError, match="synthesis.b4"):
        adapt_resolution.transfer(small, other, "G")
