/*
 * data/synth_anatomy.c — the normal breast of one view: outline, pectoral muscle, skin distance
 * and compressed thickness (doc B1), the fibroglandular map from a power-law field thresholded
 * to the target dense-area fraction with fat compartments (doc B2/B3), and the base
 * Beer-Lambert log attenuation.  Canonical orientation: chest wall at x = 0, nipple to +x.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "data/synth_internal.h"

#define PI_F 3.14159265358979f

/* ------------------------------------------------------------------------------------------ */
/* FFT and power-law fields */

void synth_fft_twiddles(float *tw, int n) {
    for (int k = 0; k < n / 2; k++) {
        double a = -2.0 * 3.14159265358979323846 * k / n;
        tw[2 * k] = (float)cos(a);
        tw[2 * k + 1] = (float)sin(a);
    }
}

void synth_fft(float *z, int n, const float *tw) {
    /* bit-reversal permutation */
    for (int i = 1, j = 0; i < n; i++) {
        int bit = n >> 1;
        for (; j & bit; bit >>= 1) j ^= bit;
        j ^= bit;
        if (i < j) {
            float tr = z[2 * i], ti = z[2 * i + 1];
            z[2 * i] = z[2 * j];
            z[2 * i + 1] = z[2 * j + 1];
            z[2 * j] = tr;
            z[2 * j + 1] = ti;
        }
    }
    /* butterflies; stage `len` uses every (n/len)-th twiddle */
    for (int len = 2; len <= n; len <<= 1) {
        int half = len >> 1, step = n / len;
        for (int i = 0; i < n; i += len) {
            for (int k = 0; k < half; k++) {
                float wr = tw[2 * k * step], wi = tw[2 * k * step + 1];
                float *a = z + 2 * (i + k), *b = z + 2 * (i + k + half);
                float br = b[0] * wr - b[1] * wi, bi = b[0] * wi + b[1] * wr;
                b[0] = a[0] - br;
                b[1] = a[1] - bi;
                a[0] += br;
                a[1] += bi;
            }
        }
    }
}

/* 2-D FFT of an n x n complex grid (re/im interleaved): rows, then columns through a copy. */
static void fft2d(float *z, int n, const float *tw, float *col) {
    for (int y = 0; y < n; y++) synth_fft(z + (size_t)2 * y * n, n, tw);
    for (int x = 0; x < n; x++) {
        for (int y = 0; y < n; y++) {
            col[2 * y] = z[((size_t)y * n + x) * 2];
            col[2 * y + 1] = z[((size_t)y * n + x) * 2 + 1];
        }
        synth_fft(col, n, tw);
        for (int y = 0; y < n; y++) {
            z[((size_t)y * n + x) * 2] = col[2 * y];
            z[((size_t)y * n + x) * 2 + 1] = col[2 * y + 1];
        }
    }
}

static void standardize(float *x, size_t n) {
    double s = 0, ss = 0;
    for (size_t i = 0; i < n; i++) s += x[i];
    double m = s / (double)n;
    for (size_t i = 0; i < n; i++) ss += (x[i] - m) * (x[i] - m);
    float inv = (float)(1.0 / sqrt(ss / (double)n + 1e-30));
    for (size_t i = 0; i < n; i++) x[i] = (float)(x[i] - m) * inv;
}

/* A complex spectrum W(f) * |f|^(-beta/2) with W complex white Gaussian has a real part and an
 * imaginary part that are two independent real fields with power spectrum ~ 1/f^beta, so one
 * inverse transform gives both.  The coefficients are drawn in a fixed (ky, kx) order, each from
 * the shared or the own stream, so the result is a pure function of the two seeds. */
