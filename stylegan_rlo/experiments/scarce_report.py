"""The cross-comparison report of experiment 2 (scarce dogs): several comparison summaries, grouped by training set,
each arm paired by seed with the baseline (logistic) runs of the same training set, whichever summary holds them.

Pairing across summaries is sound only when the runs share the start network, the reference set, the metric settings,
the budget, the seeds and the shared training options; load_summaries checks that and refuses otherwise. The report
(report.json, report.md, scarce.png) says which summaries, arms and seeds were missing, and how many seeds a 2 FID
difference needs (interval half-width and power of the paired t-test).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats as scipy_stats

from stylegan_rlo.errors import UserError
from stylegan_rlo.evaluation.memorization import METRIC_NAME as MEM_METRIC
from stylegan_rlo.experiments.compare import MAX_SUMMARY_BYTES
from stylegan_rlo.experiments.compare_run import METRIC_LABELS
from stylegan_rlo.experiments.compare_stats import (COLLAPSE_FACTOR, CONFIDENCE, markdown_table, mean_sd,
                                                    metric_cell, run_collapsed, run_worse_than_start, t_interval,
                                                    value_names)
from stylegan_rlo.fileio import atomic_write, read_regular_bytes

REPORT_METRICS = ("fid50k_full", "kid50k_full", "pr50k3_inception_precision", "pr50k3_inception_recall", MEM_METRIC)
FID = "fid50k_full"
# Panel A switches to a symmetric log scale (linear within +-SYMLOG_LINEAR FID) when its values reach past
# +-SYMLOG_ABOVE, so that collapsed arms and the arms within a few FID of the baseline are both readable.
SYMLOG_ABOVE, SYMLOG_LINEAR = 40.0, 10.0
RECALL = "pr50k3_inception_recall"
PAIRED_SETTINGS = ("network", "ref_fingerprint", "metrics_num", "metric_seed", "kimg", "snap_kimg", "seeds",
                   "train_options")
READ_SETTINGS = ("data_fingerprint", "num_data", "arms", "metrics")  # the config's other fields the report reads
TARGET_HALF_WIDTH = 2.0  # FID: the difference the experiment wants to resolve
TARGET_POWER = 0.8
ALPHA = 1 - CONFIDENCE
MAX_SEEDS = 10_000  # the search for the seeds needed stops here (reported as more than this)


class ReportError(UserError):
    """Summaries that cannot be read or paired; the message names the file and the setting."""


@dataclass
class Summary:
    """One comparison summary as read: its file and its dict."""
    path: str
    data: dict

    @property
    def config(self) -> dict:
        return self.data["config"]


def load_summaries(paths: Sequence[str], allow_missing: bool = False) -> tuple[list[Summary], list[str]]:
    """The readable summaries, and the paths that do not exist (refused unless `allow_missing`). Every summary is
    checked for the fields the report uses; all of them must be pairable (check_pairable)."""
    summaries, missing = [], []
    for path in paths:
        if allow_missing and not os.path.lexists(path):
            missing.append(path)
            continue
        summaries.append(Summary(path, _read_summary(path)))
    if not summaries:
        raise ReportError(f"none of the summaries exist ({', '.join(paths) or 'none given'}); run the comparisons "
                          f"first")
    check_pairable(summaries)
    return summaries, missing


def _read_summary(path: str) -> dict:
    try:
        data = json.loads(read_regular_bytes(path, MAX_SUMMARY_BYTES, "comparison summary").decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ReportError(f"{path} is not a JSON comparison summary ({e}); give the summary.json that "
                          f"scripts/compare_objectives.py wrote") from None
    if not isinstance(data, dict) or not isinstance(data.get("config"), dict) or \
            not isinstance(data.get("runs"), list) or not isinstance(data.get("start"), dict):
        raise ReportError(f"{path} is not a comparison summary (no config, start and runs); give the summary.json "
                          f"that scripts/compare_objectives.py wrote")
    lacking = [k for k in PAIRED_SETTINGS + READ_SETTINGS if k not in data["config"]]
    if lacking:
        raise ReportError(f"{path} lacks {', '.join(lacking)} in its config (written by an older version?); its runs "
                          f"cannot be paired with the others: run that comparison again")
    cfg = data["config"]
    if not (isinstance(cfg["seeds"], list) and _is_number(cfg["kimg"]) and isinstance(cfg["num_data"], int)
            and isinstance(cfg["arms"], list) and all(isinstance(a, dict) and "label" in a for a in cfg["arms"])):
        raise ReportError(f"{path}: its config's seeds, kimg, num_data or arms are not what a comparison writes; "
                          f"give an unedited summary.json")
    for run in data["runs"]:
        if not (isinstance(run, dict) and isinstance(run.get("arm"), str) and isinstance(run.get("seed"), int)
                and isinstance(run.get("options"), dict) and isinstance(run.get("points"), list) and run["points"]
                and all(isinstance(p, dict) and _is_number(p.get("kimg")) for p in run["points"])):
            raise ReportError(f"{path}: a run without arm, seed, options or points (each with its kimg); give an "
                              f"unedited summary.json")
    return data


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_pairable(summaries: Sequence[Summary]) -> None:
    """Refuse summaries whose runs cannot be paired: a differing setting of PAIRED_SETTINGS, one arm label with two
    sets of options, or the same arm and seed on the same training set twice."""
    first = summaries[0]
    for s in summaries[1:]:
        for key in PAIRED_SETTINGS:
            if s.config[key] != first.config[key]:
                raise ReportError(f"{s.path} and {first.path} differ in {key} ({s.config[key]!r} against "
                                  f"{first.config[key]!r}); their runs are not paired by seed. Report only "
                                  f"comparisons made with the same settings")
    options: dict[str, tuple[dict, str]] = {}
    seen: dict[tuple, str] = {}
    for s in summaries:
        for run in s.data["runs"]:
            label, opts = run["arm"], run["options"]
            if options.setdefault(label, (opts, s.path))[0] != opts:
                raise ReportError(f"arm {label} has options {opts} in {s.path} but {options[label][0]} in "
                                  f"{options[label][1]}; one label must name one arm: relabel one of them")
            key = (s.config["data_fingerprint"], label, run["seed"])
            if key in seen:
                raise ReportError(f"arm {label}, seed {run['seed']} on the same training set is in {seen[key]} and "
                                  f"{s.path}; give each run once")
            seen[key] = s.path
    sizes: dict[int, str] = {}
    for s in summaries:
        if sizes.setdefault(s.config["num_data"], s.config["data_fingerprint"]) != s.config["data_fingerprint"]:
            raise ReportError(f"{s.path}: two different training sets of {s.config['num_data']} images; the report "
                              f"tells training sets apart by their size, so give one set per size")


def _value_at(run: dict, kimg: float, name: str) -> float | None:
    value = next((p.get(name) for p in run["points"] if p["kimg"] == kimg), None)
    return value if value is not None and math.isfinite(value) else None


def best_fid(run: dict) -> float | None:
    """The run's lowest finite FID after the start (the snapshot a user keeps: best-fid50k_full.pkl), None without
    one. It is chosen on the evaluation set itself, so it flatters every arm, the noisier ones most."""
    values = [p.get(FID) for p in run["points"] if p["kimg"] > 0]
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return min(finite) if finite else None


def _with_half_width(interval: dict) -> dict:
    half = None if interval["low"] is None else (interval["high"] - interval["low"]) / 2
    return dict(interval, half_width=half)


def _missing(summary: Summary) -> list[str]:
    """What a summary's own arms and seeds lack: runs not there, and runs that stopped before the final kimg."""
    cfg, out = summary.config, []
    labels = [a["label"] for a in cfg["arms"]]
    for label in labels:
        runs = {r["seed"]: r for r in summary.data["runs"] if r["arm"] == label}
        absent = [s for s in cfg["seeds"] if s not in runs]
        short = [s for s, r in runs.items() if r["points"][-1]["kimg"] < cfg["kimg"]]
        if absent:
            out.append(f"{summary.path}: arm {label}, seed(s) {', '.join(map(str, absent))} not run")
        if short:
            out.append(f"{summary.path}: arm {label}, seed(s) {', '.join(map(str, short))} stopped before "
                       f"{cfg['kimg']:g} kimg")
    return out


