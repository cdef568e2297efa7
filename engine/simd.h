/*
 * simd.h — the row kernels the normalisation ops, attention and the SSL losses share: a
 * vectorised exp, maxima, and sums accumulated in double 4 lanes at a time.
 *
 * Why: libm's expf does not vectorise without -ffast-math, and a scalar double add chain runs at
 * one element per add latency (~4 cycles); these run 8 floats per step.  Every reduction keeps
 * its lane partials and combines them in a fixed order, so a result depends only on the data
 * and the row length, never on the thread count.  Without AVX2+FMA the same functions are plain
 * scalar loops (results then differ from the AVX2 build in the last bits, as any reordering does).
 *
 * exp: Cephes expf (range reduction by ln 2 in two parts, degree-6 polynomial), within ~1 ulp of
 * libm over the range used; inputs must be <= 0 (max-subtracted softmax / log-sum-exp
 * arguments, log-probabilities), and anything below -87 (where expf turns denormal) gives 0:
 * next to the row's largest term, exp(0) = 1, it is nothing, and -inf masks give exactly 0.
 */
#ifndef VERSA_SIMD_H
#define VERSA_SIMD_H

#include <math.h>
#include <stddef.h>

#if defined(__AVX2__) && defined(__FMA__)
#define VERSA_SIMD_AVX2 1
#include <immintrin.h>

static inline __m256 simd_exp_nonpos8(__m256 x) {
    /* below -87 (and -inf, how masks arrive) the result is 0: the reduction below needs a normal
     * 2^n, and denormal results would only slow later arithmetic down.  A NaN stays NaN (max_ps
     * returns its second operand when one is NaN), so NaN guards downstream still see it. */
    const __m256 dead = _mm256_cmp_ps(x, _mm256_set1_ps(-87.0f), _CMP_LT_OQ);
    x = _mm256_max_ps(_mm256_set1_ps(-87.0f), x);
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_andnot_ps(dead, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}

/* the scalar tail of a row uses the same polynomial, so a value does not depend on its position */
static inline float simd_exp_nonpos(float x) {
    float t[8] = {x, 0, 0, 0, 0, 0, 0, 0};
    _mm256_storeu_ps(t, simd_exp_nonpos8(_mm256_loadu_ps(t)));
    return t[0];
}

static inline float simd_hsum8(__m256 v) {   /* fixed order: lanes 0..7 */
    float s[8];
    _mm256_storeu_ps(s, v);
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

static inline double simd_hsum4d(__m256d v) {
    double s[4];
    _mm256_storeu_pd(s, v);
    return (s[0] + s[1]) + (s[2] + s[3]);
}

/* 8 floats as two double vectors added into a, b */
static inline void simd_acc8d(__m256 x, __m256d *a, __m256d *b) {
    *a = _mm256_add_pd(*a, _mm256_cvtps_pd(_mm256_castps256_ps128(x)));
    *b = _mm256_add_pd(*b, _mm256_cvtps_pd(_mm256_extractf128_ps(x, 1)));
}
#else
static inline float simd_exp_nonpos(float x) {
    return x < -87.0f ? 0.0f : expf(x);
}
#endif

/* max over x[0..n) (n >= 1) */
static inline float simd_max(const float *x, size_t n) {
    size_t j = 0;
    float mx = -INFINITY;
#ifdef VERSA_SIMD_AVX2
    if (n >= 8) {
        __m256 m = _mm256_loadu_ps(x);
        for (j = 8; j + 8 <= n; j += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(x + j));
        float t[8];
        _mm256_storeu_ps(t, m);
        for (int l = 0; l < 8; l++) mx = t[l] > mx ? t[l] : mx;
    }
#endif
    for (; j < n; j++) mx = x[j] > mx ? x[j] : mx;
    return mx;
}

/* y[j] = exp(scale * x[j] - shift) for arguments <= 0 (y may be x, or NULL to only sum);
 * returns the sum of the y in double */
static inline double simd_exp_sum(float *y, const float *x, size_t n, float scale, float shift) {
    size_t j = 0;
    double sum = 0.0;
#ifdef VERSA_SIMD_AVX2
    __m256d a0 = _mm256_setzero_pd(), a1 = _mm256_setzero_pd();
    const __m256 vs = _mm256_set1_ps(scale), vsh = _mm256_set1_ps(shift);
    for (; j + 8 <= n; j += 8) {
        __m256 e = simd_exp_nonpos8(_mm256_fmsub_ps(_mm256_loadu_ps(x + j), vs, vsh));
        if (y) _mm256_storeu_ps(y + j, e);
        simd_acc8d(e, &a0, &a1);
    }
    sum = simd_hsum4d(_mm256_add_pd(a0, a1));
#endif
    for (; j < n; j++) {
        float e = simd_exp_nonpos(fmaf(scale, x[j], -shift));   /* one rounding, as the vector body */
        if (y) y[j] = e;
        sum += e;
    }
    return sum;
}

/* sum of x in double */
static inline double simd_sum_f64(const float *x, size_t n) {
    size_t j = 0;
    double s = 0.0;
#ifdef VERSA_SIMD_AVX2
    __m256d a0 = _mm256_setzero_pd(), a1 = _mm256_setzero_pd(), a2 = _mm256_setzero_pd(), a3 = _mm256_setzero_pd();
    for (; j + 16 <= n; j += 16) {
        simd_acc8d(_mm256_loadu_ps(x + j), &a0, &a1);
        simd_acc8d(_mm256_loadu_ps(x + j + 8), &a2, &a3);
    }
    for (; j + 8 <= n; j += 8) simd_acc8d(_mm256_loadu_ps(x + j), &a0, &a1);
    s = simd_hsum4d(_mm256_add_pd(_mm256_add_pd(a0, a1), _mm256_add_pd(a2, a3)));
#endif
    for (; j < n; j++) s += x[j];
    return s;
}

/* sum of (x - m)^2 in double */
static inline double simd_sumsq_dev_f64(const float *x, size_t n, double m) {
    size_t j = 0;
    double s = 0.0;
#ifdef VERSA_SIMD_AVX2
    const __m256d vm = _mm256_set1_pd(m);
    __m256d a0 = _mm256_setzero_pd(), a1 = _mm256_setzero_pd();
    for (; j + 8 <= n; j += 8) {
        __m256 v = _mm256_loadu_ps(x + j);
        __m256d d0 = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)), vm);
        __m256d d1 = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)), vm);
        a0 = _mm256_fmadd_pd(d0, d0, a0);
        a1 = _mm256_fmadd_pd(d1, d1, a1);
    }
    s = simd_hsum4d(_mm256_add_pd(a0, a1));
