// Python binding of the bias_act CUDA kernel: argument checks, output allocation, dtype dispatch.
// Entry point (same as the upstream plugin):
//   bias_act(x, b, xref, yref, dy, grad, dim, act, alpha, gain, clamp) -> y
// Empty tensors stand for "absent" (b, xref, yref, dy); see bias_act.h for the meaning of each mode.

#include <torch/extension.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>  // only c10 CUDA headers: ATen/cuda would also need the cuBLAS/cuSPARSE headers
#include <algorithm>
#include "bias_act.h"

// Same sizes, and the same stride along every dimension where the stride matters (size >= 2).
static bool same_layout(const torch::Tensor& a, const torch::Tensor& b)
{
    if (a.sizes() != b.sizes())
        return false;
    for (int64_t i = 0; i < a.dim(); i++)
        if (a.size(i) >= 2 && a.stride(i) != b.stride(i))
            return false;
    return true;
}

// Address of an optional tensor's data; NULL for the empty tensor that stands for "absent".
static const void* data_or_null(const torch::Tensor& t)
{
    return t.numel() ? t.data_ptr() : nullptr;
}

static void check_companion(const torch::Tensor& t, const torch::Tensor& x, const char* name)
{
    if (t.numel() == 0)
        return;
    TORCH_CHECK(t.dtype() == x.dtype() && t.device() == x.device(), "bias_act: ", name,
                " must have the dtype and device of x (", x.dtype(), ", ", x.device(), "), got ", t.dtype(), ", ",
                t.device());
    TORCH_CHECK(same_layout(t, x), "bias_act: ", name, " must have the shape and memory layout of x (shape ",
                x.sizes(), ", strides ", x.strides(), "), got shape ", t.sizes(), ", strides ", t.strides());
}

static torch::Tensor bias_act(torch::Tensor x, torch::Tensor b, torch::Tensor xref, torch::Tensor yref,
                              torch::Tensor dy, int grad, int dim, int act, double alpha, double gain, double clamp)
{
    TORCH_CHECK(x.is_cuda(), "bias_act: x must be a CUDA tensor, got device ", x.device());
    TORCH_CHECK(x.is_non_overlapping_and_dense(), "bias_act: x must be dense and non-overlapping "
                "(call .contiguous() first), got strides ", x.strides());
    TORCH_CHECK(grad >= 0 && grad <= 2, "bias_act: grad must be 0, 1 or 2, got ", grad);
    TORCH_CHECK(act >= BA_LINEAR && act <= BA_SWISH, "bias_act: act must be a cuda_idx in 1..9, got ", act);
    TORCH_CHECK(b.dim() == 1, "bias_act: b must be 1-D (empty for no bias), got shape ", b.sizes());
    if (b.numel() > 0)
    {
        TORCH_CHECK(b.dtype() == x.dtype() && b.device() == x.device(), "bias_act: b must have the dtype and "
                    "device of x (", x.dtype(), ", ", x.device(), "), got ", b.dtype(), ", ", b.device());
        TORCH_CHECK(b.is_contiguous(), "bias_act: b must be contiguous");
        TORCH_CHECK(dim >= 0 && dim < x.dim(), "bias_act: dim ", dim, " is out of range for x of rank ", x.dim());
        TORCH_CHECK(b.numel() == x.size(dim), "bias_act: b has ", b.numel(), " elements but x has ",
                    x.size(dim), " along dim ", dim);
    }
    check_companion(xref, x, "xref");
    check_companion(yref, x, "yref");
    check_companion(dy, x, "dy");

    const c10::cuda::OptionalCUDAGuard device_guard(device_of(x));
    torch::Tensor y = torch::empty_like(x);
    TORCH_CHECK(same_layout(y, x), "bias_act: could not allocate y with the layout of x");
    if (x.numel() == 0)
        return y;

    ba_params p = {};
    p.x = x.data_ptr();  p.y = y.data_ptr();
    p.b = data_or_null(b);  p.xref = data_or_null(xref);  p.yref = data_or_null(yref);  p.dy = data_or_null(dy);
    p.grad = grad;  p.act = act;  p.alpha = alpha;  p.gain = gain;  p.clamp = clamp;
    p.size_x = x.numel();
    p.size_b = std::max<int64_t>(b.numel(), 1);
    p.step_b = (b.numel() > 1) ? x.stride(dim) : 1; // a size-1 dimension may carry any stride, even 0

    void* stream = c10::cuda::getCurrentCUDAStream().stream();
    int err = 0;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "bias_act_cuda", [&] {
        err = ba_launch<scalar_t>(p, stream);
    });
    C10_CUDA_CHECK(static_cast<cudaError_t>(err));
    return y;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m)
{
    m.def("bias_act", &bias_act, "Fused bias, activation, gain and clamp, and their gradients (CUDA).");
}
