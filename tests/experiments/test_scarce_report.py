"""stylegan_rlo.experiments.scarce_report against references computed here: synthetic summaries of three training-set
sizes (one arm split off into its own summary), paired differences by numpy, seeds needed by brute force, power by
numerical integration over the sample sd."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import integrate
from scipy import stats as scipy_stats

from stylegan_rlo.cli.scarce_report import main as cli_main
from stylegan_rlo.errors import UserError
from stylegan_rlo.experiments import scarce_report as sr

KIMGS = (0.0, 4.0, 8.0, 12.0)
SEEDS = [0, 1, 2, 3, 4]
T_975_4 = 2.7764451051977987  # Student t 0.975 quantile, 4 degrees of freedom (tables)
METRICS = ["fid50k_full", "kid50k_full", "pr50k3_inception", "mem50k_inception"]
NAMES = ["fid50k_full", "kid50k_full", "pr50k3_inception_precision", "pr50k3_inception_recall", "mem50k_inception"]
LOGISTIC = {"loss": "logistic"}


def rooted(k: float, **more) -> dict:
    return {"loss": "rooted", "k": float(k), **more}


def _values(rng: np.random.Generator, kimg: float) -> dict:
    return {"fid50k_full": 150 - 3 * kimg + rng.normal(0, 4), "kid50k_full": 0.1 + rng.normal(0, 0.01),
            "pr50k3_inception_precision": rng.uniform(0.3, 0.7), "pr50k3_inception_recall": rng.uniform(0.1, 0.5),
            "mem50k_inception": rng.uniform(0, 0.2)}


def make_summary(num_data: int, arms: dict[str, dict], seeds=SEEDS, config_seeds=SEEDS, **config) -> dict:
    """A summary as compare writes it (the fields the report reads), values drawn per (size, arm, seed)."""
    cfg = dict(network="start.pkl", data=f"dogs{num_data}.zip", ref="heldout.zip", outdir=f"out/n{num_data}",
               arms=[dict(label=label, options=opts) for label, opts in arms.items()], seeds=list(config_seeds),
               kimg=12.0, snap_kimg=4.0, metrics=list(METRICS), metrics_num=300, metric_seed=0,
               train_options={"batch": 32, "mirror": True, "gamma": 0.1}, num_data=num_data, num_ref=700,
               data_fingerprint=f"sha256:{num_data:064x}", ref_fingerprint="sha256:" + "f" * 64)
    cfg.update(config)
    start = dict(kimg=0.0, wall_sec=0.0, snapshot="start.pkl", **_values(np.random.default_rng(0), 0.0))
    runs = []
    for label, opts in arms.items():
        for seed in seeds:
            rng = np.random.default_rng([num_data, sum(map(ord, label)), seed])
            points = [dict(start)] + [dict(kimg=k, wall_sec=k * 10, snapshot=f"s{k:g}.pkl", **_values(rng, k))
                                      for k in KIMGS[1:]]
            runs.append(dict(arm=label, loss=opts["loss"], k=opts.get("k"), options=dict(opts), seed=seed,
                             run_dir=f"runs/{label}-{seed}", points=points, train_sec=120.0, eval_sec=30.0,
                             best=None))
    return dict(config=cfg, noise_floor={}, start=start, runs=runs, timings={}, statistics={})


def experiment() -> dict[str, dict]:
    """The five comparisons of experiment 2, small."""
    return {
        "n300": make_summary(300, {"logistic": LOGISTIC, "rooted8": rooted(8), "rooted4": rooted(4),
                                   "rooted2": rooted(2), "rooted2-gamma1": rooted(2, gamma=1.0),
                                   "rooted16": rooted(16)}),
        "n100": make_summary(100, {"logistic": LOGISTIC, "rooted8": rooted(8), "rooted4": rooted(4),
                                   "logistic-lecam": {"loss": "logistic", "lecam": 3e-7}}),
        "n50": make_summary(50, {"logistic": LOGISTIC, "rooted8": rooted(8), "rooted4": rooted(4)}),
        "n300-k32": make_summary(300, {"rooted32": rooted(32)}),
    }


def write(tmp_path, summaries: dict[str, dict]) -> list[str]:
    paths = []
    for name, summary in summaries.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(summary))
        paths.append(str(path))
    return paths


def report_of(tmp_path, summaries: dict[str, dict], **kwargs) -> dict:
    loaded, missing = sr.load_summaries(write(tmp_path, summaries), **kwargs)
    return sr.scarce_report(loaded, missing)


def _final(run: dict, name: str, kimg: float = 12.0) -> float:
    return next(p[name] for p in run["points"] if p["kimg"] == kimg)


def test_paired_differences_across_summaries_match_numpy(tmp_path):
    summaries = experiment()
    report = report_of(tmp_path, summaries)
    assert [ts["num_data"] for ts in report["training_sets"]] == [50, 100, 300]
    n300 = report["training_sets"][2]
    assert len(n300["summaries"]) == 2 and report["missing"] == []
    logistic = {r["seed"]: r for r in summaries["n300"]["runs"] if r["arm"] == "logistic"}
    for label, source in (("rooted32", "n300-k32"), ("rooted8", "n300")):
        arm = {r["seed"]: r for r in summaries[source]["runs"] if r["arm"] == label}
        paired = n300["arms"][label]["paired"]
        assert paired["seeds"] == SEEDS
        assert [s["kimg"] for s in paired["snapshots"]] == list(KIMGS)
        for snap in paired["snapshots"][1:]:
            for name in NAMES:
                d = np.array([_final(arm[s], name, snap["kimg"]) - _final(logistic[s], name, snap["kimg"])
                              for s in SEEDS], dtype=np.float64)
                half = T_975_4 * np.sqrt(((d - d.mean()) ** 2).sum() / 4) / np.sqrt(5)
                got = snap[name]
                assert got["n"] == 5
                assert got["mean"] == pytest.approx(d.mean(), rel=1e-12, abs=1e-12)
                assert got["half_width"] == pytest.approx(half, rel=1e-9)
                assert (got["low"], got["high"]) == pytest.approx((d.mean() - half, d.mean() + half), rel=1e-9)
    assert "paired" not in n300["arms"]["logistic"]
    fids = [_final(r, "fid50k_full") for r in summaries["n300"]["runs"] if r["arm"] == "rooted4"]
    final = n300["arms"]["rooted4"]["final"]["fid50k_full"]
    assert final["mean"] == pytest.approx(np.mean(fids)) and final["sd"] == pytest.approx(np.std(fids, ddof=1))


def test_best_snapshot_differences_match_numpy(tmp_path):
    """Each run's lowest FID after the start, paired by seed, against a loop over the points here; a non-finite
    FID is passed over and the start network's FID never counts."""
    summaries = experiment()
    rooted8 = {r["seed"]: r for r in summaries["n100"]["runs"] if r["arm"] == "rooted8"}
    rooted8[3]["points"][2]["fid50k_full"] = float("nan")
    rooted8[4]["points"][0]["fid50k_full"] = 1.0  # the start's own entry: not a snapshot of the run
    logistic = {r["seed"]: r for r in summaries["n100"]["runs"] if r["arm"] == "logistic"}

    def lowest(run):
        best = math.inf
        for point in run["points"][1:]:
            if math.isfinite(point["fid50k_full"]) and point["fid50k_full"] < best:
                best = point["fid50k_full"]
        return best

    n100 = report_of(tmp_path, summaries)["training_sets"][1]
    d = np.array([lowest(rooted8[s]) - lowest(logistic[s]) for s in SEEDS])
    got = n100["arms"]["rooted8"]["paired"]["best_fid"]
    half = T_975_4 * d.std(ddof=1) / np.sqrt(5)
    assert got["mean"] == pytest.approx(d.mean(), rel=1e-12) and got["half_width"] == pytest.approx(half, rel=1e-9)
    bests = [lowest(rooted8[s]) for s in SEEDS]
    assert n100["arms"]["rooted8"]["best_fid"]["mean"] == pytest.approx(np.mean(bests), rel=1e-12)
    assert "best_fid" not in n100["arms"]["logistic"].get("paired", {})
    assert sr.best_fid({"points": [{"kimg": 0.0, "fid50k_full": 1.0}, {"kimg": 4.0, "fid50k_full": math.nan}]}) \
        is None