#endif
    for (; j < n; j++) {
        double d = x[j] - m;
        s += d * d;
    }
    return s;
}

/* sum of a * b in double (products formed in double) */
static inline double simd_dot_f64(const float *a, const float *b, size_t n) {
    size_t j = 0;
    double s = 0.0;
#ifdef VERSA_SIMD_AVX2
    __m256d a0 = _mm256_setzero_pd(), a1 = _mm256_setzero_pd();
    for (; j + 8 <= n; j += 8) {
        __m256 va = _mm256_loadu_ps(a + j), vb = _mm256_loadu_ps(b + j);
        a0 = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(va)), _mm256_cvtps_pd(_mm256_castps256_ps128(vb)), a0);
        a1 = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(va, 1)), _mm256_cvtps_pd(_mm256_extractf128_ps(vb, 1)), a1);
    }
    s = simd_hsum4d(_mm256_add_pd(a0, a1));
#endif
    for (; j < n; j++) s += (double)a[j] * b[j];
    return s;
}

/* sum of a * (b - m) in double: the centred products of batch-norm backward, without the
 * cancellation of sum(a b) - m sum(a) */
static inline double simd_dot_dev_f64(const float *a, const float *b, size_t n, double m) {
    size_t j = 0;
    double s = 0.0;
#ifdef VERSA_SIMD_AVX2
    const __m256d vm = _mm256_set1_pd(m);
    __m256d a0 = _mm256_setzero_pd(), a1 = _mm256_setzero_pd();
    for (; j + 8 <= n; j += 8) {
        __m256 va = _mm256_loadu_ps(a + j), vb = _mm256_loadu_ps(b + j);
        __m256d d0 = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(vb)), vm);
        __m256d d1 = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(vb, 1)), vm);
        a0 = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(va)), d0, a0);
        a1 = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(va, 1)), d1, a1);
    }
    s = simd_hsum4d(_mm256_add_pd(a0, a1));
#endif
    for (; j < n; j++) s += (double)a[j] * ((double)b[j] - m);
    return s;
}

/* sum of (w * a) * (b - m) in double, w * a rounded to float first (w may be NULL: all ones):
 * layer-norm backward's sum of dnorm * xhat / rstd */
static inline double simd_dot3_dev_f64(const float *w, const float *a, const float *b, size_t n, double m) {
    if (!w) return simd_dot_dev_f64(a, b, n, m);
    size_t j = 0;
    double s = 0.0;
#ifdef VERSA_SIMD_AVX2
    const __m256d vm = _mm256_set1_pd(m);
    __m256d a0 = _mm256_setzero_pd(), a1 = _mm256_setzero_pd();
    for (; j + 8 <= n; j += 8) {
        __m256 wa = _mm256_mul_ps(_mm256_loadu_ps(w + j), _mm256_loadu_ps(a + j)), vb = _mm256_loadu_ps(b + j);
        __m256d d0 = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(vb)), vm);
        __m256d d1 = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(vb, 1)), vm);
        a0 = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(wa)), d0, a0);
        a1 = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(wa, 1)), d1, a1);
    }
    s = simd_hsum4d(_mm256_add_pd(a0, a1));
#endif
    for (; j < n; j++) s += (double)(w[j] * a[j]) * ((double)b[j] - m);
    return s;
}

/* y[j] = exp(x[j]) for x <= 0 (log-probabilities back to probabilities); y may be x */
static inline void simd_exp_row(float *y, const float *x, size_t n) {
    size_t j = 0;
#ifdef VERSA_SIMD_AVX2
    for (; j + 8 <= n; j += 8) _mm256_storeu_ps(y + j, simd_exp_nonpos8(_mm256_loadu_ps(x + j)));
#endif
    for (; j < n; j++) y[j] = simd_exp_nonpos(x[j]);
}

#endif
