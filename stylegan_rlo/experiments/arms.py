"""The arms of a comparison: each a label plus the training options that set it apart (only options the table marks
`per_arm`, checked by the table's own Option.check); every other option is shared by all runs.

Arms come from `--arm LABEL:NAME=VALUE,...` (shell-safe, no quotes needed), from an arms file (JSON or TOML: a table
of labels, each a table of options) or from the `--objectives` shorthand (one arm per objective, labelled by its
name). Labels name run directories and files, so they are restricted to a safe alphabet.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tomllib
from typing import Any, Mapping, Sequence

from stylegan_rlo.errors import UserError
from stylegan_rlo.objectives import Objective
from stylegan_rlo.training.options import OPTIONS_BY_NAME, TRAINING_OPTIONS, Option

PER_ARM_OPTIONS = tuple(option.name for option in TRAINING_OPTIONS if option.per_arm)
LABEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,39}")
LABEL_RULE = "1-40 letters, digits, '.', '_', '+' or '-', starting with a letter or digit"
ARM_SYNTAX = "LABEL:NAME=VALUE,NAME=VALUE,... (e.g. rlo8:loss=rooted,k=8)"
MAX_ARMS_FILE_BYTES = 2**20
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


class ArmError(UserError):
    """An arm specification that cannot be used; the message names the arm and what to change."""


@dataclasses.dataclass(frozen=True)
class Arm:
    """One arm: its label and its per-arm training options (checked; the objective always spelled out as loss and,
    for the rooted objective, k)."""
    label: str
    options: dict

    @property
    def objective(self) -> Objective:
        return Objective(self.options["loss"], self.options.get("k"))

    @property
    def description(self) -> str:
        """'loss=rooted, k=8, gamma=1': the options as an arm specification writes them."""
        return ", ".join(f"{name}={_text(value)}" for name, value in self.options.items())

    def to_json(self) -> dict:
        return dict(label=self.label, options=dict(self.options))


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)


def _value(option: Option, value: Any) -> Any:
    """A value from a command line or a file, converted by the option's kind where it is text, then Option.check."""
    if isinstance(value, str) and option.kind == "bool":
        word = value.strip().lower()
        if word not in _TRUE + _FALSE:
            raise ArmError(f"{option.flag} must be true or false, got {value!r}")
        return word in _TRUE
    if isinstance(value, str) and option.kind == "int":
        try:
            value = int(value)
        except ValueError:
            raise ArmError(f"{option.flag} must be an integer, got {value!r}") from None
    return option.check(value)


def make_arm(label: str, values: Mapping[str, Any]) -> Arm:
    """An Arm from a label and option values (names with '_' or '-'); ArmError naming the arm when the label, an
    option name or a value is not allowed, or the objective does not take the options given (k without rooted)."""
    if not isinstance(label, str) or not LABEL_RE.fullmatch(label):
        raise ArmError(f"arm label {label!r}: labels name run directories and files; use {LABEL_RULE}")
    given: dict[str, Any] = {}
    for key, value in values.items():
        name = str(key).strip().lstrip("-").replace("-", "_")
        option = OPTIONS_BY_NAME.get(name)
        if option is None:
            raise ArmError(f"arm {label}: unknown option {key!r}; an arm may set "
                           f"{', '.join(PER_ARM_OPTIONS)}")
        if not option.per_arm:
            raise ArmError(f"arm {label}: {option.flag} is shared by all runs of a comparison and may not differ "
                           f"between arms (arms may set {', '.join(PER_ARM_OPTIONS)})")
        if name in given:
            raise ArmError(f"arm {label}: {option.flag} is given twice")
        try:
            given[name] = _value(option, value)
        except UserError as e:
            raise ArmError(f"arm {label}: {e}") from None
    try:
        objective = Objective(given.get("loss", OPTIONS_BY_NAME["loss"].default), given.get("k"))
    except UserError as e:
        raise ArmError(f"arm {label}: {e}") from None
    given.update(loss=objective.name, k=objective.k)
    options = {name: given[name] for name in PER_ARM_OPTIONS if given.get(name) is not None}  # table order
    return Arm(label, options)


