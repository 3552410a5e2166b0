"""Option helpers shared by the command-line tools, so each kind of option is declared and checked in one place:
the training options come from stylegan_rlo.training.options.TRAINING_OPTIONS, devices from stylegan_rlo.devices."""

from __future__ import annotations

from typing import Any, Callable, Iterable

import click

from stylegan_rlo.devices import DEVICE_HELP, parse_device

_CLICK_TYPES = {"int": (int, "INT"), "float": (float, "FLOAT"), "str": (str, "TEXT")}


def device_option(default: str = "auto", help_text: str = f"Compute device: {DEVICE_HELP}."):
    """--device, parsed to a torch.device by the one device parser (bad names and missing GPUs: exit 2)."""
    def parse(_ctx: click.Context, _param: click.Parameter, value: str):
        return parse_device(value)
    return click.option("--device", default=default, show_default=True, metavar="DEVICE", callback=parse,
                        help=help_text)


def bool_option(name: str, help_text: str, default: bool | None = False, show_default: Any = True):
    """A boolean that works both as a flag (`--mirror`) and with a value, as upstream (`--mirror=1`)."""
    return click.option(name, type=bool, is_flag=False, flag_value=True, default=default, show_default=show_default,
                        metavar="[BOOL]", help=help_text)


def training_options(names: Iterable[str] | None = None, required: Iterable[str] = ()) -> Callable:
    """Click options for the training options `names` (default: all), generated from TRAINING_OPTIONS.

    Every option defaults to None ("not given") so that the library fills in the table's default and a command can
    pass on just what the user set; --help shows the table's default.
    """
    # start-up: the table imports torch (augment pipes, objectives); commands without training options (calc_fid)
    # keep a fast --help
    from stylegan_rlo.training.options import OPTIONS_BY_NAME, TRAINING_OPTIONS
    chosen = [OPTIONS_BY_NAME[name] for name in names] if names is not None else list(TRAINING_OPTIONS)
    required = set(required)

    def decorate(fn: Callable) -> Callable:
        for option in reversed(chosen):  # click lists options in the order the decorators are written
            help_text = option.help
            if option.name not in required and (option.default is not None or option.derived is not None):
                help_text += f"  [default: {option.default_text}]"
            if option.kind == "bool":
                decorator = bool_option(option.flag, help_text, default=None, show_default=False)
            elif option.kind == "choice":
                decorator = click.option(option.flag, type=click.Choice(option.choices), help=help_text,
                                         required=option.name in required)
            else:
                kind, metavar = _CLICK_TYPES["str" if option.off_word is not None else option.kind]
                decorator = click.option(option.flag, type=kind, metavar=option.metavar or metavar, help=help_text,
                                         required=option.name in required)
            fn = decorator(fn)
        return fn
    return decorate


def given(values: dict[str, Any]) -> dict[str, Any]:
    """The options the user set (click passes None for the others)."""
    return {name: value for name, value in values.items() if value is not None}
