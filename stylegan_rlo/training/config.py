"""Training options: the table that declares every option once (name, type and validation, default, help), the
official StyleGAN2-ADA presets (`--cfg`), and the resume rules (networks come from the pickle's own constructor
arguments; a contradicting option is an error).

`setup_training_options(...)` turns option values into the keyword arguments of
`stylegan_rlo.training.loop.training_loop` (JSON-serializable, saved as training_options.json). The command-line
options of scripts/train.py and scripts/compare_objectives.py are generated from TRAINING_OPTIONS.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any

from dnnlib.util import EasyDict
from stylegan_rlo.devices import DEVICE_HELP, parse_device
from stylegan_rlo.errors import UserError
from stylegan_rlo.model.augment import AUGPIPE_SPECS
from stylegan_rlo.objectives import DEFAULT_K, K_MAX, K_MIN, OBJECTIVES, Objective

AUG_MODES = ("ada", "noaug", "fixed")
DEFAULT_AUGPIPE = "bgc"
DEFAULT_TARGET = 0.6
DEFAULT_CMAX = 512
MIN_RESOLUTION = 4  # the networks' first block is 4x4
OFFICIAL_DATASET_CLASS = "training.dataset.ImageFolderDataset"  # class_name recorded in snapshots, as upstream

# Official presets. fmaps scales channel_base (= fmaps * 32768); 'auto' is filled in from resolution and GPU count.
CFG_SPECS: dict[str, dict[str, Any]] = {
    "auto":      dict(ref_gpus=-1, kimg=25000, mb=-1, mbstd=-1, fmaps=-1, lrate=-1, gamma=-1, ema=-1, ramp=0.05, map=2),
    "stylegan2": dict(ref_gpus=8, kimg=25000, mb=32, mbstd=4, fmaps=1, lrate=0.002, gamma=10, ema=10, ramp=None, map=8),
    "paper256":  dict(ref_gpus=8, kimg=25000, mb=64, mbstd=8, fmaps=0.5, lrate=0.0025, gamma=1, ema=20, ramp=None,
                      map=8),
    "paper512":  dict(ref_gpus=8, kimg=25000, mb=64, mbstd=8, fmaps=1, lrate=0.0025, gamma=0.5, ema=20, ramp=None,
                      map=8),
    "paper1024": dict(ref_gpus=8, kimg=25000, mb=32, mbstd=4, fmaps=1, lrate=0.002, gamma=2, ema=10, ramp=None, map=8),
    "cifar":     dict(ref_gpus=2, kimg=100000, mb=64, mbstd=32, fmaps=1, lrate=0.0025, gamma=0.01, ema=500, ramp=0.05,
                      map=2),
}
CFG_NAMES = tuple(CFG_SPECS)

# Constructor defaults of the official networks (used when a pickle's init kwargs leave a value out).
_G_DEFAULTS = dict(channel_base=32768, channel_max=512, num_layers=8)
_D_DEFAULTS = dict(channel_base=32768, channel_max=512, architecture="resnet")


class TrainingOptionsError(UserError):
    """A bad option, or an input (dataset, pickle) that does not fit the options; the message says what to do."""


# ---------------------------------------------------------------------------------------------------------------
# The option table.

@dataclasses.dataclass(frozen=True)
class Option:
    """One training option: keyword `name` (flag --name-with-dashes), its kind and checks, default and help.

    A default of None means "derived" (from --cfg, the dataset, another option): `derived` says from what.
    `off_word` (numbers only) is a word accepted instead of a number, meaning "off" (kept as that word).
    `per_run` options may be passed through unchanged to every run of scripts/compare_objectives.py.
    """
    name: str
    kind: str  # 'int', 'float', 'str', 'bool' or 'choice'
    help: str
    default: Any = None
    derived: str | None = None
    metavar: str | None = None
    choices: tuple[str, ...] = ()
    low: float | None = None
    low_open: bool = False
    high: float | None = None
    off_word: str | None = None
    per_run: bool = True

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def default_text(self) -> str:
        """The default as --help shows it."""
        if self.derived is not None:
            return self.derived
        return f"{self.default:g}" if isinstance(self.default, float) else str(self.default)

    def check(self, value: Any) -> Any:
        """The validated value (None stays None); TrainingOptionsError naming the flag otherwise."""
        if value is None:
            return None
        if self.kind == "int":
            return _integer(self.flag, value, -math.inf if self.low is None else self.low, self.high)
        if self.kind == "float":
            if self.off_word is not None and isinstance(value, str) and value.strip().lower() == self.off_word:
                return self.off_word
            return _number(self.flag, value, self.low, self.high, low_inclusive=not self.low_open,
                           alternative=self.off_word)
        if self.kind == "choice":
            return _choice(self.flag, value, self.choices)
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise TrainingOptionsError(f"{self.flag} must be true or false, got {value!r}")
            return value
        if not isinstance(value, str):
            raise TrainingOptionsError(f"{self.flag} must be text, got {value!r}")
        return value


_FROM_CFG = "from --cfg"
TRAINING_OPTIONS: tuple[Option, ...] = (
    Option("data", "str", "Training data: a ZIP or a folder of images.", metavar="PATH", per_run=False),
    Option("resume", "str", "Network to start from: path or URL of an official pickle or one of our snapshots "
           "(ours continue kimg, tick and ADA p; exactly with the .state.pt file beside them).", metavar="PKL",
           per_run=False),
    Option("adapt_resolution", "bool", "Resume a --resume network of another resolution: blocks both resolutions "
           "have are copied, the others start fresh (report in log.txt and training_options.json).", default=False,
           per_run=False),
    Option("loss", "choice", "Adversarial objective.", default="rooted", choices=OBJECTIVES, per_run=False),
    Option("k", "float", f"Root of the rooted objective, in [{K_MIN:g}, {K_MAX:g}].", derived=f"{DEFAULT_K:g}",
           per_run=False),
    Option("gamma", "float", "R1 regularization weight.", derived=_FROM_CFG, low=0),
    Option("cfg", "choice", "Base configuration (official hyperparameters).", default="auto", choices=CFG_NAMES),
    Option("cbase", "int", "Channel base (capacity).", derived=_FROM_CFG, low=1),
    Option("cmax", "int", "Max feature maps.", derived=f"{DEFAULT_CMAX}", low=1),
    Option("map_depth", "int", "Mapping network depth.", derived=_FROM_CFG, low=1),
    Option("mbstd_group", "int", "Minibatch std group size.", derived="from --cfg or the resumed pickle", low=1),
    Option("glr", "float", "G learning rate.", derived=_FROM_CFG, low=0, low_open=True),
    Option("dlr", "float", "D learning rate.", derived=_FROM_CFG, low=0, low_open=True),
    Option("freezed", "int", "Freeze the first N discriminator layers (FreezeD).", default=0, low=0),
    Option("mirror", "bool", "Add x-flipped copies of the dataset.", default=False),
    Option("subset", "int", "Train on a random subset of N images.", derived="all images", low=1),
    Option("cond", "bool", "Conditional training on the dataset.json labels.", default=False),
    Option("aug", "choice", "Augmentation mode.", default="ada", choices=AUG_MODES),
    Option("p", "float", "Augmentation probability (--aug fixed; initial p for ada).", derived="0", low=0, high=1),
    Option("target", "float", "ADA target.", derived=f"{DEFAULT_TARGET:g} with --aug ada", low=0, high=1),
    Option("augpipe", "choice", "Augmentation pipeline.", derived=DEFAULT_AUGPIPE, choices=tuple(AUGPIPE_SPECS)),
    Option("gpus", "int", "Number of local processes (GPUs; on CPU, gloo processes). Under torchrun: its world "
           "size.", default=1, low=1),
    Option("device", "str", f"Compute device: {DEVICE_HELP}.", default="auto", per_run=False),
    Option("kimg", "float", "Total training length in thousands of images.", derived=_FROM_CFG, low=0,
           low_open=True, per_run=False),
    Option("tick", "float", "kimg per tick (status line, stats).", default=4.0, low=0, low_open=True, per_run=False),
    Option("snap", "int", "Ticks between snapshots and image grids. Files are named by whole kimg as upstream, so a "
           "later one within the same kimg replaces the earlier one.", default=50, low=1, per_run=False),
    Option("batch", "int", "Total batch size.", derived=_FROM_CFG, low=1),
    Option("batch_gpu", "int", "Batch per forward pass per process.", derived="batch / gpus", low=1),
    Option("seed", "int", "Random seed.", default=0, low=0, per_run=False),
    Option("workers", "int", "DataLoader workers.", default=3, low=0),
    Option("desc", "str", "Extra text appended to the run directory name.", per_run=False),
    Option("metrics", "str", "Metrics at each snapshot: comma-separated (fid50k_full,kid50k_full) or none.",
           default="none", metavar="LIST", per_run=False),
    Option("metrics_num", "int", "Generated images per metric.", derived="50000", low=1, per_run=False),
    Option("metric_data", "str", "Compute --metrics against this dataset (e.g. held-out images) instead of the "
           "training data.", metavar="PATH", per_run=False),
    Option("best_metric", "str", "Keep the best snapshot by this metric as best-NAME.pkl (+ .json).",
           derived="the first of --metrics", metavar="NAME", per_run=False),
    Option("ema_kimg", "float", "G_ema half-life in kimg (short fine-tuning runs: about --kimg / 5).",
           derived=_FROM_CFG, low=0, low_open=True),
    Option("ema_rampup", "float", "G_ema ramp-up: the half-life is at most this times the kimg so far; none: no "
           "ramp-up.", derived="from --cfg; none when resuming", metavar="FLOAT|none", low=0, low_open=True,
           off_word="none"),
    Option("trust_pickle", "bool", "Execute the code embedded in the --resume pickle (only for trusted files).",
           default=False),
)
OPTIONS_BY_NAME = {option.name: option for option in TRAINING_OPTIONS}


def resolve_options(values: dict[str, Any]) -> EasyDict:
    """Every table option: the given value (checked) or, where it is None or absent, the table default."""
    unknown = sorted(set(values) - set(OPTIONS_BY_NAME))
    if unknown:
        raise TrainingOptionsError(f"unknown training option(s) {', '.join(unknown)}; the options are "
                                   f"{', '.join(OPTIONS_BY_NAME)}")
    return EasyDict({name: option.default if values.get(name) is None else option.check(values[name])
                     for name, option in OPTIONS_BY_NAME.items()})


# ---------------------------------------------------------------------------------------------------------------
# Small validators.

def _range_text(low: float | None, high: float | None, low_inclusive: bool) -> str:
    """'> 0', '>= 0', 'in [0, 1]' or 'in (0, 1]'."""
    if high is None:
        return f"{'>=' if low_inclusive else '>'} {low:g}"
    return f"in {'[' if low_inclusive else '('}{low:g}, {high:g}]"


def _number(name: str, value: Any, low: float | None = None, high: float | None = None,
            low_inclusive: bool = True, alternative: str | None = None) -> float:
    """A finite float within [low, high] (or (low, high] when low_inclusive is False); the messages mention the
    word `alternative` when one is accepted instead."""
    other = "" if alternative is None else f" or {alternative!r}"
    if isinstance(value, bool):
        raise TrainingOptionsError(f"{name} must be a number{other}, got {value!r}")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise TrainingOptionsError(f"{name} must be a number{other}, got {value!r}") from None
    ok = math.isfinite(x)
    if ok and low is not None:
        ok = x >= low if low_inclusive else x > low
    if ok and high is not None:
        ok = x <= high
    if not ok:
        bounds = "" if low is None else " " + _range_text(low, high, low_inclusive)
        raise TrainingOptionsError(f"{name} must be a finite number{bounds}{other}, got {value!r}")
    return x


def _integer(name: str, value: Any, low: float, high: float | None = None) -> int:
    """An int >= low (and <= high)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TrainingOptionsError(f"{name} must be an integer, got {value!r}")
    if value < low:
        raise TrainingOptionsError(f"{name} must be at least {low:g}, got {value}")
    if high is not None and value > high:
        raise TrainingOptionsError(f"{name} must be at most {high:g}, got {value}")
    return int(value)


