"""`--adapt-resolution`: resume a network pickle at another image resolution.

Both networks are rebuilt from the pickle's own constructor arguments with only `img_resolution` changed. Feature
map widths depend on the block resolution alone (min(channel_base / res, channel_max)), so every block that both
networks have keeps its shapes: tensors are copied by name, the rest keeps its fresh initialization. Going down, G
keeps its mapping and its synthesis blocks up to the new resolution and D its blocks from there down (the input
layer of D's new top block is fresh); going up, the new top blocks are fresh. Only parameter/buffer names and shapes
are relied on, not the networks' code.
"""

from __future__ import annotations

import re
from typing import Iterable

import torch

from stylegan_rlo.model import networks
from stylegan_rlo.training.options import TrainingOptionsError

ACTIONS = ("copied", "fresh", "dropped")  # dropped: in the pickle, not in the adapted network
_BLOCK = re.compile(r"b\d+")


class AdaptResolutionError(TrainingOptionsError):
    """The pickle cannot be adapted to the dataset's resolution (another architecture, a shape that differs)."""


def check_resolution(resolution: int, what: str) -> None:
    """Block networks exist for powers of two from 4 up."""
    if resolution < 4 or resolution & (resolution - 1):
        raise AdaptResolutionError(f"--adapt-resolution: {what} is {resolution}x{resolution}; StyleGAN2 networks "
                                   f"need a power-of-two resolution of at least 4")


def adapted_kwargs(kwargs: dict, resolution: int) -> dict:
    """Constructor kwargs of G or D with img_resolution set to `resolution` (everything else kept)."""
    return dict(kwargs, img_resolution=int(resolution))


def _unit(name: str) -> str:
    """The module a tensor is reported under: a block's direct child (`synthesis.b16.conv0`, `b4.fc`), else the
    network's top-level child (`mapping`)."""
    parts = name.split(".")[:-1] or name.split(".")
    for i, part in enumerate(parts):
        if _BLOCK.fullmatch(part):
            return ".".join(parts[:i + 2])
    return parts[0]


def _tensors(module: torch.nn.Module) -> dict[str, tuple[torch.Tensor, bool]]:
    """name -> (tensor, is a parameter), parameters and buffers."""
    out = {name: (t, True) for name, t in module.named_parameters()}
    out.update({name: (t, False) for name, t in module.named_buffers()})
    return out


def _rows(network: str, counts: dict[tuple[str, str], int]) -> list[dict]:
    """Report rows per (unit, action) with parameters; a block whose tensors all share one action is one row."""
    by_block: dict[str, list[tuple[str, str]]] = {}
    for unit, action in counts:
        match = [p for p in unit.split(".") if _BLOCK.fullmatch(p)]
        key = unit[:unit.index(match[0]) + len(match[0])] if match else unit
        by_block.setdefault(key, []).append((unit, action))
    rows = []
    for block, keys in by_block.items():
        if len({action for _, action in keys}) == 1:
            groups = [(block, keys[0][1], keys)]
        else:
            groups = [(unit, action, [(unit, action)]) for unit, action in keys]
        for label, action, members in groups:
            params = sum(counts[m] for m in members)
            if params:
                rows.append(dict(network=network, module=label, action=action, params=params))
    return rows


@torch.no_grad()
def transfer(source: torch.nn.Module, target: torch.nn.Module, network: str, copy: bool = True) -> list[dict]:
    """Copy every same-named tensor of `source` into `target` (when `copy`); return the report rows.

    A tensor that both have with different shapes means the pickle is not a resolution variant of the target.
    """
    src, dst = _tensors(source), _tensors(target)
    counts: dict[tuple[str, str], int] = {}

    def note(name: str, action: str, tensor: torch.Tensor, is_param: bool) -> None:
        key = (_unit(name), action)
        counts[key] = counts.get(key, 0) + (tensor.numel() if is_param else 0)

    for name, (tensor, is_param) in dst.items():
        if name not in src:
            note(name, "fresh", tensor, is_param)
            continue
        have = src[name][0]
        if tuple(have.shape) != tuple(tensor.shape):
            raise AdaptResolutionError(f"--adapt-resolution: {network} tensor {name!r} has shape "
                                       f"{tuple(have.shape)} in the pickle but {tuple(tensor.shape)} at the new "
                                       f"resolution; the pickle's channel counts or architecture do not fit")
        if copy:
            tensor.copy_(have.detach())
        note(name, "copied", tensor, is_param)
    for name, (tensor, is_param) in src.items():
        if name not in dst:
            note(name, "dropped", tensor, is_param)
    return _rows(network, counts)


