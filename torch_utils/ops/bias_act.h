// bias_act: fused bias + activation + gain + clamp, and the two gradient passes its autograd functions use.
//
// Like upfirdn2d.h this header holds the element math as plain host/device functions so that the same code
// can be checked on the CPU (tests/custom_ops_host_harness.cpp). Keep it free of CUDA-only and torch-only types.
//
// Modes (argument `grad`), for one element with bias b broadcast along `dim`:
//   0  forward:  y = clamp(act(x + b) * gain)                         (x = input; xref, yref, dy unused)
//   1  1st grad: dx = x * act'(xref + b) * gain                        (x = dL/dy; yref = forward output)
//   2  2nd grad: d_x = x * act''(xref + b) * gain * dy                 (x = d(dL/dx); dy = the first-order dL/dy)
// In modes 1 and 2 the result is zero where the forward output was clamped (|yref| >= clamp, clamp >= 0).
// Activations whose derivative is expressed through the output ("ref = y") read it from yref / gain;
// swish ("ref = x") uses xref + b. Missing optional tensors read as 0 (xref, yref, b) or 1 (dy).

#pragma once
#include <stdint.h>
#include <math.h>

#if defined(__CUDACC__)
#define BA_HD __host__ __device__ __forceinline__
#else
#define BA_HD inline
#endif

// Activation ids, as numbered by the `cuda_idx` column of bias_act.activation_funcs.
enum
{
    BA_LINEAR = 1, BA_RELU = 2, BA_LRELU = 3, BA_TANH = 4, BA_SIGMOID = 5,
    BA_ELU = 6, BA_SELU = 7, BA_SOFTPLUS = 8, BA_SWISH = 9,
};

struct ba_params
{
    const void* x;
    const void* b;      // NULL when absent
    const void* xref;   // NULL when absent
    const void* yref;   // NULL when absent
    const void* dy;     // NULL when absent
    void*       y;
    int         grad, act;
    double      alpha, gain, clamp; // converted to the accumulation precision by the kernel
    int64_t     size_x;     // number of elements, all tensors share the layout of x
    int64_t     size_b;     // elements of b
    int64_t     step_b;     // memory stride of x along the bias dimension
};

template <class T> struct ba_acc         { typedef float  type; };
template <>        struct ba_acc<double> { typedef double type; };

// Precision-matched math helpers (float or double).
BA_HD float  ba_exp(float v)    { return expf(v); }
BA_HD double ba_exp(double v)   { return exp(v); }
BA_HD float  ba_expm1(float v)  { return expm1f(v); }
BA_HD double ba_expm1(double v) { return expm1(v); }
BA_HD float  ba_log1p(float v)  { return log1pf(v); }
BA_HD double ba_log1p(double v) { return log1p(v); }
BA_HD float  ba_tanh(float v)   { return tanhf(v); }
BA_HD double ba_tanh(double v)  { return tanh(v); }

// Logistic sigmoid without overflow for large |v|.
template <class A> BA_HD A ba_sigmoid(A v)
{
    if (v >= 0)
        return (A)1 / ((A)1 + ba_exp(-v));
    A e = ba_exp(v);
    return e / ((A)1 + e);
}

template <class A> struct ba_selu_const
{
    static BA_HD A scale() { return (A)1.0507009873554804934193349852946; }
    static BA_HD A alpha() { return (A)1.6732632423543772848170429916717; }
};

// act(v).
template <class A, int ACT> BA_HD A ba_forward(A v, A alpha)
{
    switch (ACT)
    {
    case BA_RELU:     return (v > 0) ? v : (A)0;
    case BA_LRELU:    return (v > 0) ? v : v * alpha;
    case BA_TANH:     return ba_tanh(v);
    case BA_SIGMOID:  return ba_sigmoid(v);
    case BA_ELU:      return (v >= 0) ? v : ba_expm1(v);
    case BA_SELU:     return (v >= 0) ? ba_selu_const<A>::scale() * v
                                      : ba_selu_const<A>::scale() * ba_selu_const<A>::alpha() * ba_expm1(v);
    case BA_SOFTPLUS: return ((v > 0) ? v : (A)0) + ba_log1p(ba_exp((v > 0) ? -v : v)); // log(1 + e^v), stable
    case BA_SWISH:    return v * ba_sigmoid(v);
    default:          return v; // linear
    }
}

// act'(v) (order 1) or act''(v) (order 2). `y` is act(v) for the activations that use the output.
template <class A, int ACT> BA_HD A ba_derivative(int order, A v, A y, A alpha)
{
    const A one = 1, two = 2;
    switch (ACT)
    {
    case BA_RELU:     return (order == 1 && y > 0) ? one : (A)0;
    case BA_LRELU:    return (order == 1) ? ((y > 0) ? one : alpha) : (A)0;
    case BA_TANH:     return (order == 1) ? one - y * y : -two * y * (one - y * y);
    case BA_SIGMOID:  return (order == 1) ? y * (one - y) : y * (one - y) * (one - two * y);
    case BA_ELU:      return (y >= 0) ? ((order == 1) ? one : (A)0) : y + one;           // e^v = y + 1
    case BA_SELU:
    {
        const A sa = ba_selu_const<A>::scale() * ba_selu_const<A>::alpha();
        return (y >= 0) ? ((order == 1) ? ba_selu_const<A>::scale() : (A)0) : y + sa;   // sa*e^v = y + sa
    }
    case BA_SOFTPLUS:
    {
        A s = -ba_expm1(-y);                     // sigmoid(v) = 1 - e^-y, accurate for small y
        return (order == 1) ? s : s * ba_exp(-y); // 1 - sigmoid(v) = e^-y, accurate for large y
    }
    case BA_SWISH:
    {
        A s = ba_sigmoid(v);
        return (order == 1) ? s * (one + v * (one - s)) : s * (one - s) * (two + v * (one - two * s));
    }
    default:          return (order == 1) ? one : (A)0; // linear
    }
}

// One element of any mode; i indexes memory (all tensors share x's dense layout).
template <class T, int ACT>
BA_HD void ba_element(const ba_params& p, int64_t i)
{
    typedef typename ba_acc<T>::type A;
    A x     = (A)((const T*)p.x)[i];
    A b     = p.b    ? (A)((const T*)p.b)[(i / p.step_b) % p.size_b] : (A)0;
    A xref  = p.xref ? (A)((const T*)p.xref)[i] : (A)0;
    A yref  = p.yref ? (A)((const T*)p.yref)[i] : (A)0;
    A dy    = p.dy   ? (A)((const T*)p.dy)[i]   : (A)1;
    A alpha = (A)p.alpha, gain = (A)p.gain, clamp = (A)p.clamp;
    A out;

    if (p.grad == 0)
    {
        out = ba_forward<A, ACT>(x + b, alpha) * gain;
        if (clamp >= 0)
            out = (out > clamp) ? clamp : (out < -clamp) ? -clamp : out;   // NaN passes through
    }
    else
    {
        A v = xref + b;
        if (ACT == BA_SWISH)
            yref = ba_forward<A, ACT>(v, alpha) * gain;                        // swish keeps no output
        A y = (gain != 0) ? yref / gain : (A)0;
        out = x * ba_derivative<A, ACT>(p.grad, v, y, alpha) * gain * dy;
        if (clamp >= 0 && !(yref > -clamp && yref < clamp))
            out = 0;
    }
    ((T*)p.y)[i] = (T)out;
}

// Launcher implemented in bias_act.cu, called from bias_act.cpp; returns a cudaError_t as int.
template <class T> int ba_launch(const ba_params& p, void* stream);
