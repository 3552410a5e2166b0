"""Comparing adversarial objectives and other training options: fine-tune one checkpoint on one dataset once per
(arm, seed) with the same budget and seeds, measure FID/KID against a reference set at every snapshot, and write the
comparison (before/after image grids, metrics.png, summary.md, summary.json) into one output folder.

An arm is a label plus the training options that set it apart (experiments.arms); all other options are shared.
Every run starts from the same network, so its kimg-0 evaluation is computed once and shared. Training goes through
the training library (setup_training_options + launch_training) and metrics through evaluation.metrics, so the run
directories are ordinary ones (stats.jsonl, snapshots, metric-<name>.jsonl) that every other tool understands. Runs
happen one after another in this process, or N at a time in child processes (`jobs`, experiments.compare_run).
"""

from __future__ import annotations

import glob
import json
import math
import os
import time
from dataclasses import asdict
from typing import Any, Callable, Sequence

import numpy as np
import torch

from stylegan_rlo.checkpoints.pickles import PickleError, load_network_pkl
from stylegan_rlo.data.dataset import DatasetError, ImageFolderDataset
from stylegan_rlo.errors import UserError
from stylegan_rlo.evaluation.generate import parse_int_list
from stylegan_rlo.evaluation.memorization import METRIC_NAME as MEM_METRIC
from stylegan_rlo.evaluation.metrics import (MetricError, dataset_fingerprint, evaluate_datasets, evaluate_snapshot,
                                             validate_metric_names)
from stylegan_rlo.experiments.arms import Arm, changed_arms, check_arms
from stylegan_rlo.experiments.compare_run import (METRIC_LABELS, RunJob, RunResult, format_seconds, format_values,
                                                  grid_images, run_in_children, run_one, save_labelled_blocks)
from stylegan_rlo.experiments.compare_stats import (arm_label, comparison_statistics, markdown_table, metric_cell,
                                                    statistics_markdown, value_names)
from stylegan_rlo.experiments.jobs import gpu_groups
from stylegan_rlo.fileio import atomic_write
from stylegan_rlo.training.best_snapshot import resolve_best_metric
from stylegan_rlo.training.config import setup_training_options
from stylegan_rlo.training.options import TRAINING_OPTIONS

# Options the comparison sets itself for every run (the table's non-per-run ones, and exact_resume: each run keeps
# its own seed); the rest of the training options may be passed through, and the per-arm ones set by an arm.
CONTROLLED_OPTIONS = tuple(option.name for option in TRAINING_OPTIONS if not option.per_run) + ("exact_resume",)
HIGHER_IS_BETTER = ("pr50k3_inception_precision", "pr50k3_inception_recall", "pr50k3_full_precision",
                    "pr50k3_full_recall")
START_LABEL = "start (shared)"
FINGERPRINTS = (("data_fingerprint", "--data", "data"), ("ref_fingerprint", "--ref", "ref"))  # checked by --continue
MAX_SUMMARY_BYTES = 64 * 2**20  # a summary.json read back by --continue (real ones are kilobytes)


class CompareError(UserError):
    """A comparison that cannot be run as asked; the message says which input is wrong and what to do."""


def parse_seeds(text: str) -> list[int]:
    """'0,1' or '0-3' -> distinct seeds in order."""
    seeds = parse_int_list(text, what="seed list")
    if len(set(seeds)) != len(seeds):
        raise CompareError(f"seed list {text!r} repeats a seed")
    return seeds


# ---- the comparison ------------------------------------------------------------------------------------------------