def plan(source_G: torch.nn.Module, source_D: torch.nn.Module, G_kwargs: dict, D_kwargs: dict) -> list[dict]:
    """The transfer report for networks built from the adapted kwargs (built on the CPU, nothing copied)."""
    return (transfer(source_G, networks.Generator(**G_kwargs), "G", copy=False)
            + transfer(source_D, networks.Discriminator(**D_kwargs), "D", copy=False))


def format_report(rows: Iterable[dict], source_res: int, target_res: int) -> str:
    """The report as a table with per-network totals (G_ema follows G)."""
    rows = list(rows)
    lines = [f"Adapting the resumed networks from {source_res}x{source_res} to {target_res}x{target_res} "
             f"(G_ema as G):", f"  {'net':<4}{'module':<28}{'action':<9}{'params':>12}"]
    lines += [f"  {r['network']:<4}{r['module']:<28}{r['action']:<9}{r['params']:>12,}" for r in rows]
    for net in dict.fromkeys(r["network"] for r in rows):
        totals = {a: sum(r["params"] for r in rows if r["network"] == net and r["action"] == a) for a in ACTIONS}
        lines.append(f"  {net}: " + ", ".join(f"{a} {totals[a]:,}" for a in ACTIONS) + " parameters")
    return "\n".join(lines)


def adapt(resume_data: dict, G_kwargs: dict, D_kwargs: dict, resolution: int, source: str
          ) -> tuple[dict, dict, dict | None]:
    """(G kwargs, D kwargs, transfer report) for resuming `resume_data` at `resolution`; report None when the
    pickle already has that resolution."""
    source_res = int(G_kwargs.get("img_resolution", 0))
    if source_res == resolution:
        return G_kwargs, D_kwargs, None
    for key, cls in (("G", networks.Generator), ("D", networks.Discriminator)):
        if not isinstance(resume_data.get(key), cls):
            raise AdaptResolutionError(f"--adapt-resolution: {key} in --resume {source} is a "
                                       f"{type(resume_data.get(key)).__name__}, not a StyleGAN2 {cls.__name__}")
    check_resolution(source_res, f"--resume {source}")
    check_resolution(resolution, "the dataset")
    G_kwargs, D_kwargs = adapted_kwargs(G_kwargs, resolution), adapted_kwargs(D_kwargs, resolution)
    rows = plan(resume_data["G"], resume_data["D"], G_kwargs, D_kwargs)
    return G_kwargs, D_kwargs, dict(from_resolution=source_res, to_resolution=int(resolution), modules=rows)


def apply(report: dict, data: dict, G: torch.nn.Module, D: torch.nn.Module, G_ema: torch.nn.Module) -> str:
    """Copy the pickle `data` into the adapted G, D, G_ema as planned by `adapt`; returns the printable report."""
    G_rows, D_rows = transfer(data["G"], G, "G"), transfer(data["D"], D, "D")
    source_ema = data.get("G_ema") if data.get("G_ema") is not None else data["G"]
    if transfer(source_ema, G_ema, "G") != G_rows or G_rows + D_rows != report["modules"]:
        raise RuntimeError("--adapt-resolution: the networks differ from the ones planned from the pickle")
    return format_report(G_rows + D_rows, report["from_resolution"], report["to_resolution"])
