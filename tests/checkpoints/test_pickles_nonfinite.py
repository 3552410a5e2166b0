"""Loading a network pickle whose parameters or buffers hold NaN or Inf stops with their names (generate, calc_fid,
compare and train all load through load_network_pkl), unless STYLEGAN_RLO_ALLOW_NONFINITE=1."""

import torch
from click.testing import CliRunner
from training_fixtures import DATA

from stylegan_rlo.checkpoints import pickles
from stylegan_rlo.cli.generate import main as generate_main

UNCOND = str(DATA / "tiny_uncond.pkl")


def _poisoned(tmp_path):
    data = pickles.load_network_pkl(UNCOND)
    param_name, param = next(iter(data["G_ema"].named_parameters()))
    buffer_name, buffer = next((n, b) for n, b in data["D"].named_buffers() if b.is_floating_point())
    with torch.no_grad():
        param.view(-1)[0] = float("nan")
        buffer.view(-1)[-1] = float("inf")
    path = tmp_path / "diverged.pkl"
    pickles.save_network_pkl(path, data)
    return str(path), f"G_ema.{param_name}", f"D.{buffer_name}"


def test_nonfinite_tensors_are_named_and_refused(tmp_path, monkeypatch):
    monkeypatch.delenv(pickles.ALLOW_NONFINITE_ENV, raising=False)
    path, param, buffer = _poisoned(tmp_path)
    try:
        pickles.load_network_pkl(path)
        raise AssertionError("loaded a network with NaN parameters")
    except pickles.NonFiniteNetworkError as e:
        message = str(e)
    assert message.startswith(f"{path}: 2 parameter/buffer tensor(s) hold NaN or Inf: ")
    assert param in message and buffer in message and pickles.ALLOW_NONFINITE_ENV in message
    result = CliRunner().invoke(generate_main, ["--network", path, "--seeds", "0", "--device", "cpu",
                                                "--outdir", str(tmp_path / "out")])
    assert result.exit_code == 2 and param in result.output and "Traceback" not in result.output, result.output


def test_switch_allows_loading_for_debugging(tmp_path, monkeypatch):
    path, _, _ = _poisoned(tmp_path)
    monkeypatch.setenv(pickles.ALLOW_NONFINITE_ENV, "1")
    G = pickles.load_network_pkl(path)["G_ema"]
    assert torch.isnan(next(G.parameters())).any()


def test_finite_pickles_load_as_before():
    data = pickles.load_network_pkl(UNCOND)
    assert all(bool(torch.isfinite(t).all()) for t in data["G_ema"].parameters())