int synth_powerlaw(float *out1, float *out2, int n, float mmpx, float beta, float f_min, float f_shared,
                   Rng *shared, Rng *own) {
    float *z = malloc(sizeof(float) * 2 * (size_t)n * n);
    float *tw = malloc(sizeof(float) * (size_t)n);
    float *col = malloc(sizeof(float) * 2 * (size_t)n);
    if (!z || !tw || !col) {
        free(z);
        free(tw);
        free(col);
        return 1;
    }
    float df = 1.0f / ((float)n * mmpx);   /* cycles/mm per frequency index */
    for (int ky = 0; ky < n; ky++) {
        int sy = ky <= n / 2 ? ky : ky - n;
        for (int kx = 0; kx < n; kx++) {
            int sx = kx <= n / 2 ? kx : kx - n;
            float f = df * sqrtf((float)(sx * sx + sy * sy));
            Rng *r = f < f_shared ? shared : own;
            float gr, gi;
            synth_normal2(r, &gr, &gi);
            float amp = (sx == 0 && sy == 0) ? 0.0f : powf(f < f_min ? f_min : f, -0.5f * beta);
            z[((size_t)ky * n + kx) * 2] = gr * amp;
            z[((size_t)ky * n + kx) * 2 + 1] = gi * amp;
        }
    }
    synth_fft_twiddles(tw, n);
    fft2d(z, n, tw, col);
    for (size_t i = 0; i < (size_t)n * n; i++) {
        out1[i] = z[2 * i];
        out2[i] = z[2 * i + 1];
    }
    standardize(out1, (size_t)n * n);
    standardize(out2, (size_t)n * n);
    free(z);
    free(tw);
    free(col);
    return 0;
}

/* bilinear lookup in a periodic n x n field */
static inline float field_at(const float *f, int n, float u, float v) {
    float fu = floorf(u), fv = floorf(v);
    int x0 = (int)fu, y0 = (int)fv;
    float ax = u - fu, ay = v - fv;
    int m = n - 1;   /* n is a power of two: & m wraps negatives too */
    int x1 = (x0 + 1) & m, y1 = (y0 + 1) & m;
    x0 &= m;
    y0 &= m;
    float a = f[(size_t)y0 * n + x0], b = f[(size_t)y0 * n + x1];
    float c = f[(size_t)y1 * n + x0], d = f[(size_t)y1 * n + x1];
    return (a + (b - a) * ax) * (1 - ay) + (c + (d - c) * ax) * ay;
}

static float smoothstep(float e0, float e1, float x) {
    float t = synth_clampf((x - e0) / (e1 - e0), 0.0f, 1.0f);
    return t * t * (3.0f - 2.0f * t);
}

/* ------------------------------------------------------------------------------------------ */
/* outline, pectoral, distance, thickness */

/* Two-pass chamfer distance (1, sqrt 2) to the nearest air pixel, in px.  The image border is
 * not air: tissue continues beyond the chest-wall edge and (MLO) the top edge. */
static void distance_to_air(const uint8_t *mask, float *d, int W, int H) {
    const float big = 1e9f, dg = 1.41421356f;
    for (size_t i = 0; i < (size_t)W * H; i++) d[i] = mask[i] ? big : 0.0f;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            float *p = d + (size_t)y * W + x;
            if (*p == 0.0f) continue;
            float v = *p;
            if (x > 0) v = fminf(v, p[-1] + 1.0f);
            if (y > 0) {
                v = fminf(v, p[-W] + 1.0f);
                if (x > 0) v = fminf(v, p[-W - 1] + dg);
                if (x < W - 1) v = fminf(v, p[-W + 1] + dg);
            }
            *p = v;
        }
    for (int y = H - 1; y >= 0; y--)
        for (int x = W - 1; x >= 0; x--) {
            float *p = d + (size_t)y * W + x;
            if (*p == 0.0f) continue;
            float v = *p;
            if (x < W - 1) v = fminf(v, p[1] + 1.0f);
            if (y < H - 1) {
                v = fminf(v, p[W] + 1.0f);
                if (x < W - 1) v = fminf(v, p[W + 1] + dg);
                if (x > 0) v = fminf(v, p[W - 1] + dg);
            }
            *p = v;
        }
}

