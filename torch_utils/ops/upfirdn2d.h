// upfirdn2d: upsample by zero insertion, pad/crop, FIR filter, downsample, scale by gain.
//
// This header holds the per-element and per-tile math of the kernels as plain host/device functions, so
// that the exact code the GPU runs can also be driven on the CPU (tests/custom_ops_host_harness.cpp emulates
// the CUDA grid with it). It must therefore stay free of CUDA-only and torch-only types.
//
// Index convention. Let xp be x after zero-insertion upsampling and padding. For output pixel (ox, oy) the
// filter window covers xp columns ox*down_x .. ox*down_x + f_w - 1; window offset k (0 = leftmost) uses the tap
// f[f_h-1-ky][f_w-1-kx] (true convolution) when flip == 0, f[ky][kx] (correlation) when flip == 1.
// Column u of the upsampled-but-unpadded image is u = ox*down_x + kx - pad_x0; it holds x[.., u / up_x] when
// u is a multiple of up_x inside the image, zero otherwise.

#pragma once
#include <stdint.h>

#if defined(__CUDACC__)
#define UFD_HD __host__ __device__ __forceinline__
#else
#define UFD_HD inline
#endif

//------------------------------------------------------------------------------------------------------------
// Parameters of one call. Sizes and strides are in elements; layout is NCHW by index, any strides in memory.

struct ufd_params
{
    const void*  x;
    const float* f;
    void*        y;
    int          up_x, up_y, down_x, down_y;
    int          pad_x0, pad_y0;
    int          flip;
    double       gain;      // applied to the sum, in the accumulation precision
    int          in_w, in_h, channels, batch;
    int64_t      in_sx, in_sy, in_sc, in_sn;
    int          f_w, f_h;
    int64_t      f_sx, f_sy;
    int          out_w, out_h;
    int64_t      out_sx, out_sy, out_sc, out_sn;
};

// Output tile processed by one thread block of the tiled kernel (w == 0 selects the direct kernel).
struct ufd_tile
{
    int w, h, planes;       // output pixels per tile in x and y, and (n, c) planes per tile
    int in_w, in_h;         // input pixels staged in shared memory per plane (upper bound over all tiles)
};

// Block-dependent origin of a tile.
struct ufd_origin
{
    int ox, oy, plane;      // first output pixel and first plane of the tile
    int ix, iy;             // input pixel stored at shared-memory position (0, 0)
};

// Accumulation type: float for float/half/bfloat16, double for double.
template <class T> struct ufd_acc             { typedef float  type; };
template <>        struct ufd_acc<double>     { typedef double type; };

//------------------------------------------------------------------------------------------------------------
// Integer helpers (divisor b > 0).

UFD_HD int ufd_floor_div(int a, int b) { return (a >= 0) ? a / b : -((b - 1 - a) / b); }
UFD_HD int ufd_ceil_div(int a, int b)  { return -ufd_floor_div(-a, b); }
UFD_HD int ufd_pos_mod(int a, int b)   { int r = a % b; return (r < 0) ? r + b : r; }

// Filter tap for window offset (kx, ky).
UFD_HD float ufd_tap(const ufd_params& p, int kx, int ky)
{
    int fx = p.flip ? kx : p.f_w - 1 - kx;
    int fy = p.flip ? ky : p.f_h - 1 - ky;
    return p.f[fx * p.f_sx + fy * p.f_sy];
}

// Decompose a linear output index into (n, c, oy, ox). With channels_inner the channel varies fastest,
// which matches channels_last memory so that neighbouring threads touch neighbouring addresses.
UFD_HD void ufd_unravel(const ufd_params& p, int64_t idx, bool channels_inner, int& n, int& c, int& oy, int& ox)
{
    if (channels_inner)
    {
        c = (int)(idx % p.channels); idx /= p.channels;
        ox = (int)(idx % p.out_w);   idx /= p.out_w;
        oy = (int)(idx % p.out_h);   n = (int)(idx / p.out_h);
    }
    else
    {
        ox = (int)(idx % p.out_w);   idx /= p.out_w;
        oy = (int)(idx % p.out_h);   idx /= p.out_h;
        c = (int)(idx % p.channels); n = (int)(idx / p.channels);
    }
}