def test_collapsed_runs_are_counted_and_their_pairs_left_out(tmp_path):
    summaries = experiment()
    run = next(r for r in summaries["n50"]["runs"] if r["arm"] == "rooted8" and r["seed"] == 2)
    run["points"][-1]["fid50k_full"] = float("nan")
    blown = next(r for r in summaries["n50"]["runs"] if r["arm"] == "rooted4" and r["seed"] == 0)
    blown["points"][-1]["fid50k_full"] = summaries["n50"]["start"]["fid50k_full"] + 50
    n50 = report_of(tmp_path, summaries)["training_sets"][0]
    assert (n50["arms"]["rooted8"]["collapsed"], n50["arms"]["rooted4"]["collapsed"]) == (1, 1)
    assert n50["arms"]["rooted8"]["collapsed_seeds"] == [2] and n50["arms"]["logistic"]["collapsed"] == 0
    assert n50["arms"]["rooted4"]["worse_than_start_seeds"] == [0]
    assert n50["arms"]["rooted8"]["paired"]["final"]["fid50k_full"]["n"] == 4
    assert n50["arms"]["rooted4"]["paired"]["final"]["fid50k_full"]["n"] == 5  # counted, not dropped
    assert n50["arms"]["rooted8"]["paired"]["final"]["kid50k_full"]["n"] == 5