def _validate(network: str, data: str, ref: str, seeds: Sequence[int], kimg: float, snap_kimg: float,
              metrics: Sequence[str], metrics_num: int | None, train_options: dict,
              jobs: int) -> tuple[list[str], ImageFolderDataset, ImageFolderDataset]:
    if not seeds:
        raise CompareError("no seeds given; e.g. --seeds 0,1")
    for value, name in ((kimg, "kimg"), (snap_kimg, "snap-kimg")):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise CompareError(f"--{name} must be a positive number of thousands of images, got {value!r}")
    if snap_kimg > kimg:
        raise CompareError(f"--snap-kimg {snap_kimg:g} is longer than the whole run (--kimg {kimg:g}); "
                           f"choose a snapshot interval of at most {kimg:g}")
    if snap_kimg < 1 and snap_kimg != kimg:
        raise CompareError(f"--snap-kimg {snap_kimg:g}: snapshots are named by whole kimg, so intervals below 1 "
                           f"would overwrite each other; use at least 1 (or one snapshot: --snap-kimg = --kimg)")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise CompareError(f"--jobs must be a whole number of at least 1, got {jobs!r}")
    try:
        names = validate_metric_names(list(metrics))
    except MetricError as e:
        raise CompareError(f"--metrics: {e}") from e
    if not names:
        raise CompareError("--metrics: at least one metric is needed (fid50k_full, kid50k_full, pr50k3_inception, "
                           "mem50k_inception)")
    if metrics_num is not None and (isinstance(metrics_num, bool) or not isinstance(metrics_num, int)
                                    or metrics_num < 2):
        raise CompareError(f"--metrics-num must be an integer of at least 2, got {metrics_num!r}")
    clash = sorted(set(train_options) & set(CONTROLLED_OPTIONS))
    if clash:
        raise CompareError(f"training option(s) {clash} are set by the comparison itself; use its own arguments "
                           f"(loss and k: an arm's options)")
    if not os.path.exists(network) and "://" not in network:
        raise CompareError(f"--network {network}: file not found")
    datasets = []
    for flag, path in (("--data", data), ("--ref", ref)):
        try:
            datasets.append(ImageFolderDataset(path))
        except (DatasetError, OSError) as e:
            raise CompareError(f"{flag} {path}: {e}") from e
    a, b = datasets
    if (a.resolution, a.num_channels) != (b.resolution, b.num_channels):
        raise CompareError(f"--data {data} has {a.num_channels}-channel {a.resolution}x{a.resolution} images but "
                           f"--ref {ref} has {b.num_channels}-channel {b.resolution}x{b.resolution} ones; compare "
                           f"like with like")
    return names, a, b


def _run_desc(arm: Arm, seed: int) -> str:
    """The run directory's extra description: the arm's label (unless the objective's name in the directory name
    already is the label, as for --objectives) and the seed."""
    return f"seed{seed}" if arm.label == arm.objective.slug else f"{arm.label}-seed{seed}"