//------------------------------------------------------------------------------------------------------------
// Direct kernel body: one output element read straight from global memory. Works for any size and layout.

template <class T>
UFD_HD void ufd_direct_element(const ufd_params& p, int64_t idx, bool channels_inner)
{
    typedef typename ufd_acc<T>::type A;
    int n, c, oy, ox;
    ufd_unravel(p, idx, channels_inner, n, c, oy, ox);
    const T* x = (const T*)p.x + n * p.in_sn + c * p.in_sc;

    // First window row that lands on a real (non-inserted) input row, then step one input row at a time.
    int uy = oy * p.down_y - p.pad_y0;
    int ky = ufd_pos_mod(-uy, p.up_y);
    int iy = (uy + ky) / p.up_y;                    // exact: uy + ky is a multiple of up_y
    if (iy < 0) { ky -= iy * p.up_y; iy = 0; }

    int ux = ox * p.down_x - p.pad_x0;
    int kx0 = ufd_pos_mod(-ux, p.up_x);
    int ix0 = (ux + kx0) / p.up_x;
    if (ix0 < 0) { kx0 -= ix0 * p.up_x; ix0 = 0; }

    A acc = 0;
    for (; ky < p.f_h && iy < p.in_h; ky += p.up_y, iy++)
        for (int kx = kx0, ix = ix0; kx < p.f_w && ix < p.in_w; kx += p.up_x, ix++)
            acc += (A)x[iy * p.in_sy + ix * p.in_sx] * (A)ufd_tap(p, kx, ky);

    ((T*)p.y)[n * p.out_sn + c * p.out_sc + oy * p.out_sy + ox * p.out_sx] = (T)(acc * (A)p.gain);
}

//------------------------------------------------------------------------------------------------------------
// Tiled kernel: a block stages the filter and the input footprint of its output tile in shared memory
// (zero outside the image, so the inner loops need no bounds checks), then computes the tile from there.
// Each phase is written for `nthreads` cooperating threads identified by `tid`.

// Input extent needed by `out` consecutive outputs of a 1-D pass (upper bound for every tile position).
UFD_HD int ufd_tile_input_extent(int out, int up, int down, int taps)
{
    return ((out - 1) * down + taps + up - 1) / up;
}

UFD_HD ufd_origin ufd_tile_origin(const ufd_params& p, const ufd_tile& t, int bx, int by, int bz)
{
    ufd_origin o;
    o.ox = bx * t.w;
    o.oy = by * t.h;
    o.plane = bz * t.planes;
    o.ix = ufd_ceil_div(o.ox * p.down_x - p.pad_x0, p.up_x);
    o.iy = ufd_ceil_div(o.oy * p.down_y - p.pad_y0, p.up_y);
    return o;
}

template <class A>
UFD_HD void ufd_stage_filter(const ufd_params& p, int tid, int nthreads, A* s_f)
{
    for (int i = tid; i < p.f_w * p.f_h; i += nthreads)
        s_f[i] = (A)ufd_tap(p, i % p.f_w, i / p.f_w);
}

template <class T, class A>
UFD_HD void ufd_stage_input(const ufd_params& p, const ufd_tile& t, const ufd_origin& o, int tid, int nthreads, A* s_x)
{
    int planes_total = p.batch * p.channels;
    int count = t.planes * t.in_h * t.in_w;
    for (int i = tid; i < count; i += nthreads)
    {
        int lx = i % t.in_w;
        int ly = (i / t.in_w) % t.in_h;
        int plane = o.plane + i / (t.in_w * t.in_h);
        int ix = o.ix + lx, iy = o.iy + ly;
        A v = 0;
        if (plane < planes_total && ix >= 0 && ix < p.in_w && iy >= 0 && iy < p.in_h)
        {
            const T* x = (const T*)p.x + (plane / p.channels) * p.in_sn + (plane % p.channels) * p.in_sc;
            v = (A)x[iy * p.in_sy + ix * p.in_sx];
        }
        s_x[i] = v;
    }
}

