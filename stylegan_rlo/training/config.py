"""The training set-up: `setup_training_options(...)` turns option values (keywords of
stylegan_rlo.training.options.TRAINING_OPTIONS) into the keyword arguments of
`stylegan_rlo.training.loop.training_loop` (JSON-serializable, saved as training_options.json).

It reads the inputs first (the dataset, the --resume pickle and its training-state file); then `decide_schedule`
decides each schedule value in one order of precedence: preset (--cfg) -> resumed pickle -> training-state file ->
explicit flag. Networks come from the pickle's own constructor arguments when resuming (a contradicting option is an
error), else fresh from the preset.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from dnnlib.util import EasyDict
from stylegan_rlo.checkpoints.pickles import PickleError, load_network_pkl
from stylegan_rlo.data.dataset import DatasetError, ImageFolderDataset
from stylegan_rlo.devices import parse_device
from stylegan_rlo.errors import UserError
from stylegan_rlo.model.augment import AUGPIPE_SPECS
from stylegan_rlo.model.diffaugment import parse_policy
from stylegan_rlo.objectives import Objective
from stylegan_rlo.training import adapt_resolution as adapt
from stylegan_rlo.training import state as training_state
from stylegan_rlo.training.best_snapshot import resolve_best_metric
from stylegan_rlo.training.loss import DEFAULT_LECAM_DECAY
from stylegan_rlo.training.options import (CFG_SPECS, DEFAULT_AUGPIPE, DEFAULT_CMAX, DEFAULT_TARGET, OPTIONS_BY_NAME,
                                           TrainingOptionsError, parse_metrics, resolve_options)
from stylegan_rlo.training.snapshot_metrics import check_held_out
from stylegan_rlo.training.state_checks import check_progress

MIN_RESOLUTION = 4  # the networks' first block is 4x4
OFFICIAL_DATASET_CLASS = "training.dataset.ImageFolderDataset"  # class_name recorded in snapshots, as upstream
UPSTREAM_ADA_KIMG = 500  # ADA adjustment speed of every preset, as upstream

# Constructor defaults of the official networks (used when a pickle's init kwargs leave a value out).
_G_DEFAULTS = dict(channel_base=32768, channel_max=512, num_layers=8)
_D_DEFAULTS = dict(channel_base=32768, channel_max=512, architecture="resnet")


# ---------------------------------------------------------------------------------------------------------------
# Presets and networks.

def cfg_spec(cfg: str, resolution: int, num_gpus: int) -> EasyDict:
    """Hyperparameters of preset `cfg`; 'auto' is derived from the resolution and GPU count as upstream."""
    spec = EasyDict(CFG_SPECS[OPTIONS_BY_NAME["cfg"].check(cfg)])
    if cfg == "auto":
        res = resolution
        spec.ref_gpus = num_gpus
        spec.mb = max(min(num_gpus * min(4096 // res, 32), 64), num_gpus)
        spec.mbstd = min(spec.mb // num_gpus, 4)
        spec.fmaps = 1 if res >= 512 else 0.5
        spec.lrate = 0.002 if res >= 1024 else 0.0025
        spec.gamma = 0.0002 * (res ** 2) / spec.mb
        spec.ema = spec.mb * 10 / 32
    return spec


def fresh_networks(spec: EasyDict, cfg: str, resolution: int, channels: int, c_dim: int, cbase: int | None,
                   cmax: int | None, map_depth: int | None) -> tuple[dict, dict]:
    """Generator / discriminator constructor kwargs for training from scratch (mixed precision as upstream)."""
    channel_base = cbase if cbase is not None else int(spec.fmaps * 32768)
    channel_max = cmax if cmax is not None else DEFAULT_CMAX
    common = dict(c_dim=c_dim, img_resolution=resolution, img_channels=channels)
    G_kwargs = dict(z_dim=512, w_dim=512, **common,
                    mapping_kwargs=dict(num_layers=map_depth if map_depth is not None else spec.map),
                    synthesis_kwargs=dict(channel_base=channel_base, channel_max=channel_max, num_fp16_res=4,
                                          conv_clamp=256))
    D_kwargs = dict(**common, channel_base=channel_base, channel_max=channel_max, num_fp16_res=4, conv_clamp=256,
                    block_kwargs={}, mapping_kwargs={}, epilogue_kwargs=dict(mbstd_group_size=spec.mbstd))
    if cfg == "cifar":
        D_kwargs["architecture"] = "orig"
    return G_kwargs, D_kwargs


def _plain(value: Any) -> Any:
    """Deep copy with EasyDicts as dicts, tuples as lists and numpy scalars as python numbers (JSON-ready)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", None) == 0:
        return value.item()
    return copy.deepcopy(value)