@pytest.mark.parametrize("sd", [0.3, 2.0, 3.1, 7.3, 25.0])
def test_seeds_for_half_width_is_the_brute_force_smallest(sd):
    n = 2
    while 2 ** 20 > n and scipy_stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n) > 2.0:
        n += 1
    assert sr.seeds_for_half_width(sd) == n


def _power_by_integration(n: int, sd: float, delta: float = 2.0) -> float:
    """Power of the two-sided paired t-test, integrating the normal rejection probability over the chi-square
    distribution of the sample variance (independent of scipy's noncentral t)."""
    df = n - 1
    crit = scipy_stats.t.ppf(0.975, df)
    shift = delta * math.sqrt(n) / sd

    def reject(v: float) -> float:
        c = crit * math.sqrt(v / df)
        return (scipy_stats.norm.sf(c - shift) + scipy_stats.norm.cdf(-c - shift)) * scipy_stats.chi2.pdf(v, df)
    return integrate.quad(reject, 0, np.inf, limit=200)[0]


@pytest.mark.parametrize("sd", [1.5, 4.0])
def test_seeds_for_power_is_the_brute_force_smallest(sd):
    n = 2
    while _power_by_integration(n, sd) < 0.8:
        n += 1
    assert sr.seeds_for_power(sd) == n
    for m in (3, n, 60):  # 60: far past the answer, where scipy's noncentral t lower tail is NaN
        assert sr.paired_t_power(m, sd) == pytest.approx(_power_by_integration(m, sd), abs=1e-6)
    z = scipy_stats.norm.ppf(0.975) + scipy_stats.norm.ppf(0.8)
    assert math.ceil((z * sd / 2) ** 2) <= n <= math.ceil((z * sd / 2) ** 2) + 3  # the normal approximation
    assert sr.seeds_for_power(None) is None and sr.seeds_for_half_width(None) is None


def test_detectable_difference_pools_the_arms_without_divergence(tmp_path):
    summaries = experiment()
    report = report_of(tmp_path, summaries)
    n100 = report["training_sets"][1]
    runs = {(r["arm"], r["seed"]): r for r in summaries["n100"]["runs"]}
    ss, df = 0.0, 0
    for label in ("rooted8", "rooted4", "logistic-lecam"):
        d = np.array([_final(runs[label, s], "fid50k_full") - _final(runs["logistic", s], "fid50k_full")
                      for s in SEEDS])
        row = n100["detectable"]["arms"][label]
        assert row["sd"] == pytest.approx(d.std(ddof=1)) and row["n"] == 5
        assert row["half_width"] == pytest.approx(T_975_4 * d.std(ddof=1) / math.sqrt(5))
        ss, df = ss + d.var(ddof=1) * 4, df + 4
    pooled = n100["detectable"]["pooled"]
    assert pooled["sd"] == pytest.approx(math.sqrt(ss / df)) and pooled["df"] == 12
    assert pooled["seeds_for_half_width"] == sr.seeds_for_half_width(math.sqrt(ss / df))


@pytest.mark.parametrize("key, value", [("metric_seed", 1), ("kimg", 24.0), ("metrics_num", 1000),
                                        ("train_options", {"batch": 16}), ("ref_fingerprint", "sha256:0"),
                                        ("seeds", [0, 1, 2]), ("network", "other.pkl"), ("snap_kimg", 2.0)])
def test_mismatched_settings_are_refused_by_name(tmp_path, key, value):
    summaries = experiment()
    summaries["n50"]["config"][key] = value
    with pytest.raises(sr.ReportError, match=rf"n50\.json.* differ in {key}"):
        report_of(tmp_path, summaries)