def _choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise TrainingOptionsError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def parse_metrics(metrics: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """'none'/''/None -> []; 'a,b' -> ['a', 'b'], validated by evaluation.metrics (imported
    only when needed)."""
    if metrics is None:
        return []
    names = [m.strip() for m in (metrics.split(",") if isinstance(metrics, str) else metrics)]
    names = [m for m in names if m and m != "none"]
    if not names:
        return []
    try:
        from stylegan_rlo.evaluation.metrics import validate_metric_names
    except ImportError as e:
        raise TrainingOptionsError(f"--metrics {','.join(names)}: metrics are unavailable ({e}); "
                                   f"use --metrics none") from e
    try:
        return list(validate_metric_names(names))
    except UserError as e:
        raise TrainingOptionsError(f"--metrics: {e}") from e


# ---------------------------------------------------------------------------------------------------------------
# Presets.

def cfg_spec(cfg: str, resolution: int, num_gpus: int) -> EasyDict:
    """Hyperparameters of preset `cfg`; 'auto' is derived from the resolution and GPU count as upstream."""
    spec = EasyDict(CFG_SPECS[_choice("--cfg", cfg, CFG_NAMES)])
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
# The one place where options are checked and combined.

def setup_training_options(*, exact_resume: bool = True, **values: Any) -> tuple[str, EasyDict]:
    """Validate the options (keywords of TRAINING_OPTIONS; None or absent = the table default) and return
    (run description 'dataset-cfg-objective[-desc]', training_loop kwargs).

    `exact_resume` (library only): continue a resumed snapshot of ours exactly from its training state file, when it
    has one; False starts the optimizers, RNGs and data order afresh (e.g. runs that must each keep their own seed).

    Raises TrainingOptionsError with a message naming the option (or file) and what to do about it.
    """
    from stylegan_rlo.checkpoints.pickles import PickleError, load_network_pkl
    from stylegan_rlo.data.dataset import DatasetError, ImageFolderDataset

    o = resolve_options(values)
    args = EasyDict()

    # Objective.
    try:
        objective = Objective(o.loss, o.k)
    except UserError as e:
        raise TrainingOptionsError(f"--k: {e}") from None
    args.objective = objective.spec

    # Processes, devices, schedule basics.
    num_gpus = o.gpus
    args.num_gpus = num_gpus
    args.device = str(parse_device(o.device, num_gpus))
    args.random_seed = o.seed
    args.data_loader_kwargs = dict(num_workers=o.workers)
    args.kimg_per_tick = o.tick
    args.image_snapshot_ticks = args.network_snapshot_ticks = o.snap
    args.metrics = parse_metrics(o.metrics)
    args.metrics_num = o.metrics_num
    if args.metrics_num is not None and not args.metrics:
        raise TrainingOptionsError("--metrics-num needs --metrics (e.g. --metrics fid50k_full)")

    # Dataset.
    data, cond = o.data, o.cond
    if not data:
        raise TrainingOptionsError("--data is required: a dataset ZIP or folder (see scripts/dataset_tool.py)")
    try:
        dataset = ImageFolderDataset(path=data, use_labels=bool(cond))
    except (DatasetError, OSError) as e:
        raise TrainingOptionsError(f"--data {data}: {e}") from e
    if cond and not dataset.has_labels:
        raise TrainingOptionsError(f"--cond needs labels, but {data} has no dataset.json labels; "
                                   f"build it with scripts/dataset_tool.py --labels or drop --cond")
    num_images = len(dataset)
    max_size = num_images
    if o.subset is not None:
        max_size = o.subset
        if max_size > num_images:
            raise TrainingOptionsError(f"--subset must be between 1 and {num_images} (the dataset size), "
                                       f"got {o.subset}")
    resolution, channels = dataset.resolution, dataset.num_channels
    if resolution < MIN_RESOLUTION:
        raise TrainingOptionsError(f"--data {data}: images are {resolution}x{resolution}, but training needs at least "
                                   f"{MIN_RESOLUTION}x{MIN_RESOLUTION}; rebuild the dataset with "
                                   f"scripts/dataset_tool.py --resolution {MIN_RESOLUTION} (or larger)")
    c_dim = dataset.label_dim if cond else 0
    args.training_set_kwargs = dict(class_name=OFFICIAL_DATASET_CLASS, path=data, use_labels=cond,
                                    max_size=max_size, xflip=o.mirror, resolution=resolution,
                                    random_seed=args.random_seed)
    dataset.close()

    # Base config and overrides.
    cfg = o.cfg
    spec = cfg_spec(cfg, resolution, num_gpus)
    lr_G = spec.lrate if o.glr is None else o.glr
    lr_D = spec.lrate if o.dlr is None else o.dlr
    args.G_opt_kwargs = dict(lr=lr_G, betas=[0.0, 0.99], eps=1e-8)
    args.D_opt_kwargs = dict(lr=lr_D, betas=[0.0, 0.99], eps=1e-8)
    args.loss_kwargs = dict(r1_gamma=spec.gamma if o.gamma is None else o.gamma)
    if cfg == "cifar":
        args.loss_kwargs.update(pl_weight=0, style_mixing_prob=0)
    args.total_kimg = spec.kimg if o.kimg is None else o.kimg
    args.ema_kimg = spec.ema
    args.ema_rampup = spec.ramp
    args.batch_size = spec.mb
    args.batch_gpu = spec.mb // spec.ref_gpus
    if o.batch is not None:
        args.batch_size = o.batch
        args.batch_gpu = args.batch_size // num_gpus
    if args.batch_size % num_gpus != 0:
        raise TrainingOptionsError(f"--batch {args.batch_size} must be divisible by the number of processes "
                                   f"({num_gpus})")
    if o.batch_gpu is not None:
        args.batch_gpu = o.batch_gpu
    args.batch_gpu = max(min(args.batch_gpu, args.batch_size // num_gpus), 1)
    if args.batch_size % (args.batch_gpu * num_gpus) != 0:
        raise TrainingOptionsError(f"--batch {args.batch_size} must be a multiple of --batch-gpu {args.batch_gpu} "
                                   f"times the number of processes ({num_gpus})")

    # Augmentation.
    aug, p, target, augpipe = o.aug, o.p, o.target, o.augpipe
    args.augment_p = 0.0
    args.ada_target = None
    args.ada_kimg = 500
    if p is not None:
        if aug == "noaug":
            raise TrainingOptionsError("--p cannot be used with --aug noaug")
        args.augment_p = p
    if aug == "fixed" and p is None:
        raise TrainingOptionsError("--aug fixed requires --p (the fixed augmentation probability)")
    if target is not None:
        if aug != "ada":
            raise TrainingOptionsError("--target can only be used with --aug ada")
        args.ada_target = target
    elif aug == "ada":
        args.ada_target = DEFAULT_TARGET
    if augpipe is not None and aug == "noaug":
        raise TrainingOptionsError("--augpipe cannot be used with --aug noaug")
    augpipe = DEFAULT_AUGPIPE if augpipe is None else augpipe
    args.augment_kwargs = dict(AUGPIPE_SPECS[augpipe]) if aug != "noaug" else None

    # Networks: from the resume pickle's own kwargs, or fresh from the preset.
    explicit = dict(cbase=o.cbase, cmax=o.cmax, map_depth=o.map_depth)
    resume = o.resume
    args.resume_pkl = resume
    args.trust_pickle = o.trust_pickle
    start_kimg = 0.0
    resume_data = None
    if resume is not None:
        try:
            resume_data = load_network_pkl(resume, trust_pickle=o.trust_pickle)
        except (PickleError, OSError, ValueError) as e:  # ValueError: e.g. an unsupported URL scheme
            raise TrainingOptionsError(f"--resume {resume}: {e}") from e
        G_kwargs, D_kwargs = _resumed_networks(resume_data, resume, spec, cfg, resolution, channels, c_dim, explicit,
                                               adapt_resolution=o.adapt_resolution)
        progress = resume_data.get("progress") or {}
        start_kimg = progress.get("cur_nimg", 0) / 1000
        args.ada_kimg = 100  # as upstream: let ADA react faster when starting from a trained network
        args.ema_rampup = None  # as upstream: no EMA ramp-up when starting from a trained network
    else:
        G_kwargs, D_kwargs = fresh_networks(spec, cfg, resolution, channels, c_dim, o.cbase, o.cmax, o.map_depth)
    # Fine-tuning options (--adapt-resolution, exact resume, --ema-*, --metric-data, --best-metric).
    from stylegan_rlo.training import fine_tuning_options
    G_kwargs, D_kwargs = fine_tuning_options.apply(
        args, G_kwargs, D_kwargs, resume=resume, resume_data=resume_data, resolution=resolution, channels=channels,
        c_dim=c_dim, adapt_resolution=o.adapt_resolution, ema_kimg=o.ema_kimg, ema_rampup=o.ema_rampup,
        metric_data=o.metric_data, best_metric=o.best_metric, exact_resume=bool(exact_resume))
    if args.resume_transfer is not None:
        start_kimg = 0.0  # an adapted network starts a new training: kimg counts from 0
    if o.mbstd_group is not None:
        D_kwargs.setdefault("epilogue_kwargs", {})["mbstd_group_size"] = o.mbstd_group
    if o.freezed or "freeze_layers" in D_kwargs.get("block_kwargs", {}):
        D_kwargs.setdefault("block_kwargs", {})["freeze_layers"] = o.freezed
    args.G_kwargs, args.D_kwargs = G_kwargs, D_kwargs
    if args.total_kimg <= start_kimg:
        raise TrainingOptionsError(f"--kimg {args.total_kimg:g}: --resume {resume} is already at {start_kimg:g} kimg; "
                                   f"--kimg is the total length of training, pass a larger value")

    # The minibatch standard deviation layer splits each D batch into groups of this size.
    group = D_kwargs.get("epilogue_kwargs", {}).get("mbstd_group_size", 4)
    if group and args.batch_gpu % min(group, args.batch_gpu) != 0:
        raise TrainingOptionsError(f"--batch-gpu {args.batch_gpu} must be divisible by the minibatch-std group "
                                   f"size {group} (set --mbstd-group or --batch-gpu)")

    run_desc = f"{dataset.name}-{cfg}-{objective.slug}"
    if o.desc:
        if any(sep in o.desc for sep in ("/", "\\", "\0")):
            raise TrainingOptionsError(f"--desc {o.desc!r} must not contain '/', '\\' or NUL: it becomes part of one "
                                       f"folder name")
        run_desc += f"-{o.desc}"
    return run_desc, EasyDict(_plain(args))
