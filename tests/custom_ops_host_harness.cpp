// CPU emulation of the upfirdn2d and bias_act CUDA kernels, for tests/test_custom_ops.py.
//
// It runs the very functions the kernels call (torch_utils/ops/upfirdn2d.h, bias_act.h) over an emulated
// launch grid: every block stages, then computes, one emulated thread after the other, exactly as the
// __global__ wrappers sequence them around __syncthreads(). Index math, tiling and activation math are thereby
// checked on machines without a GPU. Built with plain g++ and called through ctypes (no torch headers).

#include <stdint.h>
#include <limits>
#include <vector>
#include "upfirdn2d.h"
#include "bias_act.h"

// cfg holds the integer fields of ufd_params in declaration order (see unpack_upfirdn2d).
static ufd_params unpack_upfirdn2d(const void* x, const float* f, void* y, const int64_t* c, double gain)
{
    ufd_params p;
    p.x = x; p.f = f; p.y = y; p.gain = gain;
    p.up_x = (int)c[0];  p.up_y = (int)c[1];  p.down_x = (int)c[2];  p.down_y = (int)c[3];
    p.pad_x0 = (int)c[4]; p.pad_y0 = (int)c[5]; p.flip = (int)c[6];
    p.in_w = (int)c[7];  p.in_h = (int)c[8];  p.channels = (int)c[9]; p.batch = (int)c[10];
    p.in_sx = c[11];     p.in_sy = c[12];     p.in_sc = c[13];        p.in_sn = c[14];
    p.f_w = (int)c[15];  p.f_h = (int)c[16];  p.f_sx = c[17];         p.f_sy = c[18];
    p.out_w = (int)c[19]; p.out_h = (int)c[20];
    p.out_sx = c[21];    p.out_sy = c[22];    p.out_sc = c[23];       p.out_sn = c[24];
    return p;
}

// tile_w < 0: the tile the CUDA launcher would choose; tile_w == 0: direct kernel; else the given tile.
// chosen[0..2] receives the tile used (w, h, planes; w == 0 for the direct kernel).
template <class T>
static void emulate_upfirdn2d(const ufd_params& p, int tile_w, int tile_h, int tile_planes, int nthreads, int* chosen)
{
    typedef typename ufd_acc<T>::type A;
    ufd_tile t = {0, 0, 0, 0, 0};
    if (tile_w < 0)
        t = ufd_choose_tile(p, (int)sizeof(A), 48 * 1024, 1024);
    else if (tile_w > 0)
    {
        t.w = tile_w; t.h = tile_h; t.planes = tile_planes;
        t.in_w = ufd_tile_input_extent(t.w, p.up_x, p.down_x, p.f_w);
        t.in_h = ufd_tile_input_extent(t.h, p.up_y, p.down_y, p.f_h);
    }
    chosen[0] = t.w; chosen[1] = t.h; chosen[2] = t.planes;

    if (t.w == 0)
    {
        bool channels_inner = (p.out_sc == 1 && p.channels > 1);
        int64_t total = (int64_t)p.batch * p.channels * p.out_h * p.out_w;
        for (int64_t i = 0; i < total; i++)
            ufd_direct_element<T>(p, i, channels_inner);
        return;
    }

    // Shared memory is emulated with NaN guard zones around it, and is refilled with NaN before each tile:
    // reading anything that was not staged, or outside the allocation, turns the result into NaN.
    const A poison = std::numeric_limits<A>::quiet_NaN();
    const int guard = t.in_w * t.in_h + p.f_w * p.f_h + 64;
    std::vector<A> f_mem(p.f_w * p.f_h + 2 * guard), x_mem(t.planes * t.in_h * t.in_w + 2 * guard);
    A* s_f = f_mem.data() + guard;
    A* s_x = x_mem.data() + guard;
    int plane_tiles = (p.batch * p.channels - 1) / t.planes + 1;
    for (int bz = 0; bz < plane_tiles; bz++)
        for (int by = 0; by * t.h < p.out_h; by++)
            for (int bx = 0; bx * t.w < p.out_w; bx++)
            {
                ufd_origin o = ufd_tile_origin(p, t, bx, by, bz);
                f_mem.assign(f_mem.size(), poison);
                x_mem.assign(x_mem.size(), poison);
                for (int tid = 0; tid < nthreads; tid++)
                    ufd_stage_filter<A>(p, tid, nthreads, s_f);
                for (int tid = 0; tid < nthreads; tid++)
                    ufd_stage_input<T, A>(p, t, o, tid, nthreads, s_x);
                for (int tid = 0; tid < nthreads; tid++)
                    ufd_compute_tile<T, A>(p, t, o, tid, nthreads, s_x, s_f);
            }
}

template <class T>
static void emulate_bias_act(const ba_params& p)
{
    for (int64_t i = 0; i < p.size_x; i++)
    {
        switch (p.act)
        {
        case BA_LINEAR:   ba_element<T, BA_LINEAR>(p, i);   break;
        case BA_RELU:     ba_element<T, BA_RELU>(p, i);     break;
        case BA_LRELU:    ba_element<T, BA_LRELU>(p, i);    break;
        case BA_TANH:     ba_element<T, BA_TANH>(p, i);     break;
        case BA_SIGMOID:  ba_element<T, BA_SIGMOID>(p, i);  break;
        case BA_ELU:      ba_element<T, BA_ELU>(p, i);      break;
        case BA_SELU:     ba_element<T, BA_SELU>(p, i);     break;
        case BA_SOFTPLUS: ba_element<T, BA_SOFTPLUS>(p, i); break;
        case BA_SWISH:    ba_element<T, BA_SWISH>(p, i);    break;
        default:          return;
        }
    }
}

extern "C" {

// is_double: 0 = float32 data, 1 = float64 data (the filter is always float32).
int emu_upfirdn2d(int is_double, const void* x, const float* f, void* y, const int64_t* cfg, double gain,
                  int tile_w, int tile_h, int tile_planes, int nthreads, int* chosen)
{
    ufd_params p = unpack_upfirdn2d(x, f, y, cfg, gain);
    if (is_double)
        emulate_upfirdn2d<double>(p, tile_w, tile_h, tile_planes, nthreads, chosen);
    else
        emulate_upfirdn2d<float>(p, tile_w, tile_h, tile_planes, nthreads, chosen);
    return 0;
}

// Optional tensors are NULL when absent, as in bias_act.cpp.
int emu_bias_act(int is_double, const void* x, const void* b, const void* xref, const void* yref, const void* dy,
                 void* y, int grad, int act, double alpha, double gain, double clamp, int64_t size_x, int64_t size_b,
                 int64_t step_b)
{
    ba_params p;
    p.x = x; p.b = b; p.xref = xref; p.yref = yref; p.dy = dy; p.y = y;
    p.grad = grad; p.act = act; p.alpha = alpha; p.gain = gain; p.clamp = clamp;
    p.size_x = size_x; p.size_b = size_b; p.step_b = step_b;
    if (is_double)
        emulate_bias_act<double>(p);
    else
        emulate_bias_act<float>(p);
    return 0;
}

} // extern "C"
