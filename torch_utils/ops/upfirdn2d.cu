// CUDA kernels of upfirdn2d: thin __global__ wrappers around the math in upfirdn2d.h, plus the launcher.

#include <cuda_runtime.h>
#include <c10/util/Half.h>
#include <c10/util/BFloat16.h>
#include "upfirdn2d.h"

static const int      kThreads     = 256;      // threads per block, both kernels
static const int      kTileTarget  = 1024;     // outputs per block of the tiled kernel
static const int64_t  kSmemLimit   = 48 * 1024; // shared memory usable without opting in, any GPU
static const unsigned kMaxGridYZ   = 65535;

// Dynamic shared memory, typed per accumulation type by the kernel.
extern __shared__ double ufd_shared[];

template <class T>
__global__ void __launch_bounds__(kThreads) ufd_tiled_kernel(ufd_params p, ufd_tile t, int plane_tiles)
{
    typedef typename ufd_acc<T>::type A;
    A* s_f = reinterpret_cast<A*>(ufd_shared);
    A* s_x = s_f + p.f_w * p.f_h;
    ufd_stage_filter<A>(p, threadIdx.x, blockDim.x, s_f);

    // gridDim.z is capped, so a block may walk several plane tiles.
    for (int bz = blockIdx.z; bz < plane_tiles; bz += gridDim.z)
    {
        ufd_origin o = ufd_tile_origin(p, t, blockIdx.x, blockIdx.y, bz);
        __syncthreads(); // the previous iteration is done reading s_x (and s_f is complete)
        ufd_stage_input<T, A>(p, t, o, threadIdx.x, blockDim.x, s_x);
        __syncthreads();
        ufd_compute_tile<T, A>(p, t, o, threadIdx.x, blockDim.x, s_x, s_f);
    }
}

template <class T>
__global__ void __launch_bounds__(kThreads) ufd_direct_kernel(ufd_params p, int64_t total, bool channels_inner)
{
    int64_t step = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step)
        ufd_direct_element<T>(p, i, channels_inner);
}

template <class T>
int ufd_launch(const ufd_params& p, void* stream)
{
    cudaStream_t s = static_cast<cudaStream_t>(stream);
    int acc_bytes = (int)sizeof(typename ufd_acc<T>::type);
    ufd_tile t = ufd_choose_tile(p, acc_bytes, kSmemLimit, kTileTarget);

    if (t.w > 0)
    {
        int planes_total = p.batch * p.channels;
        int plane_tiles = (planes_total - 1) / t.planes + 1;
        unsigned tiles_y = (unsigned)((p.out_h - 1) / t.h + 1);
        if (tiles_y <= kMaxGridYZ)
        {
            dim3 grid((unsigned)((p.out_w - 1) / t.w + 1), tiles_y,
                      (unsigned)(plane_tiles < (int)kMaxGridYZ ? plane_tiles : (int)kMaxGridYZ));
            size_t smem = (size_t)ufd_tile_smem_bytes(p, t, acc_bytes);
            ufd_tiled_kernel<T><<<grid, kThreads, smem, s>>>(p, t, plane_tiles);
            return (int)cudaGetLastError();
        }
    }

    int64_t total = (int64_t)p.batch * p.channels * p.out_h * p.out_w;
    bool channels_inner = (p.out_sc == 1 && p.channels > 1);
    int64_t blocks = (total - 1) / kThreads + 1;
    if (blocks > 65536 * 8) blocks = 65536 * 8; // grid-stride loop covers the rest
    ufd_direct_kernel<T><<<(unsigned)blocks, kThreads, 0, s>>>(p, total, channels_inner);
    return (int)cudaGetLastError();
}

template int ufd_launch<float>(const ufd_params& p, void* stream);
template int ufd_launch<double>(const ufd_params& p, void* stream);
template int ufd_launch<c10::Half>(const ufd_params& p, void* stream);
template int ufd_launch<c10::BFloat16>(const ufd_params& p, void* stream);