def _resumed_networks(resume_data: dict, source: str, spec: EasyDict, cfg: str, resolution: int, channels: int,
                      c_dim: int, explicit: dict[str, Any], adapt_resolution: bool = False) -> tuple[dict, dict]:
    """The pickle's own G/D constructor kwargs, after checking them against the dataset and explicit options."""
    for key in ("G", "D"):
        if resume_data.get(key) is None:
            raise TrainingOptionsError(f"--resume {source}: the pickle has no {key!r} network, so training cannot "
                                       f"continue from it (it needs G, D and optionally G_ema)")
        if resume_data[key].init_args:
            raise TrainingOptionsError(f"--resume {source}: {key} was built with positional arguments "
                                       f"{resume_data[key].init_args!r}; only keyword-built networks are supported")
    G_kwargs = _plain(resume_data["G"].init_kwargs)
    D_kwargs = _plain(resume_data["D"].init_kwargs)

    pkl_res = G_kwargs.get("img_resolution")
    if pkl_res != resolution and not adapt_resolution:
        raise TrainingOptionsError(f"--resume {source} is a {pkl_res}x{pkl_res} network but the dataset (--data) is "
                                   f"{resolution}x{resolution}; pass --adapt-resolution to adapt the network, resize "
                                   f"the dataset to {pkl_res} (scripts/dataset_tool.py --resolution {pkl_res}) or "
                                   f"resume a {resolution}x{resolution} network")
    pkl_ch = G_kwargs.get("img_channels")
    if pkl_ch != channels:
        raise TrainingOptionsError(f"--resume {source} makes {pkl_ch}-channel images but the dataset has {channels} "
                                   f"channel(s)")
    pkl_c = G_kwargs.get("c_dim", 0)
    if pkl_c != c_dim:
        if c_dim == 0:
            raise TrainingOptionsError(f"--resume {source} is a conditional network (c_dim={pkl_c}); pass --cond "
                                       f"with a dataset that has {pkl_c} classes in dataset.json")
        raise TrainingOptionsError(f"--resume {source} has c_dim={pkl_c} but the dataset labels have dimension "
                                   f"{c_dim}" + ("" if pkl_c else "; resume a conditional network or drop --cond"))

    # Values a preset or an explicit flag asks for, versus what the pickle was built with.
    wanted: dict[str, tuple[str, Any]] = {}
    if cfg != "auto":
        wanted.update(cbase=(f"--cfg {cfg}", int(spec.fmaps * 32768)), cmax=(f"--cfg {cfg}", DEFAULT_CMAX),
                      map_depth=(f"--cfg {cfg}", spec.map))
        if cfg == "cifar":
            wanted["architecture"] = (f"--cfg {cfg}", "orig")
    for key, value in explicit.items():
        if value is not None:
            wanted[key] = ("--" + key.replace("_", "-"), value)
    synthesis = G_kwargs.get("synthesis_kwargs", {})
    mapping = G_kwargs.get("mapping_kwargs", {})
    actual = dict(
        cbase=[("G channel_base", synthesis.get("channel_base", _G_DEFAULTS["channel_base"])),
               ("D channel_base", D_kwargs.get("channel_base", _D_DEFAULTS["channel_base"]))],
        cmax=[("G channel_max", synthesis.get("channel_max", _G_DEFAULTS["channel_max"])),
              ("D channel_max", D_kwargs.get("channel_max", _D_DEFAULTS["channel_max"]))],
        map_depth=[("G mapping num_layers", mapping.get("num_layers", _G_DEFAULTS["num_layers"]))],
        architecture=[("D architecture", D_kwargs.get("architecture", _D_DEFAULTS["architecture"]))],
    )
    for key, (flag, value) in wanted.items():
        for what, have in actual[key]:
            if have != value:
                raise TrainingOptionsError(f"{flag} asks for {key.replace('_', ' ')} {value} but --resume {source} "
                                           f"was built with {what} {have}; drop the option (the pickle's own "
                                           f"architecture is used when resuming) or resume a matching network")
    return G_kwargs, D_kwargs


# ---------------------------------------------------------------------------------------------------------------
# Reading the inputs: dataset, resume pickle and training-state file.