template <class T, class A>
UFD_HD void ufd_compute_tile(const ufd_params& p, const ufd_tile& t, const ufd_origin& o, int tid, int nthreads,
                             const A* s_x, const A* s_f)
{
    int planes_total = p.batch * p.channels;
    int count = t.planes * t.h * t.w;
    for (int i = tid; i < count; i += nthreads)
    {
        int lx = i % t.w;
        int ly = (i / t.w) % t.h;
        int lp = i / (t.w * t.h);
        int ox = o.ox + lx, oy = o.oy + ly, plane = o.plane + lp;
        if (ox >= p.out_w || oy >= p.out_h || plane >= planes_total)
            continue;

        int uy = oy * p.down_y - p.pad_y0;
        int ky0 = ufd_pos_mod(-uy, p.up_y);
        int row0 = (uy + ky0) / p.up_y - o.iy;
        int ux = ox * p.down_x - p.pad_x0;
        int kx0 = ufd_pos_mod(-ux, p.up_x);
        int col0 = (ux + kx0) / p.up_x - o.ix;

        const A* src = s_x + lp * t.in_h * t.in_w;
        A acc = 0;
        for (int ky = ky0, row = row0; ky < p.f_h; ky += p.up_y, row++)
            for (int kx = kx0, col = col0; kx < p.f_w; kx += p.up_x, col++)
                acc += src[row * t.in_w + col] * s_f[ky * p.f_w + kx];

        T* y = (T*)p.y + (plane / p.channels) * p.out_sn + (plane % p.channels) * p.out_sc;
        y[oy * p.out_sy + ox * p.out_sx] = (T)(acc * (A)p.gain);
    }
}

// Shared memory the tiled kernel needs for tile t, in bytes.
UFD_HD int64_t ufd_tile_smem_bytes(const ufd_params& p, const ufd_tile& t, int acc_bytes)
{
    return (int64_t)acc_bytes * ((int64_t)t.planes * t.in_h * t.in_w + (int64_t)p.f_w * p.f_h);
}

// Choose the tile for a call: about `target` outputs per block, power-of-two sides clipped to the image,
// shrunk until the staged data fits `smem_limit`. Returns w == 0 (direct kernel) when the output is stored
// channels-innermost (the tiled kernel reads planes, which would be uncoalesced) or nothing fits.
inline ufd_tile ufd_choose_tile(const ufd_params& p, int acc_bytes, int64_t smem_limit, int target)
{
    ufd_tile t = {0, 0, 0, 0, 0};
    if (p.out_sc == 1 && p.channels > 1)
        return t;

    int w = 1, h = 1;
    while (w < p.out_w && w < 64) w *= 2;
    while (h < p.out_h && w * h < target) h *= 2;
    int planes = target / (w * h);
    int planes_total = p.batch * p.channels;
    if (planes < 1) planes = 1;
    if (planes > planes_total) planes = planes_total;

    for (;;)
    {
        t.w = w; t.h = h; t.planes = planes;
        t.in_w = ufd_tile_input_extent(w, p.up_x, p.down_x, p.f_w);
        t.in_h = ufd_tile_input_extent(h, p.up_y, p.down_y, p.f_h);
        if (ufd_tile_smem_bytes(p, t, acc_bytes) <= smem_limit)
            return t;
        if (planes > 1)      planes = (planes + 1) / 2;
        else if (h > 4)      h /= 2;
        else if (w > 8)      w /= 2;
        else                 break;
    }
    ufd_tile none = {0, 0, 0, 0, 0};
    return none;
}

//------------------------------------------------------------------------------------------------------------
// Launcher implemented in upfirdn2d.cu, called from upfirdn2d.cpp; returns a cudaError_t as int.

template <class T> int ufd_launch(const ufd_params& p, void* stream);

//------------------------------------------------------------------------------------------------------------