void synth_anatomy(Canvas *c, const SynthExam *ex, int side, int view, Rng *r) {
    const SynthBreast *b = &ex->breast[side];
    int W = c->W, H = c->H;
    float mm = c->mmpx, Wmm = W * mm, Hmm = H * mm;
    c->T = b->thickness_mm;
    c->g_max = b->g_max;

    /* nipple line: MLO within +1 cm of CC (quality criterion, doc B1); keep the breast inside */
    float a = b->pnl_mm * (view == SYNTH_MLO ? synth_uniform(r, 1.0f, 1.08f) : 1.0f);
    a = fminf(a, 0.86f * Wmm);
    float hw0 = b->half_width_mm[0], hw1 = b->half_width_mm[1];
    if (view == SYNTH_CC) {
        c->nip_y = H * synth_uniform(r, 0.46f, 0.54f);
        c->b_px[0] = hw0 / mm;
        c->b_px[1] = hw1 / mm;
        c->n_exp[0] = b->shape_n * synth_uniform(r, 0.92f, 1.08f);
        c->n_exp[1] = b->shape_n * synth_uniform(r, 0.92f, 1.08f);
    } else {
        /* MLO: nipple at 55-65 % of the height, the upper contour runs into the axilla and off
         * the top edge, the lower one ends at the inframammary fold */
        /* the vertical extent (axilla to fold) follows the breast's size; a large breast
         * runs off the bottom of the detector */
        float V = (hw0 + hw1) * synth_uniform(r, 1.05f, 1.25f);
        c->nip_y = fminf(V * synth_uniform(r, 0.55f, 0.62f), 0.66f * Hmm) / mm;
        c->b_px[0] = c->nip_y / synth_uniform(r, 0.70f, 0.84f);
        float lo = fminf(V - c->nip_y * mm, Hmm - c->nip_y * mm - 4.0f);
        c->b_px[1] = fmaxf(lo, 30.0f) / mm;
        c->n_exp[0] = synth_uniform(r, 1.35f, 1.75f);
        c->n_exp[1] = b->shape_n * synth_uniform(r, 0.92f, 1.08f);
    }
    c->a_px = a / mm;

    /* smooth radial perturbation of the outline, c_k ~ N(0, (0.03/k)^2), k = 2..6 */
    float ck[7] = {0}, phk[7] = {0};
    for (int k = 2; k <= 6; k++) {
        ck[k] = 0.03f / (float)k * rng_normal(r);
        phk[k] = synth_uniform(r, 0.0f, 2.0f * PI_F);
    }
    float nip_len = synth_uniform(r, 2.5f, 5.0f) / mm, nip_rad = synth_uniform(r, 3.5f, 5.0f) / mm;
    for (int y = 0; y < H; y++) {
        float dy = (float)y + 0.5f - c->nip_y;
        int up = dy < 0;
        float t = fabsf(dy) / c->b_px[up ? 0 : 1];
        float e = 0.0f;
        if (t < 1.0f) {
            float n = c->n_exp[up ? 0 : 1];
            e = c->a_px * powf(1.0f - powf(t, n), 1.0f / n);
            float s = dy / (dy < 0 ? c->b_px[0] : c->b_px[1]);   /* -1..1 along the contour */
            float pert = 1.0f;
            for (int k = 2; k <= 6; k++) pert += ck[k] * cosf((float)k * PI_F * 0.5f * (s + 1.0f) + phk[k]);
            e *= pert;
        }
        if (fabsf(dy) < nip_rad) e += nip_len * sqrtf(1.0f - (dy / nip_rad) * (dy / nip_rad));
        c->edge[y] = fminf(e, (float)W - 2.0f);
    }
    c->nip_x = c->edge[(int)c->nip_y];

    /* pectoral muscle: MLO always (edge 15-30 deg from vertical, inferior end near the nipple
     * level); CC in ~30 % of views as a thin crescent at the chest wall */
    c->pect_w = 0.0f;
    if (view == SYNTH_MLO) {
        c->pect_h = fminf(c->nip_y * synth_uniform(r, 0.75f, 1.1f), 0.95f * H);
        c->pect_w = fminf(c->pect_h * synth_uniform(r, 0.28f, 0.55f), 0.8f * c->edge[0]);
        c->pect_gamma = synth_uniform(r, 0.8f, 1.05f);
    }
    float cc_pw = 0.0f, cc_ph = 1.0f;
    if (view == SYNTH_CC && (ex->cc_pectoral >> side & 1)) {
        cc_pw = synth_uniform(r, 3.0f, 10.0f) / mm;
        cc_ph = synth_uniform(r, 0.15f, 0.3f) * (c->b_px[0] + c->b_px[1]) * 0.5f;
    }
    c->cc_pw = cc_pw;
    c->cc_ph = cc_ph;

    for (int y = 0; y < H; y++) {
        float pe = pect_edge(c, (float)y + 0.5f);
        for (int x = 0; x < W; x++) {
            uint8_t m = (float)x + 0.5f < c->edge[y];
            if (m && (float)x + 0.5f < pe) m = 2;
            if (m && cc_pw > 0) {
                float dy = ((float)y + 0.5f - c->nip_y) / cc_ph;
                if (fabsf(dy) < 1.0f && (float)x + 0.5f < cc_pw * (1.0f - dy * dy)) m = 2;
            }
            c->mask[(size_t)y * W + x] = m;
        }
    }
    distance_to_air(c->mask, c->dskin, W, H);

    /* thickness: half-cylinder fall-off within T/2 of the skin line (doc B1) */
    float Re = 0.5f * c->T;
    for (size_t i = 0; i < (size_t)W * H; i++) {
        if (!c->mask[i]) {
            c->dskin[i] = 0.0f;
            c->t[i] = 0.0f;
            continue;
        }
        float d = c->dskin[i] * mm;
        c->dskin[i] = d;
        float u = d < Re ? 1.0f - d / Re : 0.0f;
        c->t[i] = c->T * sqrtf(fmaxf(1.0f - u * u, 0.0f));
    }
}