def test_ambiguous_or_unreadable_summaries_are_refused(tmp_path):
    summaries = experiment()
    summaries["n50"]["runs"][5]["options"] = rooted(6)  # rooted8 of n50 named like the others, other options
    with pytest.raises(sr.ReportError, match="arm rooted8 has options"):
        report_of(tmp_path, summaries)
    twice = experiment()
    twice["n300-k32"] = make_summary(300, {"rooted8": rooted(8)})  # the same runs as n300's rooted8
    with pytest.raises(sr.ReportError, match="arm rooted8, seed 0 on the same training set"):
        report_of(tmp_path, twice)
    other_set = experiment()
    other_set["n50"]["config"]["num_data"] = 100
    with pytest.raises(sr.ReportError, match="two different training sets of 100 images"):
        report_of(tmp_path, other_set)
    broken = experiment()
    del broken["n50"]["runs"][3]["points"][2]["kimg"]
    with pytest.raises(sr.ReportError, match="n50.json: a run without arm, seed, options or points"):
        report_of(tmp_path, broken)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(sr.ReportError, match="bad.json is not a JSON comparison summary"):
        sr.load_summaries([str(bad)])
    old = experiment()["n50"]
    del old["config"]["data_fingerprint"]
    (tmp_path / "old.json").write_text(json.dumps(old))
    with pytest.raises(sr.ReportError, match="old.json lacks data_fingerprint"):
        sr.load_summaries([str(tmp_path / "old.json")])
    with pytest.raises(UserError, match=f"{tmp_path} is not a regular file \\(a folder\\)"):
        sr.load_summaries([str(tmp_path)])
    with pytest.raises(UserError, match="nothere.json"):
        sr.load_summaries([str(tmp_path / "nothere.json")])


def test_partial_and_missing_summaries_are_reported(tmp_path):
    summaries = experiment()
    del summaries["n300-k32"]
    summaries["n50"] = make_summary(50, {"logistic": LOGISTIC, "rooted8": rooted(8), "rooted4": rooted(4)})
    summaries["n50"]["runs"] = [r for r in summaries["n50"]["runs"] if not (r["arm"] == "rooted4" and r["seed"] > 2)]
    short = next(r for r in summaries["n50"]["runs"] if r["arm"] == "rooted8" and r["seed"] == 1)
    short["points"] = short["points"][:3]
    paths = write(tmp_path, summaries) + [str(tmp_path / "n300-k32.json")]
    loaded, missing = sr.load_summaries(paths, allow_missing=True)
    report = sr.scarce_report(loaded, missing)
    text = "\n".join(report["missing"])
    assert "n300-k32.json: summary not found" in text
    assert "n50.json: arm rooted4, seed(s) 3, 4 not run" in text
    assert "n50.json: arm rooted8, seed(s) 1 stopped before 12 kimg" in text
    n50 = report["training_sets"][0]
    assert n50["arms"]["rooted4"]["paired"]["seeds"] == [0, 1, 2]
    assert n50["arms"]["rooted8"]["paired"]["final"]["fid50k_full"]["n"] == 4
    assert "summary not found" in sr.report_markdown(report)


def test_a_set_without_its_baseline_is_reported(tmp_path):
    report = report_of(tmp_path, {"n300-k32": make_summary(300, {"rooted32": rooted(32)})})
    assert report["missing"] == ["300 images: no logistic runs (the baseline): no paired differences"]
    assert report["training_sets"][0]["arms"]["rooted32"]["paired"]["seeds"] == []


def test_outputs_and_command(tmp_path):
    paths = write(tmp_path, experiment())
    outdir = tmp_path / "report"
    result = CliRunner().invoke(cli_main, paths + ["--outdir", str(outdir)])
    assert result.exit_code == 0, result.output
    assert (outdir / "scarce.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((outdir / "report.json").read_text())
    assert [ts["num_data"] for ts in report["training_sets"]] == [50, 100, 300]
    md = (outdir / "report.md").read_text()
    for heading in ("## 50 images", "## 100 images", "## 300 images", "## Detectable difference", "## Missing"):
        assert heading in md
    row = next(line for line in md.splitlines() if line.startswith("| rooted32 |"))
    diff = report["training_sets"][2]["arms"]["rooted32"]["paired"]["final"]["fid50k_full"]
    assert f"{diff['mean']:.2f} [{diff['low']:.2f}, {diff['high']:.2f}]" in row
    result = CliRunner().invoke(cli_main, paths + [str(tmp_path / "gone.json"), "--outdir", str(outdir)])
    assert result.exit_code == 2 and "gone.json" in result.output