def _arm_report(label: str, runs: list[tuple[dict, Summary]], base: dict[int, dict], names: list[str],
                final_kimg: float, is_baseline: bool) -> dict:
    """One arm on one training set: its runs, final values, collapses and (other than the baseline) its paired
    differences against the baseline at every kimg."""
    by_seed = {r["seed"]: r for r, _ in runs}
    collapsed = [r["seed"] for r, s in runs if run_collapsed(r, s.data["start"], value_names(s.data))]
    worse = [r["seed"] for r, s in runs if run_worse_than_start(r, s.data["start"], value_names(s.data))]
    out = dict(options=runs[0][0]["options"], summaries=sorted({s.path for _, s in runs}), seeds=sorted(by_seed),
               collapsed=len(collapsed), collapsed_seeds=sorted(collapsed),
               worse_than_start=len(worse), worse_than_start_seeds=sorted(worse),
               final={n: mean_sd([_value_at(r, final_kimg, n) for r in by_seed.values()]) for n in names},
               best_fid=mean_sd([best_fid(r) for r in by_seed.values()]),
               final_interval={n: _with_half_width(t_interval(
                   [v for v in (_value_at(r, final_kimg, n) for r in by_seed.values()) if v is not None]))
                   for n in names})
    if not is_baseline:
        seeds = sorted(s for s in by_seed if s in base)
        kimgs = sorted({p["kimg"] for s in seeds for p in by_seed[s]["points"]} &
                       {p["kimg"] for s in seeds for p in base[s]["points"]})
        snaps = []
        for k in kimgs:
            row = dict(kimg=k)
            for n in names:
                pairs = [(_value_at(by_seed[s], k, n), _value_at(base[s], k, n)) for s in seeds]
                row[n] = _with_half_width(t_interval([a - b for a, b in pairs if a is not None and b is not None]))
            snaps.append(row)
        best_pairs = [(best_fid(by_seed[s]), best_fid(base[s])) for s in seeds]
        out["paired"] = dict(seeds=seeds, snapshots=snaps,
                             final=next((r for r in snaps if r["kimg"] == final_kimg), None),
                             best_fid=_with_half_width(t_interval([a - b for a, b in best_pairs
                                                                   if a is not None and b is not None])))
        pairs = [(_value_at(by_seed[s], final_kimg, FID), _value_at(base[s], final_kimg, FID)) for s in seeds]
        out["final_fid_diffs"] = [a - b if a is not None and b is not None else None for a, b in pairs]
    return out