def compare_objectives(*, network: str, data: str, ref: str, arms: Sequence[Arm], seeds: Sequence[int],
                       kimg: float, snap_kimg: float, outdir: str,
                       metrics: Sequence[str] = ("fid50k_full", "kid50k_full"), metrics_num: int | None = None,
                       device: str = "auto", train_options: dict | None = None,
                       grid: tuple[int, int] = (8, 4), best_metric: str | None = None,
                       metric_seed: int = 0, inception_weights: str | None = None, resume: bool = False,
                       jobs: int = 1, log: Callable[[str], Any] = print, show_progress: bool = True) -> dict:
    """Fine-tune `network` on `data` for `kimg` (on top of its own progress) once per arm and seed, with FID/KID
    against `ref` every `snap_kimg`; write the comparison into `outdir`; return the summary dict.

    `train_options` are further setup_training_options keywords (batch, gamma, mirror, aug, ema_kimg, ...), shared
    by all runs; an arm's options (experiments.arms) override them for its runs (set ema_kimg for short runs: the
    preset's G_ema half-life of 10 kimg is too long for them). Each run keeps its best snapshot by `best_metric`
    (default: the first metric). Every run's options are validated before the first one starts. `jobs` > 1 runs that
    many runs at once in child processes (the results do not depend on it). An `outdir` that already holds a
    comparison is refused unless `resume`: then the runs it finished (with the same settings) are kept and only the
    missing ones run.
    """
    arms = check_arms(arms)
    train_options = dict(train_options or {})
    names, data_set, ref_set = _validate(network, data, ref, seeds, kimg, snap_kimg, metrics, metrics_num,
                                         train_options, jobs)
    try:
        best_metric = resolve_best_metric(best_metric, names)  # each run keeps best-<metric>.pkl
    except UserError as e:
        raise CompareError(str(e)) from e
    trust = bool(train_options.get("trust_pickle", False))
    try:
        start = load_network_pkl(network, trust_pickle=trust)
    except (PickleError, OSError) as e:
        raise CompareError(f"--network {network}: {e}") from e
    start_nimg = int((start.get("progress") or {}).get("cur_nimg", 0))
    start_kimg = start_nimg / 1000

    plans = []  # (arm, seed, run description, training_loop options)
    for arm in arms:
        for seed in seeds:
            try:
                desc, options = setup_training_options(
                    data=data, resume=network, seed=seed, kimg=start_kimg + kimg, tick=snap_kimg, snap=1,
                    device=device, desc=_run_desc(arm, seed), exact_resume=False,
                    **dict(train_options, **arm.options))  # a training state would replace each run's seed
            except UserError as e:
                raise CompareError(f"arm {arm.label}, seed {seed}: {e}") from e
            plans.append((arm, seed, desc, options))
    first = plans[0][3]
    run_device = torch.device(first.device)
    os.makedirs(outdir, exist_ok=True)
    config = dict(network=network, data=data, ref=ref, outdir=outdir, arms=[arm.to_json() for arm in arms],
                  seeds=list(seeds), kimg=kimg, snap_kimg=snap_kimg, start_kimg=start_kimg, metrics=names,
                  metrics_num=metrics_num, metric_seed=metric_seed, device=str(run_device), best_metric=best_metric,
                  batch=first.batch_size, ema_kimg=first.ema_kimg, train_options=train_options,
                  num_data=len(data_set), num_ref=len(ref_set), mirror=bool(first.training_set_kwargs["xflip"]),
                  data_fingerprint=dataset_fingerprint(data), ref_fingerprint=dataset_fingerprint(ref))
    finished = _finished_runs(outdir, config, arms, resume, log)
    timings: dict[str, float] = dict(jobs=jobs)
    log(f"Comparing {len(plans)} run(s): arms {', '.join(a.label for a in arms)} x seeds "
        f"{', '.join(map(str, seeds))}; {kimg:g} kimg each, FID/KID every {snap_kimg:g} kimg on {run_device}"
        + (f", {jobs} runs at a time" if jobs > 1 else ""))

    t0 = time.time()
    log(f"Noise floor: {', '.join(names)} of {data} ({len(data_set)} images) against {ref} ({len(ref_set)})...")
    floor = {k: v for r in evaluate_datasets(data, ref, metrics=names, device=run_device, seed=metric_seed,
                                             inception_weights=inception_weights) for k, v in r["results"].items()}
    log("Noise floor: " + format_values(floor))
    timings["noise_floor_sec"] = time.time() - t0

    t0 = time.time()
    G0 = start["G_ema"] if start.get("G_ema") is not None else start["G"]
    log(f"Start network (kimg 0, shared by all runs): {', '.join(names)} of {metrics_num or 'the default number of'} "
        f"generated images against {ref}...")
    memorization = dict(training_data=data, training_mirror=config["mirror"],
                        nn_picture=os.path.join(outdir, "nn-start.png")) if MEM_METRIC in names else {}
    start_records = evaluate_snapshot(G0, metrics=names, data=ref, num_gen=metrics_num, device=run_device,
                                      seed=metric_seed, snapshot_pkl=os.path.abspath(network), verbose=show_progress,
                                      inception_weights=inception_weights, **memorization)
    start_records = [dict(r, kimg=0.0, shared_start=True) for r in start_records]
    start_point = dict(kimg=0.0, wall_sec=0.0, snapshot=os.path.abspath(network),
                       **{k: v for r in start_records for k, v in r["results"].items()})
    log("Start network: " + format_values(start_point))
    before = grid_images(G0, grid, run_device)
    save_labelled_blocks([("before (start network)", before)], grid, os.path.join(outdir, "grid-start.png"))
    timings["start_eval_sec"] = time.time() - t0
    del G0, start

    done = dict(finished)  # (arm label, seed) -> RunResult; summaries list them in plan order
    order = [(arm.label, seed) for arm, seed, _desc, _options in plans]

    def record(job: RunJob, result: RunResult) -> None:
        done[result.arm, result.seed] = result
        timings["runs_wall_sec"] = time.time() - runs_t0
        write_outputs(_summary(config, floor, start_point, [done[key] for key in order if key in done], timings),
                      outdir)
        final = result.points[-1]
        log(f"{job.prefix} {job.name}: done in {format_seconds(result.train_sec + result.eval_sec)} (training "
            f"{format_seconds(result.train_sec)}); kimg {final['kimg']:g}: {format_values(final)}; "
            f"{outdir}/summary.md updated")

    write_outputs(_summary(config, floor, start_point, [done[key] for key in order if key in done], timings), outdir)
    todo = []
    for i, (arm, seed, desc, options) in enumerate(plans):
        job = RunJob(index=i, total=len(plans), arm=arm.to_json(), seed=seed, desc=desc, options=options, kimg=kimg,
                     outdir=outdir, names=names, ref=ref, metrics_num=metrics_num, device=str(run_device),
                     metric_seed=metric_seed, start_nimg=start_nimg, trust=trust, inception_weights=inception_weights,
                     best_metric=best_metric, grid=list(grid), start_records=start_records, start_point=start_point)
        if (arm.label, seed) in finished:
            log(f"{job.prefix} {job.name}: kept from the earlier comparison ({finished[arm.label, seed].run_dir})")
        else:
            todo.append(job)
    runs_t0 = time.time()
    if jobs > 1 and len(todo) > 1:
        run_in_children(todo, jobs, before, gpu_groups(str(run_device), first.num_gpus), record, log)
    else:
        for job in todo:
            log("")
            record(job, run_one(job, before, log, show_progress))
    summary = _summary(config, floor, start_point, [done[key] for key in order if key in done], timings)
    log(f"\nWrote {outdir}: summary.md, summary.json, metrics.png, grid-*.png, runs/")
    return summary


