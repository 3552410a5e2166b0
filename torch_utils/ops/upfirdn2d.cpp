// Python binding of the upfirdn2d CUDA kernel: argument checks, output allocation, dtype dispatch.
// Entry point (same as the upstream plugin):
//   upfirdn2d(x, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip, gain) -> y

#include <torch/extension.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>  // only c10 CUDA headers: ATen/cuda would also need the cuBLAS/cuSPARSE headers
#include "upfirdn2d.h"

static torch::Tensor upfirdn2d(torch::Tensor x, torch::Tensor f, int upx, int upy, int downx, int downy,
                               int padx0, int padx1, int pady0, int pady1, bool flip, double gain)
{
    TORCH_CHECK(x.is_cuda(), "upfirdn2d: x must be a CUDA tensor, got device ", x.device());
    TORCH_CHECK(x.dim() == 4, "upfirdn2d: x must have shape [N, C, H, W], got ", x.sizes());
    TORCH_CHECK(x.numel() > 0, "upfirdn2d: x is empty (shape ", x.sizes(), ")");
    TORCH_CHECK(f.device() == x.device(), "upfirdn2d: f must be on the same device as x (", x.device(),
                "), got ", f.device());
    TORCH_CHECK(f.scalar_type() == torch::kFloat, "upfirdn2d: f must be float32, got ", f.scalar_type());
    TORCH_CHECK(f.dim() == 2 && f.size(0) >= 1 && f.size(1) >= 1,
                "upfirdn2d: f must have shape [fh, fw] with fh, fw >= 1, got ", f.sizes());
    TORCH_CHECK(upx >= 1 && upy >= 1, "upfirdn2d: upsampling factors must be >= 1, got ", upx, ", ", upy);
    TORCH_CHECK(downx >= 1 && downy >= 1, "upfirdn2d: downsampling factors must be >= 1, got ", downx, ", ", downy);
    TORCH_CHECK(x.size(2) <= INT_MAX / upy && x.size(3) <= INT_MAX / upx && f.numel() <= INT_MAX,
                "upfirdn2d: x or f is too large");

    int64_t out_w = (x.size(3) * upx + padx0 + padx1 - f.size(1) + downx) / downx;
    int64_t out_h = (x.size(2) * upy + pady0 + pady1 - f.size(0) + downy) / downy;
    TORCH_CHECK(out_w >= 1 && out_h >= 1, "upfirdn2d: output would be empty (", out_h, "x", out_w,
                "); the padding crops away more than the filtered image");

    const c10::cuda::OptionalCUDAGuard device_guard(device_of(x));
    torch::Tensor y = torch::empty({x.size(0), x.size(1), out_h, out_w}, x.options(), x.suggest_memory_format());

    ufd_params p;
    p.x = x.data_ptr();
    p.f = f.data_ptr<float>();
    p.y = y.data_ptr();
    p.up_x = upx;       p.up_y = upy;
    p.down_x = downx;   p.down_y = downy;
    p.pad_x0 = padx0;   p.pad_y0 = pady0;
    p.flip = flip ? 1 : 0;
    p.gain = gain;
    p.in_w = (int)x.size(3);   p.in_h = (int)x.size(2);   p.channels = (int)x.size(1);   p.batch = (int)x.size(0);
    p.in_sx = x.stride(3);     p.in_sy = x.stride(2);     p.in_sc = x.stride(1);         p.in_sn = x.stride(0);
    p.f_w = (int)f.size(1);    p.f_h = (int)f.size(0);
    p.f_sx = f.stride(1);      p.f_sy = f.stride(0);
    p.out_w = (int)out_w;      p.out_h = (int)out_h;
    p.out_sx = y.stride(3);    p.out_sy = y.stride(2);    p.out_sc = y.stride(1);        p.out_sn = y.stride(0);
    TORCH_CHECK((int64_t)p.batch * p.channels <= INT_MAX, "upfirdn2d: too many images (N*C)");

    void* stream = c10::cuda::getCurrentCUDAStream().stream();
    int err = 0;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "upfirdn2d_cuda", [&] {
        err = ufd_launch<scalar_t>(p, stream);
    });
    C10_CUDA_CHECK(static_cast<cudaError_t>(err));
    return y;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m)
{
    m.def("upfirdn2d", &upfirdn2d, "Upsample, pad, FIR-filter and downsample a batch of 2D images (CUDA).");
}