def _read_dataset(o: EasyDict) -> EasyDict:
    """--data (with --cond, --subset, --mirror): its name, resolution, channels, label size and dataset kwargs."""
    data, cond = o.data, o.cond
    if not data:
        raise TrainingOptionsError("--data is required: a dataset ZIP or folder (see scripts/dataset_tool.py)")
    try:
        dataset = ImageFolderDataset(path=data, use_labels=bool(cond))
    except (DatasetError, OSError) as e:
        raise TrainingOptionsError(f"--data {data}: {e}") from e
    try:
        if cond and not dataset.has_labels:
            raise TrainingOptionsError(f"--cond needs labels, but {data} has no dataset.json labels; "
                                       f"build it with scripts/dataset_tool.py --labels or drop --cond")
        num_images = len(dataset)
        if o.subset is not None and o.subset > num_images:
            raise TrainingOptionsError(f"--subset must be between 1 and {num_images} (the dataset size), "
                                       f"got {o.subset}")
        resolution = dataset.resolution
        if resolution < MIN_RESOLUTION:
            raise TrainingOptionsError(f"--data {data}: images are {resolution}x{resolution}, but training needs at "
                                       f"least {MIN_RESOLUTION}x{MIN_RESOLUTION}; rebuild the dataset with "
                                       f"scripts/dataset_tool.py --resolution {MIN_RESOLUTION} (or larger)")
        kwargs = dict(class_name=OFFICIAL_DATASET_CLASS, path=data, use_labels=cond,
                      max_size=num_images if o.subset is None else o.subset, xflip=o.mirror, resolution=resolution,
                      random_seed=o.seed)
        return EasyDict(name=dataset.name, resolution=resolution, channels=dataset.num_channels,
                        c_dim=dataset.label_dim if cond else 0, training_set_kwargs=kwargs)
    finally:
        dataset.close()


def _check_metric_data(metric_data: str, resolution: int, channels: int, c_dim: int) -> str:
    """--metric-data: a dataset with the training data's resolution and channels (and labels when conditional)."""
    try:
        held_out = ImageFolderDataset(path=metric_data, use_labels=c_dim > 0)
    except (DatasetError, OSError) as e:
        raise TrainingOptionsError(f"--metric-data {metric_data}: {e}") from e
    try:
        if (held_out.resolution, held_out.num_channels) != (resolution, channels):
            raise TrainingOptionsError(
                f"--metric-data {metric_data} has {held_out.num_channels}-channel {held_out.resolution}x"
                f"{held_out.resolution} images but the training data has {channels}-channel {resolution}x"
                f"{resolution} ones; evaluate against images like the training data")
        if c_dim and (not held_out.has_labels or held_out.label_dim != c_dim):
            raise TrainingOptionsError(f"--metric-data {metric_data}: the training is conditional (labels of size "
                                       f"{c_dim}) but this dataset has no matching dataset.json labels")
    finally:
        held_out.close()
    return metric_data


@dataclasses.dataclass
class StartingPoint:
    """Where training starts: the networks' constructor kwargs and, when resuming, what the pickle and its training
    state file say."""
    G_kwargs: dict
    D_kwargs: dict
    resumed: bool = False  # from a --resume pickle
    start_kimg: float = 0.0  # the pickle's progress (0 for fresh or adapted networks)
    transfer: dict | None = None  # the --adapt-resolution report
    state_path: str | None = None  # the training-state file of an exact resume
    state_schedule: dict | None = None  # the schedule values recorded in it
    state_run: dict | None = None  # the run identity recorded in it (training_state.run_identity)