/* ------------------------------------------------------------------------------------------ */
/* parenchyma */

static int next_pow2(int v) {
    int n = 1;
    while (n < v) n <<= 1;
    return n;
}

/* value of f at quantile q over the selected pixels, from a 4096-bin histogram */
static float masked_quantile(const float *f, const uint8_t *sel, size_t n, float q) {
    float lo = 1e30f, hi = -1e30f;
    size_t cnt = 0;
    for (size_t i = 0; i < n; i++)
        if (sel[i]) {
            lo = fminf(lo, f[i]);
            hi = fmaxf(hi, f[i]);
            cnt++;
        }
    if (!cnt || hi <= lo) return lo;
    enum { NB = 4096 };
    size_t *h = calloc(NB, sizeof(size_t));
    if (!h) return 0.5f * (lo + hi);
    float sc = (float)(NB - 1) / (hi - lo);
    for (size_t i = 0; i < n; i++)
        if (sel[i]) h[(int)((f[i] - lo) * sc)]++;
    size_t target = (size_t)(q * (double)cnt), acc = 0;
    int b = 0;
    for (; b < NB; b++) {
        if (acc + h[b] > target) break;
        acc += h[b];
    }
    float frac = b < NB && h[b] ? (float)(target - acc) / (float)h[b] : 0.0f;
    free(h);
    return lo + ((float)b + frac) / sc;
}

/* glandular share (of g_max) at field excess z over the threshold: a soft step that keeps
 * rising above it, so dense regions have no flat plateaus */
static inline float gland_shape(float z, float soft) {
    return (0.78f + 0.22f * tanhf(0.8f * z)) / (1.0f + expf(-z / soft));
}

