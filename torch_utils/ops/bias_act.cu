// CUDA kernel of bias_act: a grid-stride __global__ wrapper around ba_element (bias_act.h), one instance per
// activation so that the activation switch is resolved at compile time, plus the launcher.

#include <cuda_runtime.h>
#include <c10/util/Half.h>
#include <c10/util/BFloat16.h>
#include "bias_act.h"

static const int kThreads   = 256;
static const int kMaxBlocks = 65536 * 4; // grid-stride loop covers larger tensors

template <class T, int ACT>
__global__ void __launch_bounds__(kThreads) ba_kernel(ba_params p)
{
    int64_t step = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < p.size_x; i += step)
        ba_element<T, ACT>(p, i);
}

template <class T>
int ba_launch(const ba_params& p, void* stream)
{
    cudaStream_t s = static_cast<cudaStream_t>(stream);
    int64_t blocks = (p.size_x - 1) / kThreads + 1;
    if (blocks > kMaxBlocks) blocks = kMaxBlocks;
    dim3 grid((unsigned)blocks), block(kThreads);
    switch (p.act)
    {
    case BA_LINEAR:   ba_kernel<T, BA_LINEAR>  <<<grid, block, 0, s>>>(p); break;
    case BA_RELU:     ba_kernel<T, BA_RELU>    <<<grid, block, 0, s>>>(p); break;
    case BA_LRELU:    ba_kernel<T, BA_LRELU>   <<<grid, block, 0, s>>>(p); break;
    case BA_TANH:     ba_kernel<T, BA_TANH>    <<<grid, block, 0, s>>>(p); break;
    case BA_SIGMOID:  ba_kernel<T, BA_SIGMOID> <<<grid, block, 0, s>>>(p); break;
    case BA_ELU:      ba_kernel<T, BA_ELU>     <<<grid, block, 0, s>>>(p); break;
    case BA_SELU:     ba_kernel<T, BA_SELU>    <<<grid, block, 0, s>>>(p); break;
    case BA_SOFTPLUS: ba_kernel<T, BA_SOFTPLUS><<<grid, block, 0, s>>>(p); break;
    case BA_SWISH:    ba_kernel<T, BA_SWISH>   <<<grid, block, 0, s>>>(p); break;
    default:          return (int)cudaErrorInvalidValue;
    }
    return (int)cudaGetLastError();
}

template int ba_launch<float>(const ba_params& p, void* stream);
template int ba_launch<double>(const ba_params& p, void* stream);
template int ba_launch<c10::Half>(const ba_params& p, void* stream);
template int ba_launch<c10::BFloat16>(const ba_params& p, void* stream);