def _read_starting_point(o: EasyDict, spec: EasyDict, data: EasyDict, exact_resume: bool) -> StartingPoint:
    """Fresh networks from the preset, or the --resume pickle's (adapted with --adapt-resolution) with its progress
    and, for an exact resume, its training-state file (`exact_resume=False` ignores that file)."""
    if o.resume is None:
        if o.adapt_resolution:
            raise TrainingOptionsError("--adapt-resolution needs --resume (the network to adapt)")
        return StartingPoint(*fresh_networks(spec, o.cfg, data.resolution, data.channels, data.c_dim, o.cbase,
                                             o.cmax, o.map_depth))
    try:
        resume_data = load_network_pkl(o.resume, trust_pickle=o.trust_pickle)
    except (PickleError, OSError, ValueError) as e:  # ValueError: e.g. an unsupported URL scheme
        raise TrainingOptionsError(f"--resume {o.resume}: {e}") from e
    explicit = dict(cbase=o.cbase, cmax=o.cmax, map_depth=o.map_depth)
    G_kwargs, D_kwargs = _resumed_networks(resume_data, o.resume, spec, o.cfg, data.resolution, data.channels,
                                           data.c_dim, explicit, adapt_resolution=o.adapt_resolution)
    progress = check_progress(resume_data.get("progress"), o.resume)
    start = StartingPoint(G_kwargs, D_kwargs, resumed=True, start_kimg=progress.get("cur_nimg", 0) / 1000)
    if o.adapt_resolution:
        start.G_kwargs, start.D_kwargs, start.transfer = adapt.adapt(resume_data, G_kwargs, D_kwargs,
                                                                     data.resolution, o.resume)
    if start.transfer is not None:
        start.start_kimg = 0.0  # an adapted network starts a new training: kimg counts from 0
    elif exact_resume:
        path = training_state.find_state(o.resume)
        if path is not None:
            state = training_state.read(path, progress=progress)
            start.state_schedule, start.state_run, start.state_path = state["schedule"], state.get("run"), path
    return start


# ---------------------------------------------------------------------------------------------------------------
# Deciding the values.

