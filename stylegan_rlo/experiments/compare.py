"""Comparing adversarial objectives: fine-tune one checkpoint on one dataset once per (objective, k, seed) with the
same budget and seeds, measure FID/KID against a reference set at every snapshot, and write the comparison
(before/after image grids, metrics.png, summary.md, summary.json) into one output folder.

Every run starts from the same network, so its kimg-0 evaluation is computed once and shared. Training goes through
the training library (setup_training_options + launch_training) and metrics through evaluation.metrics, so the run
directories are ordinary ones (stats.jsonl, snapshots, metric-<name>.jsonl) that every other tool understands.
"""

from __future__ import annotations

import glob
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from stylegan_rlo.checkpoints.pickles import PickleError, load_network_pkl
from stylegan_rlo.data.dataset import DatasetError, ImageFolderDataset
from stylegan_rlo.errors import UserError
from stylegan_rlo.evaluation.generate import generate_images, parse_int_list, seed_latents
from stylegan_rlo.evaluation.metrics import (MetricError, append_records, evaluate_datasets, evaluate_snapshot,
                                             validate_metric_names)
from stylegan_rlo.experiments.compare_stats import (comparison_statistics, markdown_table, metric_cell,
                                                    statistics_markdown, value_names)
from stylegan_rlo.fileio import atomic_write
from stylegan_rlo.images import make_grid, save_png, to_uint8
from stylegan_rlo.objectives import Objective
from stylegan_rlo.training.best_snapshot import read_best, resolve_best_metric, update_best
from stylegan_rlo.training.config import setup_training_options
from stylegan_rlo.training.options import TRAINING_OPTIONS
from stylegan_rlo.training.launch import launch_training

# Options the comparison sets itself for every run (the table's non-per-run ones, and exact_resume: each run keeps
# its own seed); the rest of the training options may be passed through.
CONTROLLED_OPTIONS = tuple(option.name for option in TRAINING_OPTIONS if not option.per_run) + ("exact_resume",)
METRIC_LABELS = {"fid50k_full": "FID", "kid50k_full": "KID", "pr50k3_inception_precision": "precision",
                 "pr50k3_inception_recall": "recall"}
HIGHER_IS_BETTER = ("pr50k3_inception_precision", "pr50k3_inception_recall")
START_LABEL = "start (shared)"
MAX_SUMMARY_BYTES = 64 * 2**20  # a summary.json read back by --continue (real ones are kilobytes)


class CompareError(UserError):
    """A comparison that cannot be run as asked; the message says which input is wrong and what to do."""


def parse_objectives(text: str) -> list[Objective]:
    """'logistic,rooted:8,rooted:2' -> objectives ('rooted' alone means k=8); duplicates are an error."""
    out: list[Objective] = []
    for part in str(text).split(","):
        try:
            obj = Objective.parse(part)
        except UserError as e:
            raise CompareError(f"--objectives: {e}") from None
        if obj in out:
            raise CompareError(f"objective {obj.label} is listed twice in {text!r}")
        out.append(obj)
    return out


def parse_seeds(text: str) -> list[int]:
    """'0,1' or '0-3' -> distinct seeds in order."""
    seeds = parse_int_list(text, what="seed list")
    if len(set(seeds)) != len(seeds):
        raise CompareError(f"seed list {text!r} repeats a seed")
    return seeds


# ---- small pieces --------------------------------------------------------------------------------------------------

def _grid_labels(G: torch.nn.Module, n: int) -> torch.Tensor:
    """Labels for n grid images: none for unconditional networks, classes in turn for conditional ones."""
    c_dim = int(G.c_dim)
    c = torch.zeros([n, c_dim])
    if c_dim:
        c[torch.arange(n), torch.arange(n) % c_dim] = 1
    return c


def grid_images(G: torch.nn.Module, grid: tuple[int, int], device: torch.device) -> np.ndarray:
    """uint8 NHWC images of seeds 0..cols*rows-1 (official seed -> z, constant noise): the same z for every network."""
    n = grid[0] * grid[1]
    G = G.eval().requires_grad_(False).to(device)
    return to_uint8(generate_images(G, seed_latents(range(n), int(G.z_dim)), _grid_labels(G, n), batch=64))