def _finished_runs(outdir: str, config: dict, arms: Sequence[Arm], resume: bool,
                   log: Callable[[str], Any]) -> dict[tuple, RunResult]:
    """The runs an earlier comparison in `outdir` finished, by (arm label, seed); {} for a new outdir. Refuses an
    existing comparison unless `resume`, and one made with other settings or arms (its runs would not be
    comparable), naming the arms that changed."""
    path = os.path.join(outdir, "summary.json")
    if not os.path.exists(path):
        return {}
    if not resume:
        raise CompareError(f"--outdir {outdir} already holds a comparison ({path}); pass --continue to finish it "
                           f"(its finished runs are kept), or choose another --outdir")
    if os.path.getsize(path) > MAX_SUMMARY_BYTES:
        raise CompareError(f"{path} is {os.path.getsize(path) / 2**20:.0f} MiB, far larger than a comparison summary; "
                           f"choose another --outdir")
    try:
        with open(path, encoding="utf-8") as f:
            previous = json.load(f)
        old_config = {k: v for k, v in previous["config"].items() if k != "outdir"}
        old_runs = [RunResult(**run) for run in previous["runs"]]
        arm_changes = changed_arms(old_config["arms"], arms)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise CompareError(f"--continue: {path} is not a comparison summary this version can read ({e!r}); "
                           f"choose another --outdir") from None
    if arm_changes:
        raise CompareError(f"--continue: the comparison in {outdir} was made with other arms ({'; '.join(arm_changes)}"
                           f"); continue it with the same arms, or choose another --outdir")
    _check_fingerprints(old_config, config, outdir, log)
    new_config = {k: v for k, v in json.loads(json.dumps(config)).items() if k != "outdir"}
    for key, _flag, _name in FINGERPRINTS:
        old_config.pop(key, None)
        new_config.pop(key)
    changed = sorted(k for k in old_config.keys() | new_config.keys() if old_config.get(k) != new_config.get(k))
    if changed:
        raise CompareError(f"--continue: the comparison in {outdir} was made with other settings "
                           f"({', '.join(changed)} differ); continue it with the same options, or choose another "
                           f"--outdir")
    kept = {(run.arm, run.seed): run for run in old_runs if os.path.isdir(run.run_dir)}
    kept_dirs = {os.path.abspath(run.run_dir) for run in kept.values()}
    for folder in sorted(glob.glob(os.path.join(outdir, "runs", "*"))):
        if os.path.isdir(folder) and os.path.abspath(folder) not in kept_dirs:
            log(f"Continuing: {folder} did not finish; it is left as it was and its run starts again")
    log(f"Continuing the comparison in {outdir}: {len(kept)} finished run(s) kept")
    return kept