def parse_arm(text: str) -> Arm:
    """'LABEL:NAME=VALUE,...' -> Arm. A part without '=' continues the previous value, so that values may hold
    commas (e.g. a DiffAugment policy: diffaugment=color,translation)."""
    label, colon, rest = str(text).partition(":")
    if not colon:
        raise ArmError(f"--arm {text!r}: expected {ARM_SYNTAX}")
    values: dict[str, str] = {}
    last = None
    for part in rest.split(","):
        key, equals, value = part.partition("=")
        if equals:
            key = key.strip()
            if key in values:
                raise ArmError(f"arm {label}: {key} is given twice")
            values[key], last = value.strip(), key
        elif last is not None:
            values[last] += "," + part.strip()
        elif part.strip():
            raise ArmError(f"arm {label}: {part.strip()!r} is not NAME=VALUE; expected {ARM_SYNTAX}")
    return make_arm(label.strip(), values)


def load_arms_file(path: str) -> list[Arm]:
    """Arms from a JSON or TOML file: {label: {option: value, ...}, ...} (arms in the file's order)."""
    kind = os.path.splitext(path)[1].lower()
    if kind not in (".json", ".toml"):
        raise ArmError(f"--arms {path}: expected a .json or .toml file")
    try:
        if os.path.getsize(path) > MAX_ARMS_FILE_BYTES:
            raise ArmError(f"--arms {path}: larger than {MAX_ARMS_FILE_BYTES // 1024} KiB; an arms file lists a few "
                           f"labels and options")
        with open(path, "rb") as f:
            table = json.load(f) if kind == ".json" else tomllib.load(f)
    except (OSError, ValueError) as e:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        raise ArmError(f"--arms {path}: {e}") from None
    if not isinstance(table, dict) or not table:
        raise ArmError(f"--arms {path}: expected a table of arms, label -> options, e.g. "
                       '{"logistic": {"loss": "logistic"}, "rlo8": {"loss": "rooted", "k": 8}}')
    arms = []
    for label, values in table.items():
        if not isinstance(values, dict):
            raise ArmError(f"--arms {path}: arm {label}: expected a table of options, got {values!r}")
        arms.append(make_arm(label, values))
    return arms


def objective_arms(text: str) -> list[Arm]:
    """The --objectives shorthand 'logistic,rooted:8': one arm per objective, labelled by its name (logistic,
    rooted8); 'rooted' alone means k=8."""
    arms: list[Arm] = []
    for part in str(text).split(","):
        try:
            objective = Objective.parse(part)
        except UserError as e:
            raise ArmError(f"--objectives: {e}") from None
        if any(arm.objective == objective for arm in arms):
            raise ArmError(f"objective {objective.label} is listed twice in {text!r}")
        arms.append(make_arm(objective.slug, dict(loss=objective.name, k=objective.k)))
    return arms


def check_arms(arms: Sequence[Arm]) -> list[Arm]:
    """At least one arm, labels distinct (also ignoring case: they name files); returns them as a list."""
    if not arms:
        raise ArmError(f"no arms given; e.g. --objectives logistic,rooted:8 or --arm {ARM_SYNTAX.split(' ', 1)[0]}")
    seen: dict[str, str] = {}
    for arm in arms:
        other = seen.get(arm.label.lower())
        if other is not None:
            raise ArmError(f"arm label {arm.label} is used twice" + (f" (as {other}: labels name files, whose case "
                                                                    f"may not count)" if other != arm.label else ""))
        seen[arm.label.lower()] = arm.label
    return list(arms)


def changed_arms(old: Sequence[dict], new: Sequence[Arm]) -> list[str]:
    """How the arms `new` differ from the recorded ones (Arm.to_json dicts), one phrase per arm; [] when equal."""
    before = {a["label"]: Arm(a["label"], a["options"]) for a in old}
    now = {arm.label: arm for arm in new}
    out = [f"arm {label} had {before[label].description}, now {arm.description}"
           for label, arm in now.items() if label in before and before[label].options != arm.options]
    out += [f"arm {label} is new" for label in now if label not in before]
    out += [f"arm {label} is missing" for label in before if label not in now]
    if not out and list(before) != list(now):
        out.append(f"the arms' order changed (was {', '.join(before)}; the first is the baseline)")
    return out