def _smallest_n(enough, guess: float) -> int:
    """The smallest n in [2, MAX_SEEDS] with enough(n), for a predicate that stays true once it holds, scanning up
    one seed at a time from below `guess` (a normal-approximation estimate; from 2 when it is already enough there).
    MAX_SEEDS + 1 when even MAX_SEEDS is not enough."""
    n = min(max(2, int(guess * 0.8)), MAX_SEEDS)
    if enough(n):
        n = 2
    while n <= MAX_SEEDS and not enough(n):
        n += 1
    return n


def seeds_for_half_width(sd: float | None, half_width: float = TARGET_HALF_WIDTH,
                         confidence: float = CONFIDENCE) -> int | None:
    """The smallest number of seeds n >= 2 with t_{(1+confidence)/2, n-1} * sd / sqrt(n) <= half_width (falls with
    n); None without an sd, MAX_SEEDS + 1 when even MAX_SEEDS are not enough."""
    if sd is None:
        return None
    q = 0.5 + confidence / 2
    return _smallest_n(lambda n: scipy_stats.t.ppf(q, n - 1) * sd / math.sqrt(n) <= half_width,
                       (scipy_stats.norm.ppf(q) * sd / half_width) ** 2)


def paired_t_power(n: int, sd: float, difference: float = TARGET_HALF_WIDTH, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t-test with n pairs to detect a true mean difference `difference` when the
    per-seed differences are normal with standard deviation sd (noncentral t, exact under that assumption)."""
    if sd == 0:
        return 1.0
    df, ncp = n - 1, difference * math.sqrt(n) / sd
    crit = scipy_stats.t.ppf(1 - alpha / 2, df)
    wrong_side = scipy_stats.nct.cdf(-crit, df, ncp)  # rejecting in the wrong direction; NaN in scipy when it is
    return float(scipy_stats.nct.sf(crit, df, ncp) + (wrong_side if math.isfinite(wrong_side) else 0.0))  # ~1e-20


def seeds_for_power(sd: float | None, difference: float = TARGET_HALF_WIDTH, power: float = TARGET_POWER,
                    alpha: float = ALPHA) -> int | None:
    """The smallest n >= 2 whose paired t-test reaches `power` for `difference` (paired_t_power, which grows with
    n); None without an sd, MAX_SEEDS + 1 when even MAX_SEEDS are not enough."""
    if sd is None:
        return None
    z = scipy_stats.norm.ppf(1 - alpha / 2) + scipy_stats.norm.ppf(power)
    return _smallest_n(lambda n: paired_t_power(n, sd, difference, alpha) >= power, (z * sd / difference) ** 2)


def _detectable(arms: dict, num_seeds: int) -> dict:
    """The paired-difference sd of the final FID per arm and pooled over the arms without a collapsed run, the
    interval half-width with the seeds there are, and the seeds a 2 FID difference needs."""
    rows = {}
    pooled_ss, pooled_df = 0.0, 0
    for label, arm in arms.items():
        if "final_fid_diffs" not in arm:
            continue
        diffs = [d for d in arm["final_fid_diffs"] if d is not None]
        sd = mean_sd(diffs)["sd"]
        rows[label] = _detectable_row(sd, len(diffs))
        if sd is not None and not arm["collapsed"]:
            pooled_ss += sd ** 2 * (len(diffs) - 1)
            pooled_df += len(diffs) - 1
    pooled = _detectable_row(math.sqrt(pooled_ss / pooled_df) if pooled_df else None, num_seeds)
    return dict(arms=rows, pooled=dict(pooled, df=pooled_df))


def _detectable_row(sd: float | None, n: int) -> dict:
    half = None if sd is None or n < 2 else float(scipy_stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1) * sd / math.sqrt(n))
    return dict(sd=sd, n=n, half_width=half, seeds_for_half_width=seeds_for_half_width(sd),
                seeds_for_power=seeds_for_power(sd))


def scarce_report(summaries: Sequence[Summary], missing_summaries: Sequence[str] = (),
                  baseline: str = "logistic") -> dict:
    """The report as a JSON-able dict: per training set (smallest first) each arm's runs, final values and paired
    differences against `baseline` (taken from any summary of that set), what is missing, and the detectable
    difference."""
    cfg = summaries[0].config
    final_kimg = cfg["kimg"]
    missing = [f"{p}: summary not found" for p in missing_summaries]
    sets = []
    for fingerprint in dict.fromkeys(s.config["data_fingerprint"] for s in summaries):
        group = [s for s in summaries if s.config["data_fingerprint"] == fingerprint]
        names = [n for n in REPORT_METRICS if any(n in value_names(s.data) for s in group)]
        runs: dict[str, list[tuple[dict, Summary]]] = {}
        for s in group:
            missing += _missing(s)
            for r in s.data["runs"]:
                runs.setdefault(r["arm"], []).append((r, s))
        base = {r["seed"]: r for r, _ in runs.get(baseline, [])}
        num_data = group[0].config["num_data"]
        if not base:
            missing.append(f"{num_data} images: no {baseline} runs (the baseline): no paired differences")
        arms = {label: _arm_report(label, group_runs, base, names, final_kimg, label == baseline)
                for label, group_runs in runs.items()}
        for label, arm in arms.items():
            unpaired = [s for s in arm["seeds"] if s not in base]
            if label != baseline and base and unpaired:
                missing.append(f"{num_data} images: arm {label}, seed(s) {', '.join(map(str, unpaired))} without a "
                               f"{baseline} run of the same seed (not paired)")
        sets.append(dict(num_data=num_data, data_fingerprint=fingerprint, summaries=[s.path for s in group],
                         metrics=names, arms=arms, detectable=_detectable(arms, len(cfg["seeds"]))))
    sets.sort(key=lambda t: t["num_data"])
    return dict(baseline=baseline, confidence=CONFIDENCE, final_kimg=final_kimg,
                interval="Student t on per-seed paired differences (arm minus baseline, same seed)",
                power_method="noncentral t: two-sided paired t-test, normal per-seed differences",
                target_difference=TARGET_HALF_WIDTH, target_power=TARGET_POWER,
                settings={k: cfg[k] for k in PAIRED_SETTINGS}, missing=missing, training_sets=sets)


# ---- outputs -------------------------------------------------------------------------------------------------------

def _label(name: str) -> str:
    return METRIC_LABELS.get(name, name)


def _interval_cell(name: str, interval: dict | None) -> str:
    if interval is None or interval["mean"] is None:
        return "-"
    low, high = metric_cell(name, interval["low"]), metric_cell(name, interval["high"])
    return f"{metric_cell(name, interval['mean'])} [{low}, {high}]"


def _mean_sd_cell(name: str, value: dict) -> str:
    return "-" if value["mean"] is None else f"{metric_cell(name, value['mean'])} ± {metric_cell(name, value['sd'])}"


def _seeds_cell(n: int | None) -> str:
    return "-" if n is None else (f"> {MAX_SEEDS}" if n > MAX_SEEDS else str(n))


def report_markdown(report: dict) -> str:
    """report.md: per training-set size the final values and paired differences, the detectable difference, what is
    missing."""
    base, pct, kimg = report["baseline"], f"{report['confidence'] * 100:g}%", report["final_kimg"]
    s = report["settings"]
    lines = ["# Scarce dogs: the arms against the baseline by training-set size", "",
             f"Every arm against `{base}` on the same training set, paired by seed (same data order and latents), "
             f"at the final snapshot ({kimg:g} kimg). Start network `{s['network']}`; metrics from "
             f"{s['metrics_num'] if s['metrics_num'] is not None else '50k'} generated images (metric seed "
             f"{s['metric_seed']}); seeds {', '.join(map(str, s['seeds']))}. {pct} intervals: {report['interval']}; "
             "negative ΔFID is better for the arm. Collapsed: a non-finite metric or a final FID more than "
             f"{COLLAPSE_FACTOR:g} times the start network's; worse than start: a final FID above the start "
             "network's (collapsed runs included). Both counted, never dropped. Best FID: each run's lowest FID after "
             "the start (the snapshot kept as best-fid50k_full.pkl), paired by seed the same way; it is chosen on the "
             "evaluation set itself, so it flatters every arm, the noisier ones most.", "",
             "![scarce.png](scarce.png)", "",
             "## Missing", ""]
    lines += [f"- {m}" for m in report["missing"]] or ["Nothing: every arm of every summary has all its seeds."]
    for ts in report["training_sets"]:
        names = ts["metrics"]
        lines += ["", f"## {ts['num_data']} images", "",
                  "Summaries: " + ", ".join(f"`{p}`" for p in ts["summaries"]) + ".", ""]
        rows = []
        for label, arm in ts["arms"].items():
            paired = arm.get("paired") or {}
            fid = (paired.get("final") or {}).get(FID)
            rows.append([label, str(len(arm["seeds"])), _mean_sd_cell(FID, arm["final"][FID])
                         if FID in names else "-", "baseline" if label == base else _interval_cell(FID, fid),
                         "-" if not fid or fid["half_width"] is None else f"{fid['half_width']:.2f}",
                         _mean_sd_cell(FID, arm["best_fid"]),
                         "baseline" if label == base else _interval_cell(FID, paired.get("best_fid"))] +
                        [_mean_sd_cell(n, arm["final"][n]) if n in names else "-"
                         for n in ("pr50k3_inception_precision", RECALL, MEM_METRIC)] +
                        [str(arm["collapsed"]), str(arm["worse_than_start"])])
        lines += markdown_table(rows, ["arm", "seeds", "FID (mean ± sd)", f"ΔFID [{pct} CI]", "CI half-width",
                                       "best FID (mean ± sd)", f"Δbest FID [{pct} CI]", "precision", "recall",
                                       "memorization", "collapsed", "worse than start"])
        others = [n for n in names if n != FID]
        if others and any("paired" in a for a in ts["arms"].values()):
            lines += ["", f"Paired differences of the other metrics at {kimg:g} kimg (higher precision and recall "
                          "are better; lower KID and memorization):", ""]
            lines += markdown_table([[label, str(len(arm["paired"]["seeds"]))] +
                                     [_interval_cell(n, (arm["paired"]["final"] or {}).get(n)) for n in others]
                                     for label, arm in ts["arms"].items() if "paired" in arm],
                                    ["arm", "pairs"] + [f"Δ{_label(n)} [{pct} CI]" for n in others])
    lines += ["", "## Detectable difference", "",
              f"The sd of the per-seed FID differences (arm minus {base}) at {kimg:g} kimg, the half-width of the "
              f"{pct} interval with the seeds there are, the seeds needed for a half-width of "
              f"{report['target_difference']:g} FID (smallest n with t(0.975, n-1) sd / √n ≤ "
              f"{report['target_difference']:g}), and for {report['target_power'] * 100:g}% power to detect a "
              f"{report['target_difference']:g} FID difference at α = {1 - report['confidence']:.2g} "
              f"({report['power_method']}). Pooled: over the arms without a collapsed run.", ""]
    rows = []
    for ts in report["training_sets"]:
        det = ts["detectable"]
        for label, row in list(det["arms"].items()) + [("pooled", det["pooled"])]:
            rows.append([str(ts["num_data"]), label, str(row["n"]), "-" if row["sd"] is None else f"{row['sd']:.2f}",
                         "-" if row["half_width"] is None else f"{row['half_width']:.2f}",
                         _seeds_cell(row["seeds_for_half_width"]), _seeds_cell(row["seeds_for_power"])])
    lines += markdown_table(rows, ["images", "arm", "seeds", "sd of ΔFID", f"{pct} half-width",
                                   f"seeds for half-width {report['target_difference']:g}",
                                   f"seeds for {report['target_power'] * 100:g}% power"])
    return "\n".join(lines) + "\n"


def _is_plain_rooted(options: dict) -> bool:
    return options.get("loss") == "rooted" and set(options) <= {"loss", "k"}


def plot_report(report: dict, path: str) -> None:
    """scarce.png: (A) the paired FID difference against the training-set size, (B) FID and (C) recall against k
    on the largest training set, the baseline as a band."""
    import matplotlib  # start-up: matplotlib loads only when a plot is drawn (not on the commands' import path)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # start-up, as matplotlib above
    base, sets = report["baseline"], report["training_sets"]
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    ax = axes[0]
    labels = list(dict.fromkeys(label for ts in sets for label in ts["arms"] if label != base))
    for i, label in enumerate(labels):
        pts = [(ts["num_data"], ts["arms"][label]["paired"]["final"]) for ts in sets
               if label in ts["arms"] and "paired" in ts["arms"][label] and ts["arms"][label]["paired"]["final"]
               and ts["arms"][label]["paired"]["final"][FID]["mean"] is not None]
        if not pts:
            continue
        x = np.array([n for n, _ in pts], dtype=float) * 1.04 ** (i - (len(labels) - 1) / 2)  # apart, not on top
        y = np.array([p[FID]["mean"] for _, p in pts])
        err = np.array([p[FID]["half_width"] or 0.0 for _, p in pts])
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, color=f"C{i}", linestyle="-" if len(pts) > 1 else "none",
                    label=label)
    ax.axhline(0, color="gray", linewidth=1)
    low, high = ax.get_ylim()
    symlog = max(abs(low), abs(high)) > SYMLOG_ABOVE
    if symlog:  # a collapsing arm's interval (+-100 FID) would flatten every other arm's to a line
        ax.set_yscale("symlog", linthresh=SYMLOG_LINEAR)
    ax.set_xscale("log")
    ax.set_xticks([ts["num_data"] for ts in sets], [str(ts["num_data"]) for ts in sets])
    ax.minorticks_off()
    ax.set_xlabel("training images (log scale)")
    ax.set_ylabel(f"ΔFID vs {base} at {report['final_kimg']:g} kimg"
                  + (f" (log beyond ±{SYMLOG_LINEAR:g})" if symlog else ""))
    ax.set_title(f"A: paired FID difference (mean, {report['confidence'] * 100:g}% CI; < 0: better)")
    for ax, name, letter in ((axes[1], FID, "B"), (axes[2], RECALL, "C")):
        _plot_against_k(ax, sets[-1] if sets else None, name, base, report, letter)
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)


def _plot_against_k(ax, ts: dict | None, name: str, base: str, report: dict, letter: str) -> None:
    """One metric against k on one training set: the plain rooted arms as a line, other rooted arms (e.g. the
    stabilized k=2) as their own markers, the baseline as a horizontal band."""
    title = f"{letter}: {_label(name)} against k"
    if ts is None or name not in ts["metrics"]:
        ax.set_title(f"{title} ({_label(name)} not measured)")
        return
    ax.set_title(f"{title}, {ts['num_data']} images (mean, {report['confidence'] * 100:g}% CI)")
    rooted = sorted(((arm["options"]["k"], label, arm["final_interval"][name]) for label, arm in ts["arms"].items()
                     if arm["options"].get("loss") == "rooted" and arm["final_interval"][name]["mean"] is not None),
                    key=lambda t: t[0])
    plain = [t for t in rooted if _is_plain_rooted(ts["arms"][t[1]]["options"])]
    if plain:
        ax.errorbar([k for k, _, _ in plain], [v["mean"] for _, _, v in plain], marker="o", capsize=3, color="C0",
                    yerr=[v["half_width"] or 0.0 for _, _, v in plain], label="rooted (k only)")
    for i, (k, label, v) in enumerate(t for t in rooted if t not in plain):
        ax.errorbar([k * 1.06], [v["mean"]], yerr=[v["half_width"] or 0.0], marker="s", capsize=3,
                    color=f"C{i + 1}", linestyle="none", label=label)
    b = ts["arms"].get(base, {}).get("final_interval", {}).get(name)
    if b and b["mean"] is not None:
        ax.axhline(b["mean"], color="gray", linewidth=1, label=base)
        if b["half_width"] is not None:
            ax.axhspan(b["low"], b["high"], color="gray", alpha=0.2)
    ax.set_xscale("log", base=2)
    ks = sorted({k for k, _, _ in rooted})
    if ks:
        ax.set_xticks(ks, [f"{k:g}" for k in ks])
        ax.minorticks_off()
    ax.set_xlabel("k (rooted)")
    ax.set_ylabel(f"{_label(name)} at {report['final_kimg']:g} kimg")


def write_report(report: dict, outdir: str) -> None:
    """report.json, report.md and scarce.png in outdir (each written atomically)."""
    os.makedirs(outdir, exist_ok=True)
    with atomic_write(os.path.join(outdir, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
    with atomic_write(os.path.join(outdir, "report.md"), "w") as f:
        f.write(report_markdown(report))
    plot_report(report, os.path.join(outdir, "scarce.png"))