def _check_fingerprints(old_config: dict, config: dict, outdir: str, log: Callable[[str], Any]) -> None:
    """Refuse to continue a comparison whose datasets' contents changed since it began (same path, other images):
    its finished runs and noise floor would not be comparable with new ones. Summaries written before datasets were
    fingerprinted cannot be checked; that is said."""
    for key, flag, name in FINGERPRINTS:
        if key not in old_config:
            log(f"Continuing: {outdir}/summary.json predates dataset fingerprints; {flag} {config[name]} is assumed "
                f"unchanged")
        elif old_config[key] != config[key]:
            raise CompareError(f"--continue: {flag} {config[name]} is not the dataset the comparison in {outdir} "
                               f"began with (its images' names, sizes or checksums changed); its finished runs were "
                               f"trained or measured on the old one. Restore the old dataset, or start the "
                               f"comparison again in another --outdir")


def _summary(config: dict, floor: dict, start: dict, results: Sequence[RunResult], timings: dict) -> dict:
    summary = dict(config=config, noise_floor=floor, start=start, runs=[asdict(r) for r in results],
                   timings=dict(timings, train_sec=sum(r.train_sec for r in results),
                                eval_sec=sum(r.eval_sec for r in results)))
    summary["statistics"] = comparison_statistics(summary)
    return summary


# ---- outputs -------------------------------------------------------------------------------------------------------

