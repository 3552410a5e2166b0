"""The training option table: every option declared once (name, type and validation, default, help), with the
official `--cfg` presets its derived defaults come from, and `TrainingOptionsError`, the error of every training
input.

The command-line options of scripts/train.py and scripts/compare_objectives.py are generated from TRAINING_OPTIONS;
`stylegan_rlo.training.config.setup_training_options` turns the values into training_loop kwargs.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from dnnlib.util import EasyDict
from stylegan_rlo.devices import DEVICE_HELP
from stylegan_rlo.errors import UserError
from stylegan_rlo.model.augment import AUGPIPE_SPECS
from stylegan_rlo.model.diffaugment import POLICIES as DIFFAUGMENT_POLICIES
from stylegan_rlo.objectives import DEFAULT_K, K_MAX, K_MIN, OBJECTIVES
from stylegan_rlo.training.loss import DEFAULT_LECAM_DECAY

AUG_MODES = ("ada", "noaug", "fixed")
DEFAULT_AUGPIPE = "bgc"
DEFAULT_TARGET = 0.6
DEFAULT_CMAX = 512

# Official presets (--cfg). fmaps scales channel_base (= fmaps * 32768); 'auto' is filled in from resolution and GPU
# count by stylegan_rlo.training.config.cfg_spec.
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
    `per_arm` options may differ between the arms of a comparison (compare_objectives.py --arm LABEL:NAME=VALUE,...).
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
    per_arm: bool = False

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
    Option("loss", "choice", "Adversarial objective.", default="rooted", choices=OBJECTIVES, per_run=False,
           per_arm=True),
    Option("k", "float", f"Root of the rooted objective, in [{K_MIN:g}, {K_MAX:g}].", derived=f"{DEFAULT_K:g}",
           per_run=False, per_arm=True),
    Option("gamma", "float", "R1 regularization weight.", derived=_FROM_CFG, low=0, per_arm=True),
    Option("lecam", "float", "LeCam regularization weight (0: off): weight * (mean relu(D(x) - a_F)^2 + mean "
           "relu(a_R - D(G(z)))^2), a_R and a_F moving averages of D's mean real and fake outputs.", default=0.0,
           low=0, per_arm=True),
    Option("lecam_decay", "float", "Decay of LeCam's moving averages per D step (needs --lecam).",
           derived=f"{DEFAULT_LECAM_DECAY:g}", low=0, high=1, per_arm=True),
    Option("diffaugment", "str", f"DiffAugment: a comma-separated subset of {','.join(DIFFAUGMENT_POLICIES)} applied "
           "to every image D sees, or none (needs --aug noaug).", default="none", metavar="LIST", per_arm=True),
    Option("cfg", "choice", "Base configuration (official hyperparameters).", default="auto", choices=CFG_NAMES),
    Option("cbase", "int", "Channel base (capacity).", derived=_FROM_CFG, low=1),
    Option("cmax", "int", "Max feature maps.", derived=f"{DEFAULT_CMAX}", low=1),
    Option("map_depth", "int", "Mapping network depth.", derived=_FROM_CFG, low=1),
    Option("mbstd_group", "int", "Minibatch std group size.", derived="from --cfg or the resumed pickle", low=1),
    Option("glr", "float", "G learning rate.", derived=_FROM_CFG, low=0, low_open=True, per_arm=True),
    Option("dlr", "float", "D learning rate.", derived=_FROM_CFG, low=0, low_open=True, per_arm=True),
    Option("freezed", "int", "Freeze the first N discriminator layers (FreezeD).", default=0, low=0, per_arm=True),
    Option("mirror", "bool", "Add x-flipped copies of the dataset.", default=False),
    Option("subset", "int", "Train on a random subset of N images.", derived="all images", low=1),
    Option("cond", "bool", "Conditional training on the dataset.json labels.", default=False),
    Option("aug", "choice", "Augmentation mode.", default="ada", choices=AUG_MODES, per_arm=True),
    Option("p", "float", "Augmentation probability (--aug fixed; initial p for ada).", derived="0", low=0, high=1,
           per_arm=True),
    Option("target", "float", "ADA target.", derived=f"{DEFAULT_TARGET:g} with --aug ada", low=0,
           high=1, per_arm=True),
    Option("augpipe", "choice", "Augmentation pipeline.", derived=DEFAULT_AUGPIPE, choices=tuple(AUGPIPE_SPECS),
           per_arm=True),
    Option("gpus", "int", "Number of local processes (GPUs; on CPU, gloo processes). Under torchrun: its world "
           "size.", default=1, low=1),
    Option("device", "str", f"Compute device: {DEVICE_HELP}.", default="auto", per_run=False),
    # The official GPU switches: precision and memory layout of the networks, cuDNN/TF32 back-end settings. None
    # changes a value on the CPU (always float32 and channels-last there; no cuDNN, no TF32).
    Option("fp32", "bool", "Disable mixed precision: no fp16 layers and no conv clamping in G and D (harmless on "
           "the CPU, which always computes in float32).", default=False),
    Option("nhwc", "bool", "Channels-last memory layout in the fp16 layers of G and D (harmless on the CPU, which "
           "always uses channels-last float32).", default=False),
    Option("allow_tf32", "bool", "Allow TF32 in CUDA matrix products and cuDNN convolutions (Ampere and newer GPUs: "
           "faster, less precise; ignored on the CPU).", default=False),
    Option("nobench", "bool", "Disable the cuDNN benchmark (autotuning of convolution algorithms; ignored on the "
           "CPU).", default=False),
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
    Option("metrics", "str", "Metrics at each snapshot: comma-separated "
           "(fid50k_full,kid50k_full,pr50k3_inception,mem50k_inception) or none.",
           default="none", metavar="LIST", per_run=False),
    Option("metrics_num", "int", "Generated images per metric.", derived="50000", low=1, per_run=False),
    Option("metric_data", "str", "Compute --metrics against this dataset (e.g. held-out images) instead of the "
           "training data; mem50k_inception needs it.", metavar="PATH", per_run=False),
    Option("vgg16", "str", "VGG16 weights for --metrics pr50k3_full: torchvision's state dict vgg16-397923af.pth.",
           derived="the file in .cache/vgg16/ or torch hub's checkpoints folder", metavar="FILE", per_run=False),
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


def parse_metrics(metrics: str | list[str] | tuple[str, ...] | None, vgg16: str | None = None) -> list[str]:
    """'none'/''/None -> []; 'a,b' -> ['a', 'b'], validated by evaluation.metrics; pr50k3_full's VGG16 weights
    (`vgg16`, else the default places) must exist."""
    if metrics is None:
        return []
    names = [m.strip() for m in (metrics.split(",") if isinstance(metrics, str) else metrics)]
    names = [m for m in names if m and m != "none"]
    if not names:
        return []
    try:
        # optional: evaluation.metrics needs torch_fidelity, and only runs with metrics do
        from stylegan_rlo.evaluation.metrics import validate_metric_names
    except ImportError as e:
        raise TrainingOptionsError(f"--metrics {','.join(names)}: metrics are unavailable ({e}); "
                                   f"use --metrics none") from e
    try:
        checked = list(validate_metric_names(names))
        if "pr50k3_full" in checked:  # needs a VGG16 weights file: refused now, not at the first snapshot
            from stylegan_rlo.evaluation.vgg16 import resolve_vgg16_path  # start-up: only for this metric
            resolve_vgg16_path(vgg16)
        return checked
    except UserError as e:
        raise TrainingOptionsError(f"--metrics: {e}") from e