int synth_parenchyma(Canvas *c, const SynthBreast *b, int view, Rng *shared, Rng *r, float contrast) {
    int W = c->W, H = c->H;
    size_t N = (size_t)W * H;
    float mm = c->mmpx;
    /* The field lives on a grid of 2 px cells (0.9 mm at the default size): the texture below
     * that scale is far under the quantum noise, and the grid costs 4x less. */
    const float gs = 0.5f;   /* grid cells per pixel */
    int n = next_pow2((int)ceilf((float)(W > H ? W : H) * gs));
    if (n < 128) n = 128;
    float *f1 = malloc(sizeof(float) * (size_t)n * n), *f2 = malloc(sizeof(float) * (size_t)n * n);
    uint8_t *sel = malloc(N);
    float *scr = malloc(sizeof(float) * N);
    if (!f1 || !f2 || !sel || !scr) {
        free(f1);
        free(f2);
        free(sel);
        free(scr);
        return 1;
    }
    float beta = b->beta + (view == SYNTH_MLO ? 0.1f : 0.0f);
    /* structures up to ~60 mm; below 1/25 mm^-1 shared by the CC and MLO of this breast */
    if (synth_powerlaw(f1, f2, n, mm / gs, beta, 1.0f / 60.0f, 1.0f / 25.0f, shared, r)) {
        free(f1);
        free(f2);
        free(sel);
        free(scr);
        return 1;
    }

    /* Ducts and the fibrous stroma converge on the nipple: the gland field is read in polar
     * coordinates about the nipple (radial scale 0.55: structures ~1.8x longer along the
     * radius), mixed with an isotropic read of the same field at an offset. */
    float *fld = c->tmp, *lig = c->tmp2;
    float ou = synth_uniform(r, 0, (float)n), ov = synth_uniform(r, 0, (float)n);
    float ox = synth_uniform(r, 0, (float)n), oy = synth_uniform(r, 0, (float)n);
    float a = c->a_px;
    float sub_mm = a * mm * synth_uniform(r, 0.07f, 0.15f) * (1.0f - 0.15f * (float)b->density);
    float retro_mm = synth_uniform(r, 5.0f, 15.0f);
    float kappa = synth_uniform(r, 1.6f, 2.4f);
    for (int y = 0; y < H; y++) {
        float pe = pect_edge(c, (float)y + 0.5f);
        for (int x = 0; x < W; x++) {
            size_t i = (size_t)y * W + x;
            fld[i] = 0.0f;
            lig[i] = 0.0f;
            if (!c->mask[i]) continue;
            float dx = c->nip_x - (float)x, dy = (float)y - c->nip_y;
            float rr = sqrtf(dx * dx + dy * dy), th = atan2f(dy, fmaxf(dx, 1e-3f));
            float pol = field_at(f1, n, ou + 0.75f * rr * gs, ov + th * a * gs);
            float iso = field_at(f1, n, ox + (float)x * gs, oy + (float)y * gs);
            /* envelope: subcutaneous fat band and retromammary fat (doc B2) */
            float d = c->dskin[i];
            float E = smoothstep(1.5f, sub_mm, d) * smoothstep(0.3f * retro_mm, retro_mm, ((float)x - pe) * mm);
            fld[i] = 0.6f * pol + 0.75f * iso + kappa * (E - 1.0f);
            /* fat compartments: zero crossings of the second field, read polar too */
            lig[i] = field_at(f2, n, ov + 0.8f * rr * gs, ou + th * a * 1.2f * gs);
        }
    }
    /* band-pass the compartment field (cells of 10-30 mm, doc B3); c->L is free until the
     * base attenuation, the other scratch comes from the heap */
    float *lo = c->L;
    memcpy(lo, lig, sizeof(float) * N);
    if (synth_blur(lo, scr, W, H, 7.0f / mm)) {
        free(f1);
        free(f2);
        free(sel);
        free(scr);
        return 1;
    }
    for (size_t i = 0; i < N; i++) lig[i] -= lo[i];
    /* fine fibrous texture: the gland field's own detail below ~2 mm (high-passed), so dense
     * regions are not flat where the threshold saturates; kept in c->L until used below */
    float *fine = lo;
    memcpy(fine, fld, sizeof(float) * N);
    if (synth_blur(fine, scr, W, H, 2.0f / mm)) {
        free(f1);
        free(f2);
        free(sel);
        free(scr);
        return 1;
    }
    for (size_t i = 0; i < N; i++) fine[i] = fld[i] - fine[i];

    synth_lesions_field(c, b, fld, contrast);

    /* threshold at the target dense-area fraction over breast tissue beyond the skin */
    for (size_t i = 0; i < N; i++) sel[i] = c->mask[i] == 1 && c->dskin[i] > 2.0f;
    float tau = masked_quantile(fld, sel, N, 1.0f - b->pd);
    double s2 = 0;
    size_t cnt = 0;
    for (size_t i = 0; i < N; i++)
        if (sel[i]) {
            s2 += (double)lig[i] * lig[i];
            cnt++;
        }
    float lig_sd = cnt ? (float)sqrt(s2 / (double)cnt) : 1.0f;
    double f2s = 0;
    for (size_t i = 0; i < N; i++)
        if (sel[i]) f2s += (double)fine[i] * fine[i];
    float fine_sd = cnt ? (float)sqrt(f2s / (double)cnt) + 1e-6f : 1.0f;
    float fine_amp = synth_uniform(r, 0.08f, 0.15f);
    float soft = synth_uniform(r, 0.3f, 0.5f);
    float lig_w = synth_uniform(r, 0.06f, 0.1f) * lig_sd, lig_amp = synth_uniform(r, 0.05f, 0.12f);
    float tex_amp = synth_uniform(r, 0.25f, 0.45f);
    /* texture inside the dense regions, independent of the threshold: the band-passed second
     * field (patches) and the fine detail (fibres) */
    float *mod = scr;
    for (size_t i = 0; i < N; i++)
        mod[i] = (1.0f - tex_amp + tex_amp * (0.5f + 0.5f * tanhf(1.5f * lig[i] / lig_sd))) *
                 (1.0f + fine_amp * synth_clampf(fine[i] / fine_sd, -2.5f, 2.5f));
    /* The texture lowers the map, so the plain quantile would undershoot the target: find tau
     * by bisection such that the final map is dense (g > 1/2) on exactly the fraction pd of the
     * tissue (every 2nd pixel counted).  g rises with the field, so the fraction falls with tau. */
    float t_lo = tau - 5.0f, t_hi = tau + 3.0f;
    for (int it = 0; it < 16; it++) {
        float t = 0.5f * (t_lo + t_hi);
        size_t n_sel = 0, n_dense = 0;
        for (size_t i = 0; i < N; i += 2) {
            if (!sel[i]) continue;
            n_sel++;
            n_dense += gland_shape(fld[i] - t, soft) * mod[i] > 0.5f;
        }
        if (n_sel && (float)n_dense > b->pd * (float)n_sel) t_lo = t;
        else t_hi = t;
    }
    tau = 0.5f * (t_lo + t_hi);
    for (size_t i = 0; i < N; i++) {
        if (!c->mask[i]) {
            c->gland[i] = 0.0f;
            continue;
        }
        float g = gland_shape(fld[i] - tau, soft) * mod[i];
        /* fibrous septa (Cooper's ligaments) along the zero crossings of the second field,
         * seen mostly in the fat */
        float ridge = expf(-(lig[i] * lig[i]) / (lig_w * lig_w));
        g += lig_amp * ridge * (1.0f - g);
        c->gland[i] = c->g_max * synth_clampf(g, 0.0f, 1.0f);
    }
    free(f1);
    free(f2);
    free(sel);
    free(scr);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* base attenuation */

void synth_base_attenuation(Canvas *c, Rng *r) {
    int W = c->W, H = c->H;
    float mm = c->mmpx;
    float skin_mm = synth_uniform(r, 1.2f, 1.8f);
    float areola_r = synth_uniform(r, 8.0f, 14.0f) / mm;
    /* muscle fibres: a faint irregular 1-D texture across the muscle, constant along lines
     * parallel to its edge (three incommensurate waves of the distance from the edge) */
    float fib_f[3], fib_ph[3];
    for (int k = 0; k < 3; k++) {
        fib_f[k] = synth_uniform(r, 0.3f, 1.2f);   /* cycles per mm */
        fib_ph[k] = synth_uniform(r, 0, 6.28f);
    }
    /* muscle share of the path: the pectoral shows about as bright as dense tissue, a bit
     * brighter at most (its projected thickness is well below T) */
    float muscle_k = c->g_max * (MU_GLAND - MU_FAT) / (MU_MUSCLE - MU_FAT) * synth_uniform(r, 0.75f, 1.1f);
    for (int y = 0; y < H; y++) {
        float pe = pect_edge(c, (float)y + 0.5f);
        for (int x = 0; x < W; x++) {
            size_t i = (size_t)y * W + x;
            if (!c->mask[i]) {
                c->L[i] = 0.0f;
                continue;
            }
            float t = c->t[i], d = c->dskin[i];
            float mu = MU_FAT + (MU_GLAND - MU_FAT) * c->gland[i];
            float L = mu * t;
            if (c->mask[i] == 2) {
                /* the muscle replaces breast tissue; its projected thickness ramps up over
                 * ~12 mm from its edge (CC sliver: from the chest wall) */
                float e;
                if (pe > 0) e = (pe - (float)x) * mm * 0.9f;
                else {   /* CC sliver */
                    float dy = ((float)y + 0.5f - c->nip_y) / c->cc_ph;
                    e = (c->cc_pw * (1.0f - dy * dy) - (float)x) * mm * 0.6f;
                }
                float tm = t * fminf(1.0f, e / 12.0f) * muscle_k;
                float fib = 0;
                for (int k = 0; k < 3; k++) fib += sinf(6.2831853f * fib_f[k] * e + fib_ph[k]);
                tm *= 1.0f + 0.012f * fib;
                L = MU_MUSCLE * tm + (MU_FAT + 0.3f * (mu - MU_FAT)) * (t - tm);
            }
            /* skin: the beam grazes the skin band near the outline, a thin bright rim */
            float sk = expf(-d / skin_mm);
            L += (MU_SKIN - MU_FAT) * 6.0f * skin_mm * sk;
            /* areola: thicker skin around the nipple */
            float ax = (float)x - c->nip_x, ay = (float)y - c->nip_y;
            if (ax * ax + ay * ay < areola_r * areola_r && d < 4.0f)
                L += (MU_SKIN - MU_FAT) * 3.0f * (1.0f - d / 4.0f);
            c->L[i] = L;
        }
    }
}
