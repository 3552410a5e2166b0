"""Timing the upfirdn2d and bias_act CUDA kernels against the PyTorch path at StyleGAN-typical shapes.

Shapes follow StyleGAN2 at cbase 32768 / cmax 512: [batch, min(32768 / res, 512), res, res]. Each op is timed
forward only and forward + backward, with impl='cuda' (the kernels) and impl='ref' (PyTorch), by CUDA events
(median over --iters after --warmup). Needs a CUDA GPU on which the plugins build; says so and exits otherwise.
"""

from __future__ import annotations

import statistics
from typing import Callable

import torch

from stylegan_rlo.errors import UserError
from torch_utils.ops import bias_act, upfirdn2d

OpFn = Callable[[torch.Tensor, str], torch.Tensor]


def stylegan_channels(res: int, cbase: int = 32768, cmax: int = 512) -> int:
    """Feature maps of a StyleGAN2 block at resolution `res`."""
    return min(cbase // res, cmax)


def make_ops(device: torch.device, dtype: torch.dtype, channels: int) -> dict[str, OpFn]:
    """The benchmarked calls, each taking (x, impl), as the networks issue them."""
    f = upfirdn2d.setup_filter([1, 3, 3, 1], device=device)
    b = torch.randn([channels], device=device, dtype=dtype)
    return {
        "upsample2d": lambda x, impl: upfirdn2d.upsample2d(x, f, up=2, impl=impl),
        "downsample2d": lambda x, impl: upfirdn2d.downsample2d(x, f, down=2, impl=impl),
        "filter2d": lambda x, impl: upfirdn2d.filter2d(x, f, impl=impl),
        "bias_act lrelu clamp256": lambda x, impl: bias_act.bias_act(x, b, act="lrelu", clamp=256, impl=impl),
    }


def time_ms(fn: Callable[[], None], iters: int, warmup: int) -> float:
    """Median GPU time of fn() in milliseconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def bench_op(op: OpFn, x: torch.Tensor, impl: str, iters: int, warmup: int) -> dict[str, float]:
    """Forward and forward+backward times of one op and implementation."""
    with torch.no_grad():
        forward = time_ms(lambda: op(x, impl), iters, warmup)
    xg = x.detach().requires_grad_(True)
    dy = torch.randn_like(op(xg, impl))

    def forward_backward():
        op(xg, impl).backward(dy)
        xg.grad = None
    return {"fwd_ms": forward, "fwd_bwd_ms": time_ms(forward_backward, iters, warmup)}


def require_kernels() -> None:
    """A UserError unless a GPU is present and both plugins load."""
    if not torch.cuda.is_available():
        raise UserError("bench_ops needs a CUDA GPU (torch.cuda.is_available() is False); "
                                   "the kernels it compares cannot run on this machine.")
    missing = [m.__name__ for m in (upfirdn2d, bias_act) if not m._init()]
    if missing:
        raise UserError(f'the CUDA plugins of {missing} are not available (see the warning above); '
                                   'timing impl="cuda" would time the PyTorch path twice.')


def run(batch: int, dtype_name: str, resolutions: list[int], iters: int, warmup: int) -> list[dict]:
    """Benchmark every op at every resolution; returns one record per (op, resolution)."""
    device, dtype = torch.device("cuda"), getattr(torch, dtype_name)
    torch.backends.cudnn.benchmark = True
    records = []
    for res in resolutions:
        channels = stylegan_channels(res)
        x = torch.randn([batch, channels, res, res], device=device, dtype=dtype)
        for name, op in make_ops(device, dtype, channels).items():
            cuda, ref = bench_op(op, x, "cuda", iters, warmup), bench_op(op, x, "ref", iters, warmup)
            records.append({"op": name, "shape": list(x.shape), "dtype": dtype_name,
                            **{f"cuda_{k}": v for k, v in cuda.items()}, **{f"ref_{k}": v for k, v in ref.items()},
                            "speedup_fwd": ref["fwd_ms"] / cuda["fwd_ms"],
                            "speedup_fwd_bwd": ref["fwd_bwd_ms"] / cuda["fwd_bwd_ms"]})
        del x
        torch.cuda.empty_cache()
    return records


def format_table(records: list[dict]) -> str:
    """The records as a fixed-width text table (milliseconds, medians)."""
    header = (f'{"op":<24} {"shape":<20} {"fwd cuda":>9} {"fwd ref":>9} {"x":>6} '
              f'{"f+b cuda":>9} {"f+b ref":>9} {"x":>6}   (ms, median)')
    lines = [header, "-" * len(header)]
    for r in records:
        shape = "x".join(str(s) for s in r["shape"])
        lines.append(f'{r["op"]:<24} {shape:<20} {r["cuda_fwd_ms"]:9.3f} {r["ref_fwd_ms"]:9.3f} '
                     f'{r["speedup_fwd"]:6.2f} {r["cuda_fwd_bwd_ms"]:9.3f} {r["ref_fwd_bwd_ms"]:9.3f} '
                     f'{r["speedup_fwd_bwd"]:6.2f}')
    return "\n".join(lines)
