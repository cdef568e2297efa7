/* rng.c — Philox4x32-10 (Salmon et al., SC'11).  Counter based: the state is (seed, counter),
 * so saving two integers in a checkpoint reproduces every later draw exactly. */
#include "engine.h"
#include <math.h>

static void philox_block(uint64_t key64, uint64_t ctr64, uint32_t out[4]) {
    uint32_t c0 = (uint32_t)ctr64, c1 = (uint32_t)(ctr64 >> 32), c2 = 0, c3 = 0;
    uint32_t k0 = (uint32_t)key64, k1 = (uint32_t)(key64 >> 32);
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)0xD2511F53u * c0;
        uint64_t p1 = (uint64_t)0xCD9E8D57u * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
        uint32_t n1 = (uint32_t)p1;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        uint32_t n3 = (uint32_t)p0;
        c0 = n0; c1 = n1; c2 = n2; c3 = n3;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

void rng_init(Rng *r, uint64_t seed) {
    r->seed = seed;
    r->counter = 0;
    r->buf_left = 0;
}

Rng rng_fork(const Rng *r, uint64_t stream) {
    Rng f;
    /* mix the stream id into the key through one Philox block so nearby ids are unrelated */
    uint32_t o[4];
    philox_block(r->seed ^ 0x5DEECE66DULL, stream, o);
    rng_init(&f, ((uint64_t)o[0] << 32 | o[1]) ^ r->seed);
    return f;
}

uint32_t rng_u32(Rng *r) {
    if (r->buf_left == 0) {
        philox_block(r->seed, r->counter++, r->buf);
        r->buf_left = 4;
    }
    return r->buf[--r->buf_left];
}

float rng_uniform(Rng *r) {
    return (float)(rng_u32(r) >> 8) * (1.0f / 16777216.0f);
}

float rng_normal(Rng *r) {
    /* Box-Muller; one draw per call keeps the state simple to save */
    float u1 = ((float)(rng_u32(r) >> 8) + 0.5f) * (1.0f / 16777216.0f);
    float u2 = rng_uniform(r);
    return sqrtf(-2.0f * logf(u1)) * cosf(6.2831853071795864f * u2);
}

uint32_t rng_below(Rng *r, uint32_t n) {
    if (n <= 1) return 0;
    /* Lemire's multiply-shift with rejection: unbiased */
    uint64_t m = (uint64_t)rng_u32(r) * n;
    uint32_t lo = (uint32_t)m;
    if (lo < n) {
        uint32_t t = (uint32_t)(-n) % n;
        while (lo < t) {
            m = (uint64_t)rng_u32(r) * n;
            lo = (uint32_t)m;
        }
    }
    return (uint32_t)(m >> 32);
}

void rng_fill_uniform(Rng *r, float *x, size_t n, float lo, float hi) {
    for (size_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * rng_uniform(r);
}

void rng_fill_normal(Rng *r, float *x, size_t n, float mean, float std) {
    for (size_t i = 0; i < n; i++) x[i] = mean + std * rng_normal(r);
}

void rng_fill_trunc_normal(Rng *r, float *x, size_t n, float std) {
    for (size_t i = 0; i < n; i++) {
        float z;
        do z = rng_normal(r); while (z < -2.0f || z > 2.0f);
        x[i] = std * z;
    }
}

void rng_shuffle(Rng *r, uint32_t *idx, size_t n) {
    for (size_t i = n; i > 1; i--) {
        size_t j = rng_below(r, (uint32_t)i);
        uint32_t t = idx[i - 1];
        idx[i - 1] = idx[j];
        idx[j] = t;
    }
}