def save_labelled_blocks(blocks: Sequence[tuple[str, np.ndarray]], grid: tuple[int, int], path: str) -> None:
    """One PNG: for each (title, uint8 NHWC images) a title strip above a cols x rows grid of the images; images
    smaller than 64 pixels are enlarged (nearest neighbour) to at least 64 so that they can be seen."""
    parts = []
    for title, images in blocks:
        zoom = max(1, 64 // images.shape[1])
        tiles = make_grid(images.repeat(zoom, axis=1).repeat(zoom, axis=2), *grid)
        strip = Image.new("L" if tiles.shape[2] == 1 else "RGB", (tiles.shape[1], 14), 255)
        ImageDraw.Draw(strip).text((2, 1), title, fill=0)
        strip_arr = np.asarray(strip).reshape(14, tiles.shape[1], tiles.shape[2])
        parts += [strip_arr, tiles]
    save_png(np.concatenate(parts), path)


def _stats_by_kimg(run_dir: str) -> dict[float, dict]:
    """stats.jsonl of a run keyed by Progress/kimg (rounded to 1e-3)."""
    out = {}
    with open(os.path.join(run_dir, "stats.jsonl"), encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rec = json.loads(line)
                out[round(rec["Progress/kimg"]["mean"], 3)] = rec
    return out


def _snapshots(run_dir: str) -> list[str]:
    return sorted(glob.glob(os.path.join(run_dir, "network-snapshot-*.pkl")))


def _format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(round(seconds))
    return f"{s} s" if s < 60 else f"{s // 60}m {s % 60:02d}s"


# ---- the comparison ------------------------------------------------------------------------------------------------

@dataclass
class RunPlan:
    """One fine-tuning run before it starts: its objective, seed, run description and training_loop options."""
    objective: Objective
    seed: int
    desc: str
    options: dict


@dataclass
class RunResult:
    """One fine-tuning run: its options, where it lives and its metric points (kimg relative to the start)."""
    objective: str
    loss: str
    k: float | None
    seed: int
    run_dir: str
    points: list[dict]
    train_sec: float = 0.0
    eval_sec: float = 0.0
    best: dict | None = None  # best-<metric>.json of the run: its best snapshot by the tracked metric


def _validate(network: str, data: str, ref: str, objectives: Sequence[Objective], seeds: Sequence[int], kimg: float,
              snap_kimg: float, metrics: Sequence[str], metrics_num: int | None,
              train_options: dict) -> tuple[list[str], ImageFolderDataset, ImageFolderDataset]:
    if not objectives:
        raise CompareError("no objectives given; e.g. --objectives logistic,rooted:8")
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
    try:
        names = validate_metric_names(list(metrics))
    except MetricError as e:
        raise CompareError(f"--metrics: {e}") from e
    if not names:
        raise CompareError("--metrics: at least one metric is needed (fid50k_full, kid50k_full, pr50k3_inception)")
    if metrics_num is not None and (isinstance(metrics_num, bool) or not isinstance(metrics_num, int)
                                    or metrics_num < 2):
        raise CompareError(f"--metrics-num must be an integer of at least 2, got {metrics_num!r}")
    clash = sorted(set(train_options) & set(CONTROLLED_OPTIONS))
    if clash:
        raise CompareError(f"training option(s) {clash} are set by the comparison itself; use its own arguments")
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


def compare_objectives(*, network: str, data: str, ref: str, objectives: Sequence[Objective], seeds: Sequence[int],
                       kimg: float, snap_kimg: float, outdir: str,
                       metrics: Sequence[str] = ("fid50k_full", "kid50k_full"), metrics_num: int | None = None,
                       device: str = "auto", train_options: dict | None = None,
                       grid: tuple[int, int] = (8, 4), best_metric: str | None = None,
                       metric_seed: int = 0, inception_weights: str | None = None, resume: bool = False,
                       log: Callable[[str], Any] = print, show_progress: bool = True) -> dict:
    """Fine-tune `network` on `data` for `kimg` (on top of its own progress) once per objective and seed, with
    FID/KID against `ref` every `snap_kimg`; write the comparison into `outdir`; return the summary dict.

    `train_options` are further setup_training_options keywords (batch, gamma, mirror, aug, ema_kimg, ...), the same
    for all runs (set ema_kimg for short runs: the preset's G_ema half-life of 10 kimg is too long for them). Each
    run keeps its best snapshot by `best_metric` (default: the first metric). Every run's options are validated
    before the first one starts. An `outdir` that already holds a comparison is refused unless `resume`: then the
    runs it finished (with the same settings) are kept and only the missing ones run.
    """
    train_options = dict(train_options or {})
    names, data_set, ref_set = _validate(network, data, ref, objectives, seeds, kimg, snap_kimg, metrics,
                                         metrics_num, train_options)
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

    plans = []
    for obj in objectives:
        for seed in seeds:
            try:
                desc, options = setup_training_options(
                    data=data, resume=network, loss=obj.name, k=obj.k, seed=seed, kimg=start_kimg + kimg,
                    tick=snap_kimg, snap=1, device=device, desc=f"seed{seed}", exact_resume=False,
                    **train_options)  # a training state would replace each run's seed with the stored RNG
            except UserError as e:
                raise CompareError(f"{obj.label}, seed {seed}: {e}") from e
            plans.append(RunPlan(obj, seed, desc, options))
    first = plans[0].options
    run_device = torch.device(first.device)
    os.makedirs(outdir, exist_ok=True)
    weights = dict(inception_weights=inception_weights)
    config = dict(network=network, data=data, ref=ref, outdir=outdir,
                  objectives=[dict(loss=o.name, k=o.k) for o in objectives],
                  seeds=list(seeds), kimg=kimg, snap_kimg=snap_kimg, start_kimg=start_kimg, metrics=names,
                  metrics_num=metrics_num, metric_seed=metric_seed, device=str(run_device), best_metric=best_metric,
                  batch=first.batch_size, ema_kimg=first.ema_kimg, train_options=train_options,
                  num_data=len(data_set), num_ref=len(ref_set), mirror=bool(first.training_set_kwargs["xflip"]))
    finished = _finished_runs(outdir, config, resume, log)
    timings: dict[str, float] = {}
    num_runs = len(plans)
    log(f"Comparing {num_runs} run(s): {', '.join(o.label for o in objectives)} x seeds "
        f"{', '.join(map(str, seeds))}; {kimg:g} kimg each, FID/KID every {snap_kimg:g} kimg on {run_device}")

    t0 = time.time()
    log(f"Noise floor: {', '.join(names)} of {data} ({len(data_set)} images) against {ref} ({len(ref_set)})...")
    floor = {k: v for r in evaluate_datasets(data, ref, metrics=names, device=run_device, seed=metric_seed, **weights)
             for k, v in r["results"].items()}
    log("Noise floor: " + _format_values(floor))
    timings["noise_floor_sec"] = time.time() - t0

    t0 = time.time()
    G0 = start["G_ema"] if start.get("G_ema") is not None else start["G"]
    log(f"Start network (kimg 0, shared by all runs): {', '.join(names)} of {metrics_num or 'the default number of'} "
        f"generated images against {ref}...")
    start_records = evaluate_snapshot(G0, metrics=names, data=ref, num_gen=metrics_num, device=run_device,
                                      seed=metric_seed, snapshot_pkl=os.path.abspath(network), verbose=show_progress,
                                      **weights)
    start_records = [dict(r, kimg=0.0, shared_start=True) for r in start_records]
    start_point = dict(kimg=0.0, wall_sec=0.0, snapshot=os.path.abspath(network),
                       **{k: v for r in start_records for k, v in r["results"].items()})
    log("Start network: " + _format_values(start_point))
    before = grid_images(G0, grid, run_device)
    save_labelled_blocks([("before (start network)", before)], grid, os.path.join(outdir, "grid-start.png"))
    timings["start_eval_sec"] = time.time() - t0
    del G0, start
    done = dict(finished)  # (objective label, seed) -> RunResult; summaries list them in plan order

    def finished_in_order() -> list[RunResult]:
        return [done[p.objective.label, p.seed] for p in plans if (p.objective.label, p.seed) in done]

    write_outputs(_summary(config, floor, start_point, finished_in_order(), timings), outdir)
    for i, plan in enumerate(plans):
        obj, seed = plan.objective, plan.seed
        if (obj.label, seed) in finished:
            log(f"[run {i + 1}/{num_runs}] {obj.label}, seed {seed}: kept from the earlier comparison "
                f"({finished[obj.label, seed].run_dir})")
            continue
        log(f"\n[run {i + 1}/{num_runs}] {obj.label}, seed {seed}: fine-tuning for {kimg:g} kimg...")
        t0 = time.time()
        run_dir = launch_training(plan.desc, plan.options, os.path.join(outdir, "runs"), show_progress=show_progress)
        train_sec = time.time() - t0
        log(f"[run {i + 1}/{num_runs}] trained in {_format_seconds(train_sec)}: {run_dir}")
        t0 = time.time()
        append_records(start_records, run_dir)
        result = RunResult(objective=obj.label, loss=obj.name, k=obj.k, seed=seed, run_dir=run_dir,
                           points=[dict(start_point)], train_sec=train_sec)
        result.points += _evaluate_run(run_dir, names, ref, metrics_num, run_device, metric_seed, start_nimg, trust,
                                       weights, show_progress, log, f"[run {i + 1}/{num_runs}]")
        for point in result.points[1:] if best_metric else ():
            update_best(run_dir, best_metric, point[best_metric], os.path.join(run_dir, point["snapshot"]),
                        point["kimg"])
        result.best = read_best(run_dir, best_metric) if best_metric else None
        final = load_network_pkl(_snapshots(run_dir)[-1], trust_pickle=trust)
        after = grid_images(final["G_ema"], grid, run_device)
        final_kimg = result.points[-1]["kimg"]
        save_labelled_blocks([("before (start network)", before),
                              (f"after {final_kimg:g} kimg, {obj.label}, seed {seed}", after)], grid,
                             os.path.join(outdir, f"grid-{obj.slug}-seed{seed}.png"))
        result.eval_sec = time.time() - t0
        done[obj.label, seed] = result
        write_outputs(_summary(config, floor, start_point, finished_in_order(), timings), outdir)
        log(f"[run {i + 1}/{num_runs}] done; {outdir}/summary.md updated")
    summary = _summary(config, floor, start_point, finished_in_order(), timings)  # as last written
    log(f"\nWrote {outdir}: summary.md, summary.json, metrics.png, grid-*.png, runs/")
    return summary


def _finished_runs(outdir: str, config: dict, resume: bool, log: Callable[[str], Any]) -> dict[tuple, RunResult]:
    """The runs an earlier comparison in `outdir` finished, by (objective label, seed); {} for a new outdir. Refuses
    an existing comparison unless `resume`, and one made with other settings (its runs would not be comparable)."""
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
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise CompareError(f"--continue: {path} is not a comparison summary this version can read ({e!r}); "
                           f"choose another --outdir") from None
    new_config = {k: v for k, v in json.loads(json.dumps(config)).items() if k != "outdir"}
    changed = sorted(k for k in old_config.keys() | new_config.keys() if old_config.get(k) != new_config.get(k))
    if changed:
        raise CompareError(f"--continue: the comparison in {outdir} was made with other settings "
                           f"({', '.join(changed)} differ); continue it with the same options, or choose another "
                           f"--outdir")
    kept = {(run.objective, run.seed): run for run in old_runs if os.path.isdir(run.run_dir)}
    kept_dirs = {os.path.abspath(run.run_dir) for run in kept.values()}
    for folder in sorted(glob.glob(os.path.join(outdir, "runs", "*"))):
        if os.path.isdir(folder) and os.path.abspath(folder) not in kept_dirs:
            log(f"Continuing: {folder} did not finish; it is left as it was and its run starts again")
    log(f"Continuing the comparison in {outdir}: {len(kept)} finished run(s) kept")
    return kept


def _format_values(values: dict) -> str:
    return ", ".join(f"{METRIC_LABELS.get(n, n)} {values[n]:.4g}" for n in METRIC_LABELS if n in values)


def _evaluate_run(run_dir: str, names: list[str], ref: str, metrics_num: int | None, device: torch.device,
                  metric_seed: int, start_nimg: int, trust: bool, weights: dict, show_progress: bool,
                  log: Callable[[str], Any], prefix: str) -> list[dict]:
    """FID/KID of every snapshot of a finished run (except one taken after a fresh run's first iteration), appended
    to its metric-<name>.jsonl with the kimg since the start; returns the points."""
    stats = _stats_by_kimg(run_dir)
    points = []
    for path in _snapshots(run_dir):
        snap = load_network_pkl(path, trust_pickle=trust)
        progress = snap.get("progress") or {}
        if progress.get("cur_tick") == 0:
            continue  # a fresh run's tick 0 comes after one iteration: the shared start evaluation stands for it
        kimg = (int(progress["cur_nimg"]) - start_nimg) / 1000
        log(f"{prefix} evaluating {os.path.basename(path)} (kimg {kimg:g})...")
        records = evaluate_snapshot(snap["G_ema"], metrics=names, data=ref, num_gen=metrics_num, device=device,
                                    seed=metric_seed, snapshot_pkl=os.path.basename(path), verbose=show_progress,
                                    **weights)
        records = [dict(r, kimg=kimg) for r in records]
        append_records(records, run_dir)
        tick = stats.get(round(int(progress["cur_nimg"]) / 1000, 3))
        point = dict(kimg=kimg, wall_sec=tick["Timing/total_sec"]["mean"] if tick else None,
                     snapshot=os.path.basename(path), **{k: v for r in records for k, v in r["results"].items()})
        log(f"{prefix} kimg {kimg:g}: " + _format_values(point))
        points.append(point)
    return points


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
    header = ["objective", "k", "seed", "kimg"] + [METRIC_LABELS.get(n, n) for n in names] + ["wall time"]

    def row(run: dict | None, point: dict) -> list[str]:
        ident = [START_LABEL, "-", "-"] if run is None else \
            [run["loss"], "-" if run["k"] is None else f"{run['k']:g}", str(run["seed"])]
        return ident + [f"{point['kimg']:g}"] + [metric_cell(n, point.get(n)) for n in names] + \
            [_format_seconds(point.get("wall_sec")) if run is not None else "-"]

    num = cfg["metrics_num"] if cfg["metrics_num"] is not None else "50k (default)"
    lines = [
        "# Objective comparison", "",
        f"Start network `{cfg['network']}` (at {cfg['start_kimg']:g} kimg of its own training; kimg below counts "
        f"from there), fine-tuned on `{cfg['data']}` ({cfg['num_data']} images"
        f"{', x-flips added' if cfg['mirror'] else ''}) for {cfg['kimg']:g} kimg per run, batch {cfg['batch']}, "
        f"on {cfg['device']}. Same seeds, budget and options for every run"
        + (f" (extra training options: {', '.join(f'{k}={v}' for k, v in cfg['train_options'].items())})"
           if cfg["train_options"] else "") + ".",
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
        "## Final snapshot of each run", "",
    ]
    start = summary["start"]
    finals = [row(r, r["points"][-1]) for r in runs if len(r["points"]) > 1]
    lines += markdown_table([row(None, start)] + finals, header)
    best = cfg.get("best_metric")
    if best and any(r.get("best") for r in runs):
        label = METRIC_LABELS.get(best, best)
        lines += ["", f"## Best snapshot of each run (by {label})", "",
                  f"Kept in each run directory as `best-{best}.pkl` (with `best-{best}.json`).", ""]
        lines += markdown_table([[r["loss"], "-" if r["k"] is None else f"{r['k']:g}", str(r["seed"]),
                          f"{r['best']['kimg']:g}", metric_cell(best, r["best"]["value"]), r["best"]["snapshot"]]
                         for r in runs if r.get("best")], ["objective", "k", "seed", "kimg", label, "snapshot"])
    if runs:
        lines += [""] + statistics_markdown(comparison_statistics(summary), names, METRIC_LABELS)
    lines += ["", "## Every snapshot", ""]
    lines += markdown_table([row(None, start)] + [row(r, p) for r in runs for p in r["points"][1:]], header)
    t = summary["timings"]
    lines += ["", f"Time: noise floor {_format_seconds(t.get('noise_floor_sec'))}, start network "
                  f"{_format_seconds(t.get('start_eval_sec'))}, training {_format_seconds(t['train_sec'])}, "
                  f"snapshot evaluation and grids {_format_seconds(t['eval_sec'])}.",
              "Run directories: " + ", ".join(f"`{os.path.relpath(r['run_dir'], cfg['outdir'])}`" for r in runs)
              + ".", ""]
    return "\n".join(lines)


def plot_metrics(summary: dict, path: str) -> None:
    """metrics.png: each metric against kimg: per objective the mean over seeds with a +-sd band, each run as a
    thin line, the noise floor dashed."""
    import matplotlib  # start-up: matplotlib loads only when a plot is drawn (not on the commands' import path)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # start-up, as matplotlib above
    names = value_names(summary)
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 4), squeeze=False)
    stats = comparison_statistics(summary)
    for ax, name in zip(axes[0], names):
        for i, (label, obj) in enumerate(stats["objectives"].items()):
            for r in (r for r in summary["runs"] if r["objective"] == label):
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