def write_outputs(summary: dict, outdir: str) -> None:
    """summary.json, summary.md and metrics.png from a summary dict (all written atomically)."""
    with atomic_write(os.path.join(outdir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    with atomic_write(os.path.join(outdir, "summary.md"), "w") as f:
        f.write(summary_markdown(summary))
    plot_metrics(summary, os.path.join(outdir, "metrics.png"))


def summary_markdown(summary: dict) -> str:
    """The human-readable comparison: set-up, noise floor, final and per-snapshot tables (and seed means)."""
    cfg, floor, runs = summary["config"], summary["noise_floor"], summary["runs"]
    names = value_names(summary)
    header = ["arm", "seed", "kimg"] + [METRIC_LABELS.get(n, n) for n in names] + ["wall time"]

    def row(run: dict | None, point: dict) -> list[str]:
        ident = [START_LABEL, "-"] if run is None else [arm_label(run), str(run["seed"])]
        return ident + [f"{point['kimg']:g}"] + [metric_cell(n, point.get(n)) for n in names] + \
            [format_seconds(point.get("wall_sec")) if run is not None else "-"]

    num = cfg["metrics_num"] if cfg["metrics_num"] is not None else "50k (default)"
    lines = [
        "# Comparison", "",
        f"Start network `{cfg['network']}` (at {cfg['start_kimg']:g} kimg of its own training; kimg below counts "
        f"from there), fine-tuned on `{cfg['data']}` ({cfg['num_data']} images"
        f"{', x-flips added' if cfg['mirror'] else ''}) for {cfg['kimg']:g} kimg per run, batch {cfg['batch']}, "
        f"on {cfg['device']}. Same seeds, budget and options for every run"
        + (f" (shared training options: {', '.join(f'{k}={v}' for k, v in cfg['train_options'].items())})"
           if cfg["train_options"] else "") + "; the arms differ only in their own options (below).",
        f"Metrics: {num} generated images (fixed latents, metric seed {cfg['metric_seed']}) against "
        f"`{cfg['ref']}` ({cfg['num_ref']} images), every {cfg['snap_kimg']:g} kimg. "
        "Wall time: training time up to that snapshot (from stats.jsonl; metric evaluation not included).", "",
        "## Noise floor", "",
        f"Real against real: the training images (`{cfg['data']}`, {cfg['num_data']}) against the reference "
        f"(`{cfg['ref']}`, {cfg['num_ref']}): " + ", ".join(f"{METRIC_LABELS.get(n, n)} {metric_cell(n, floor[n])}"
                                                            for n in names if n in floor) + ".",
        "A generator as good as the training set itself would score about this; differences between runs smaller "
        "than the spread between seeds mean nothing. FID is biased upward for small samples, so it is comparable "
        "with the floor only when the number of generated images equals the training set size; KID is unbiased.", "",
    ]
    if cfg.get("arms"):
        lines += ["## Arms", "", "Paired differences are against the first arm.", ""]
        lines += markdown_table([[a["label"], Arm(a["label"], a["options"]).description] for a in cfg["arms"]],
                                ["arm", "options"]) + [""]
    lines += ["## Final snapshot of each run", ""]
    start = summary["start"]
    finals = [row(r, r["points"][-1]) for r in runs if len(r["points"]) > 1]
    lines += markdown_table([row(None, start)] + finals, header)
    best = cfg.get("best_metric")
    if best and any(r.get("best") for r in runs):
        label = METRIC_LABELS.get(best, best)
        lines += ["", f"## Best snapshot of each run (by {label})", "",
                  f"Kept in each run directory as `best-{best}.pkl` (with `best-{best}.json`).", ""]
        lines += markdown_table([[arm_label(r), str(r["seed"]), f"{r['best']['kimg']:g}",
                                  metric_cell(best, r["best"]["value"]), r["best"]["snapshot"]]
                                 for r in runs if r.get("best")], ["arm", "seed", "kimg", label, "snapshot"])
    if runs:
        lines += [""] + statistics_markdown(comparison_statistics(summary), names, METRIC_LABELS)
    lines += ["", "## Every snapshot", ""]
    lines += markdown_table([row(None, start)] + [row(r, p) for r in runs for p in r["points"][1:]], header)
    t = summary["timings"]
    in_parallel = f" ({t['jobs']} at a time)" if t.get("jobs", 1) > 1 else ""
    lines += ["", f"Time: noise floor {format_seconds(t.get('noise_floor_sec'))}, start network "
                  f"{format_seconds(t.get('start_eval_sec'))}, training {format_seconds(t['train_sec'])}, "
                  f"snapshot evaluation and grids {format_seconds(t['eval_sec'])} (summed over the runs)"
              + (f"; the runs took {format_seconds(t['runs_wall_sec'])}{in_parallel}" if "runs_wall_sec" in t
                 else "") + ".",
              "Run directories: " + ", ".join(f"`{os.path.relpath(r['run_dir'], cfg['outdir'])}`" for r in runs)
              + ".", ""]
    return "\n".join(lines)


def plot_metrics(summary: dict, path: str) -> None:
    """metrics.png: each metric against kimg: per arm the mean over seeds with a +-sd band, each run as a
    thin line, the noise floor dashed."""
    import matplotlib  # start-up: matplotlib loads only when a plot is drawn (not on the commands' import path)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # start-up, as matplotlib above
    names = value_names(summary)
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 4), squeeze=False)
    stats = comparison_statistics(summary)
    for ax, name in zip(axes[0], names):
        for i, (label, obj) in enumerate(stats["arms"].items()):
            for r in (r for r in summary["runs"] if arm_label(r) == label):
                ax.plot([p["kimg"] for p in r["points"]], [p[name] for p in r["points"]], color=f"C{i}",
                        linewidth=0.7, alpha=0.35)
            snaps = [s for s in obj["snapshots"] if s[name]["mean"] is not None]
            xs = np.array([s["kimg"] for s in snaps])
            mean = np.array([s[name]["mean"] for s in snaps])
            sd = np.array([s[name]["sd"] or 0.0 for s in snaps])
            ax.plot(xs, mean, marker="o", color=f"C{i}", label=f"{label} (mean of {obj['runs']} run(s))")
            ax.fill_between(xs, mean - sd, mean + sd, color=f"C{i}", alpha=0.2)
        if name in summary["noise_floor"]:
            ax.axhline(summary["noise_floor"][name], color="gray", linestyle="--", linewidth=1,
                       label="noise floor (train vs ref)")
        ax.set_xlabel("kimg (fine-tuning)")
        ax.set_ylabel(METRIC_LABELS.get(name, name))
        better = "higher" if name in HIGHER_IS_BETTER else "lower"
        ax.set_title(f"{METRIC_LABELS.get(name, name)} against the reference set ({better} is better)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