def decide_schedule(o: EasyDict, spec: EasyDict, start: StartingPoint) -> EasyDict:
    """The final learning rates, R1 gamma, length, G_ema and ADA speeds and batch sizes. Each is decided here, in
    one order of precedence, a later source overriding an earlier one:
    preset (--cfg) -> resumed pickle -> training-state file (exact resume) -> explicit flag."""
    # 1. The preset (--cfg).
    s = EasyDict(lr_G=spec.lrate, lr_D=spec.lrate, r1_gamma=spec.gamma, total_kimg=spec.kimg, ema_kimg=spec.ema,
                 ema_rampup=spec.ramp, ada_kimg=UPSTREAM_ADA_KIMG, batch_size=spec.mb,
                 batch_gpu=spec.mb // spec.ref_gpus)
    # 2. A resumed pickle, as upstream: ADA reacts faster and G_ema has no ramp-up when starting from a trained
    #    network.
    if start.resumed:
        s.update(ada_kimg=100, ema_rampup=None)
    # 3. The training-state file of an exact resume: the run continues with the values it was using.
    if start.state_schedule is not None:
        s.update(ada_kimg=start.state_schedule["ada_kimg"], ema_rampup=start.state_schedule["ema_rampup"])
    # 4. Explicit flags (--batch alone also sets the per-process batch: batch / gpus).
    if o.batch is not None:
        s.update(batch_size=o.batch, batch_gpu=o.batch // o.gpus)
    flags = dict(lr_G=o.glr, lr_D=o.dlr, r1_gamma=o.gamma, total_kimg=o.kimg, ema_kimg=o.ema_kimg,
                 batch_gpu=o.batch_gpu)
    s.update({key: value for key, value in flags.items() if value is not None})
    if o.ema_rampup is not None:  # a number, or the table's off word "none"
        s.ema_rampup = None if isinstance(o.ema_rampup, str) else o.ema_rampup
    s.batch_gpu = max(min(s.batch_gpu, s.batch_size // o.gpus), 1)
    return s


def _check_batch(o: EasyDict, schedule: EasyDict) -> None:
    """The total batch must split evenly into processes and per-process passes."""
    batch_size, batch_gpu, num_gpus = schedule.batch_size, schedule.batch_gpu, o.gpus
    if batch_size % num_gpus != 0:
        raise TrainingOptionsError(f"--batch {batch_size} must be divisible by the number of processes "
                                   f"({num_gpus})")
    if batch_size % (batch_gpu * num_gpus) != 0:
        raise TrainingOptionsError(f"--batch {batch_size} must be a multiple of --batch-gpu {batch_gpu} "
                                   f"times the number of processes ({num_gpus})")


def _augmentation(o: EasyDict) -> EasyDict:
    """--aug, --p, --target, --augpipe: the initial augmentation probability, ADA target and pipe kwargs."""
    aug, p, target, augpipe = o.aug, o.p, o.target, o.augpipe
    if p is not None and aug == "noaug":
        raise TrainingOptionsError("--p cannot be used with --aug noaug")
    if aug == "fixed" and p is None:
        raise TrainingOptionsError("--aug fixed requires --p (the fixed augmentation probability)")
    if target is not None and aug != "ada":
        raise TrainingOptionsError("--target can only be used with --aug ada")
    if augpipe is not None and aug == "noaug":
        raise TrainingOptionsError("--augpipe cannot be used with --aug noaug")
    if target is None and aug == "ada":
        target = DEFAULT_TARGET
    augment_kwargs = dict(AUGPIPE_SPECS[DEFAULT_AUGPIPE if augpipe is None else augpipe]) if aug != "noaug" else None
    return EasyDict(augment_p=0.0 if p is None else p, ada_target=target, augment_kwargs=augment_kwargs)


def _regularization(o: EasyDict) -> dict:
    """--lecam, --lecam-decay, --diffaugment: their StyleGAN2Loss kwargs (DiffAugment replaces ADA, as in the
    authors' StyleGAN2-ADA fork, so it needs --aug noaug; the two are not stacked)."""
    if o.lecam_decay is not None and not o.lecam:
        raise TrainingOptionsError("--lecam-decay needs --lecam (a LeCam weight above 0)")
    try:
        policies = parse_policy(o.diffaugment)
    except ValueError as e:
        raise TrainingOptionsError(f"--diffaugment: {e}") from None
    if policies and o.aug != "noaug":
        raise TrainingOptionsError(f"--diffaugment {','.join(policies)} replaces ADA's augmentation (as in the "
                                   f"DiffAugment reference code), but --aug is {o.aug}; pass --aug noaug with it")
    return dict(lecam_weight=o.lecam, lecam_decay=DEFAULT_LECAM_DECAY if o.lecam_decay is None else o.lecam_decay,
                diffaugment=",".join(policies) if policies else None)


def _network_kwargs(o: EasyDict, start: StartingPoint) -> tuple[dict, dict]:
    """The starting networks' G/D kwargs (fresh, or the resumed pickle's own) with --mbstd-group, --freezed, --fp32
    and --nhwc applied. The last two change only precision and memory layout, never parameters, so they apply to
    resumed networks too (as upstream, whose resumed networks are built from the run's kwargs)."""
    G_kwargs, D_kwargs = start.G_kwargs, start.D_kwargs
    if o.mbstd_group is not None:
        D_kwargs.setdefault("epilogue_kwargs", {})["mbstd_group_size"] = o.mbstd_group
    if o.freezed or "freeze_layers" in D_kwargs.get("block_kwargs", {}):
        D_kwargs.setdefault("block_kwargs", {})["freeze_layers"] = o.freezed
    if o.fp32:  # no mixed precision: every block in float32, and no clamping of the convolution outputs
        G_kwargs.setdefault("synthesis_kwargs", {}).update(num_fp16_res=0, conv_clamp=None)
        D_kwargs.update(num_fp16_res=0, conv_clamp=None)
    if o.nhwc:  # channels-last memory layout in the fp16 blocks
        G_kwargs.setdefault("synthesis_kwargs", {})["fp16_channels_last"] = True
        D_kwargs.setdefault("block_kwargs", {})["fp16_channels_last"] = True
    return G_kwargs, D_kwargs


def _run_desc(dataset_name: str, cfg: str, objective: Objective, desc: str | None) -> str:
    """'dataset-cfg-objective[-desc]', the run directory name after its number."""
    run_desc = f"{dataset_name}-{cfg}-{objective.slug}"
    if desc:
        if any(sep in desc for sep in ("/", "\\", "\0")):
            raise TrainingOptionsError(f"--desc {desc!r} must not contain '/', '\\' or NUL: it becomes part of one "
                                       f"folder name")
        run_desc += f"-{desc}"
    return run_desc


def _check_length_and_groups(o: EasyDict, args: EasyDict, start_kimg: float) -> None:
    """--kimg must exceed the resumed progress; the per-process batch must split into minibatch-std groups."""
    if args.total_kimg <= start_kimg:
        raise TrainingOptionsError(f"--kimg {args.total_kimg:g}: --resume {o.resume} is already at {start_kimg:g} "
                                   f"kimg; --kimg is the total length of training, pass a larger value")
    # The minibatch standard deviation layer splits each D batch into groups of this size.
    group = args.D_kwargs.get("epilogue_kwargs", {}).get("mbstd_group_size", 4)
    if group and args.batch_gpu % min(group, args.batch_gpu) != 0:
        raise TrainingOptionsError(f"--batch-gpu {args.batch_gpu} must be divisible by the minibatch-std group "
                                   f"size {group} (set --mbstd-group or --batch-gpu)")


# ---------------------------------------------------------------------------------------------------------------
# The one place where options are checked and combined.

def setup_training_options(*, exact_resume: bool = True, **values: Any) -> tuple[str, EasyDict]:
    """Validate the options (keywords of TRAINING_OPTIONS; None or absent = the table default) and return
    (run description 'dataset-cfg-objective[-desc]', training_loop kwargs).

    `exact_resume` (library only): continue a resumed snapshot of ours exactly from its training state file, when it
    has one; False starts the optimizers, RNGs and data order afresh (e.g. runs that must each keep their own seed).

    Raises TrainingOptionsError with a message naming the option (or file) and what to do about it.
    """
    o = resolve_options(values)
    args = EasyDict()
    try:
        objective = Objective(o.loss, o.k)
    except UserError as e:
        raise TrainingOptionsError(f"--k: {e}") from None
    regularization = _regularization(o)
    args.update(num_gpus=o.gpus, device=str(parse_device(o.device, o.gpus)), random_seed=o.seed,
                data_loader_kwargs=dict(num_workers=o.workers), kimg_per_tick=o.tick, image_snapshot_ticks=o.snap,
                network_snapshot_ticks=o.snap, metrics=parse_metrics(o.metrics, o.vgg16), metrics_num=o.metrics_num)
    args.update(cudnn_benchmark=not o.nobench, allow_tf32=o.allow_tf32)  # CUDA back-end settings (no-ops on the CPU)
    if args.metrics_num is not None and not args.metrics:
        raise TrainingOptionsError("--metrics-num needs --metrics (e.g. --metrics fid50k_full)")

    # Inputs: the dataset, the preset for it, the augmentation flags, the starting networks (pickle, state file).
    data = _read_dataset(o)
    args.training_set_kwargs = data.training_set_kwargs
    spec = cfg_spec(o.cfg, data.resolution, o.gpus)
    augmentation = _augmentation(o)
    start = _read_starting_point(o, spec, data, bool(exact_resume))

    # Values: preset -> resumed pickle -> training-state file -> explicit flag, all in decide_schedule.
    schedule = decide_schedule(o, spec, start)
    _check_batch(o, schedule)
    args.G_opt_kwargs = dict(lr=schedule.lr_G, betas=[0.0, 0.99], eps=1e-8)
    args.D_opt_kwargs = dict(lr=schedule.lr_D, betas=[0.0, 0.99], eps=1e-8)
    args.loss_kwargs = dict(objective=objective.spec, r1_gamma=schedule.r1_gamma,  # the loss settings together
                            **regularization)
    if o.cfg == "cifar":
        args.loss_kwargs.update(pl_weight=0, style_mixing_prob=0)
    args.update(total_kimg=schedule.total_kimg, ema_kimg=schedule.ema_kimg, ema_rampup=schedule.ema_rampup,
                batch_size=schedule.batch_size, batch_gpu=schedule.batch_gpu)
    if start.state_path is not None:
        training_state.check_identity(start.state_run, training_state.run_identity(
            args.training_set_kwargs, schedule.batch_size, schedule.batch_gpu), start.state_path)
    args.update(augment_p=augmentation.augment_p, ada_target=augmentation.ada_target, ada_kimg=schedule.ada_kimg,
                augment_kwargs=augmentation.augment_kwargs)
    args.update(resume_pkl=o.resume, trust_pickle=o.trust_pickle, resume_transfer=start.transfer,
                resume_state=start.state_path)

    # Evaluation against --metric-data, the best snapshot kept by --best-metric.
    if o.metric_data is not None and not args.metrics:
        raise TrainingOptionsError("--metric-data needs --metrics (e.g. --metrics fid50k_full)")
    check_held_out(args.metrics, o.metric_data, o.data)
    args.metric_data = None if o.metric_data is None else _check_metric_data(o.metric_data, data.resolution,
                                                                             data.channels, data.c_dim)
    args.best_metric = resolve_best_metric(o.best_metric, args.metrics)
    if o.vgg16 is not None and "pr50k3_full" not in args.metrics:
        raise TrainingOptionsError("--vgg16 is the feature network of pr50k3_full; add it to --metrics, or leave "
                                   "--vgg16 out")
    args.vgg16_weights = o.vgg16

    args.G_kwargs, args.D_kwargs = _network_kwargs(o, start)
    _check_length_and_groups(o, args, start.start_kimg)
    return _run_desc(data.name, o.cfg, objective, o.desc), EasyDict(_plain(args))

