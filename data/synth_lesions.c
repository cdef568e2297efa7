/*
 * data/synth_lesions.c — findings in one view (doc B4-B6): masses (Gaussian-random-sphere
 * contour per shape, margin as edge profile / microlobules / spicules), calcification groups
 * (particles by morphology, laid out by distribution), architectural distortion (radiating
 * strands + tissue pulled towards a point), focal asymmetry (irregular glandular island),
 * intramammary lymph nodes (oval with a fatty hilum).  A finding's contour and particle layout
 * come from its own seed, so CC and MLO show the same lesion; its image position is the
 * projection of its 3-D location (same depth from the chest wall in both views).
 *
 * Signals are added to the log attenuation: a mass replaces local tissue, so
 * dL = k * (mu_mass - mu_local) * t_mass and it fades in dense tissue (the "obscured" effect);
 * k = lesion_contrast * subtlety factor.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "data/synth_internal.h"

#define PI_F 3.14159265358979f
#define NTH 256   /* contour samples */

/* subtlety 1 (very subtle) .. 5 (obvious) -> contrast factor */
static float subtlety_factor(int s) {
    static const float k[5] = {0.35f, 0.5f, 0.65f, 0.82f, 1.0f};
    return k[(s < 1 ? 1 : (s > 5 ? 5 : s)) - 1];
}

void synth_lesion_position(const Canvas *c, const SynthFinding *f, float *px, float *py) {
    float x = synth_clampf(f->depth, 0.02f, 0.98f) * c->a_px;
    /* CC: lateral is up.  MLO: the oblique plane mixes superior and lateral (45 deg gantry). */
    float v = c->view == SYNTH_CC ? f->lat : synth_clampf(0.72f * (f->sup + f->lat), -1.0f, 1.0f);
    int up = v > 0;
    float n = c->n_exp[up ? 0 : 1], u = fminf(x / c->a_px, 0.98f);
    float hw = c->b_px[up ? 0 : 1] * powf(1.0f - powf(u, n), 1.0f / n);
    float y = synth_clampf(c->nip_y - v * hw * 0.85f, 2.0f, (float)c->H - 3.0f);
    /* stay inside the tissue: off the skin line and out of the pectoral muscle (rows near the
     * ends of the outline may be too short: step towards the nipple row) */
    float margin = 4.0f / c->mmpx;
    while (fabsf(y - c->nip_y) >= 1.0f && c->edge[(int)y] - pect_edge(c, y) < 4.0f * margin)
        y += y < c->nip_y ? 1.0f : -1.0f;
    float e = c->edge[(int)y], pe = pect_edge(c, y);
    float lo = pe + margin, hi = e - margin;
    if (lo > hi) x = 0.5f * (pe + e);
    else x = synth_clampf(x, lo, hi);
    *px = x;
    *py = y;
}

/* ------------------------------------------------------------------------------------------ */
/* mass contours */

typedef struct MassGeom {
    float cx, cy;      /* px */
    float R;           /* mean radius, px */
    float q;           /* axis ratio (major/minor) */
    float ang;         /* major axis angle */
    float rt[NTH];     /* radial factor r(theta) */
    float w_edge;      /* edge softness in units of rho (0: sharp) */
} MassGeom;

/* r(theta) = exp(sum_k a_k cos k theta + b_k sin k theta - sigma^2/2),
 * a_k, b_k ~ N(0, sigma^2 k^-nu / sum_j j^-nu) (doc B4, 2-D de Sisternes). */
static void add_harmonics(float *rt, Rng *r, float sigma2, float nu, int k0, int k1) {
    double norm = 0;
    for (int k = k0; k <= k1; k++) norm += pow(k, -nu);
    float ak[40], bk[40];
    for (int k = k0; k <= k1 && k < 40; k++) {
        float sd = sqrtf((float)(sigma2 * pow(k, -nu) / norm));
        ak[k] = sd * rng_normal(r);
        bk[k] = sd * rng_normal(r);
    }
    for (int j = 0; j < NTH; j++) {
        float th = 2.0f * PI_F * (float)j / NTH, s = 0;
        for (int k = k0; k <= k1 && k < 40; k++) s += ak[k] * cosf(k * th) + bk[k] * sinf(k * th);
        rt[j] *= expf(s - 0.5f * sigma2);
    }
}

static void mass_geometry(const Canvas *c, const SynthFinding *f, Rng *lr, Rng *vr, MassGeom *g) {
    synth_lesion_position(c, f, &g->cx, &g->cy);
    g->R = 0.5f * f->size_mm / c->mmpx;
    for (int j = 0; j < NTH; j++) g->rt[j] = 1.0f;
    int shape = f->shape < 0 ? SYNTH_OVAL : f->shape;
    switch (shape) {
    case SYNTH_ROUND:
        g->q = synth_uniform(lr, 1.0f, 1.15f);
        add_harmonics(g->rt, lr, synth_uniform(lr, 0.002f, 0.01f), 4.0f, 2, 6);
        break;
    case SYNTH_OVAL:
        g->q = synth_uniform(lr, 1.3f, 2.0f);
        add_harmonics(g->rt, lr, synth_uniform(lr, 0.002f, 0.01f), 4.0f, 2, 6);
        break;
    case SYNTH_LOBULATED:   /* 2-4 bumps */
        g->q = synth_uniform(lr, 1.1f, 1.5f);
        add_harmonics(g->rt, lr, synth_uniform(lr, 0.03f, 0.06f), 1.5f, 2, 5);
        break;
    default:                /* irregular: lumpy, angular in places, not star-like */
        g->q = synth_uniform(lr, 1.0f, 1.6f);
        add_harmonics(g->rt, lr, synth_uniform(lr, 0.05f, 0.11f), 2.8f, 2, 10);
        break;
    }
    if (f->type == SYNTH_LYMPH_NODE) g->q = synth_uniform(lr, 1.5f, 2.0f);
    /* oval masses: long axis often parallel to the chest wall */
    if (shape == SYNTH_OVAL && rng_uniform(lr) < 0.6f) g->ang = 0.5f * PI_F + 0.35f * rng_normal(lr);
    else g->ang = synth_uniform(lr, 0.0f, PI_F);
    if (c->view == SYNTH_MLO) g->ang += synth_uniform(vr, -0.5f, 0.5f);
    g->w_edge = 0.0f;
    float Rmm = 0.5f * f->size_mm;
    switch (f->margin) {
    case SYNTH_MICROLOBULATED: add_harmonics(g->rt, lr, 0.0025f, 0.0f, 15, 30); break;
    case SYNTH_ILL_DEFINED:    /* blurred edge 1-3 mm + fuzzy boundary */
        g->w_edge = synth_uniform(lr, 1.0f, 3.0f) / Rmm;
        add_harmonics(g->rt, lr, 0.004f, 0.5f, 8, 24);
        break;
    case SYNTH_SPICULATED: g->w_edge = 0.6f / Rmm; break;
    default: g->w_edge = 0.15f / Rmm; break;
    }
}

/* rho of a pixel: 1 on the contour */
static float mass_rho(const MassGeom *g, float x, float y) {
    float dx = x - g->cx, dy = y - g->cy;
    float ca = cosf(g->ang), sa = sinf(g->ang);
    float u = dx * ca + dy * sa, v = -dx * sa + dy * ca;
    float sq = sqrtf(g->q);
    u /= sq;
    v *= sq;
    float th = atan2f(v, u);
    float fj = (th + PI_F) * (NTH / (2.0f * PI_F));
    int j0 = (int)fj;
    float a = fj - (float)j0;
    j0 %= NTH;
    int j1 = (j0 + 1) % NTH;
    float rt = g->rt[j0] * (1 - a) + g->rt[j1] * a;
    return sqrtf(u * u + v * v) / (g->R * rt);
}

/* projected thickness profile of an ellipsoid with a soft edge (rho = 1 at the contour) */
static float mass_profile(float rho, float w) {
    if (w <= 1e-3f) return sqrtf(fmaxf(0.0f, 1.0f - rho * rho));
    float outer = 1.0f + 2.5f * w;
    float body = sqrtf(fmaxf(0.0f, 1.0f - (rho / outer) * (rho / outer)));
    return body / (1.0f + expf(-(1.0f - rho) / (0.5f * w)));
}

/* ------------------------------------------------------------------------------------------ */
/* strands (spicules, distortion) */

/* A tapering fibrous strand from (x, y) along `ang`: polyline of 6 segments with a wandering
 * direction; Gaussian cross-section of width w (px) tapering to 20 %, thickness th0 (mm) tapering
 * to 10 %.  Adds the thickness into acc; marks the core into lm. */
static void draw_strand(float *acc, uint8_t *lm, int W, int H, float x, float y, float ang, float len, float w0,
                        float th0, Rng *r) {
    const int nseg = 6;
    float seg = len / nseg;
    for (int s = 0; s < nseg; s++) {
        float nx = x + seg * cosf(ang), ny = y + seg * sinf(ang);
        float f0 = (float)s / nseg, f1 = (float)(s + 1) / nseg;
        float wa = w0 * (1.0f - 0.8f * f0), wb = w0 * (1.0f - 0.8f * f1);
        float ta = th0 * (1.0f - 0.9f * f0), tb = th0 * (1.0f - 0.9f * f1);
        float sig = fmaxf(0.5f * fmaxf(wa, wb), 0.6f);
        int bx0 = (int)floorf(fminf(x, nx) - 3 * sig), bx1 = (int)ceilf(fmaxf(x, nx) + 3 * sig);
        int by0 = (int)floorf(fminf(y, ny) - 3 * sig), by1 = (int)ceilf(fmaxf(y, ny) + 3 * sig);
        if (bx0 < 0) bx0 = 0;
        if (by0 < 0) by0 = 0;
        if (bx1 > W - 1) bx1 = W - 1;
        if (by1 > H - 1) by1 = H - 1;
        float vx = nx - x, vy = ny - y, vv = vx * vx + vy * vy + 1e-6f;
        for (int py = by0; py <= by1; py++)
            for (int px = bx0; px <= bx1; px++) {
                float qx = (float)px + 0.5f - x, qy = (float)py + 0.5f - y;
                float t = synth_clampf((qx * vx + qy * vy) / vv, 0.0f, 1.0f);
                float dx = qx - t * vx, dy = qy - t * vy;
                float w = wa + (wb - wa) * t, th = ta + (tb - ta) * t;
                float sg = fmaxf(0.5f * w, 0.6f);
                /* conserve the cross-section when the strand is thinner than a pixel */
                float val = th * (0.5f * w > 0.6f ? 1.0f : 0.5f * w / 0.6f) * expf(-0.5f * (dx * dx + dy * dy) / (sg * sg));
                size_t i = (size_t)py * W + px;
                acc[i] += val;
                if (val > 0.3f * th0 && (dx * dx + dy * dy) < sg * sg * 2.0f) lm[i] = 1;
            }
        x = nx;
        y = ny;
        ang += 0.12f * rng_normal(r);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* calcifications */

typedef struct Particle {
    float x, y;        /* px */
    float ang;         /* axis direction */
    float hl;          /* half length of the core segment, mm (rods, linear calcs) */
    float ra, rb;      /* radii across (along the axis / perpendicular), mm */
    float amp;         /* attenuation factor (amorphous: faint) */
} Particle;

#define MAX_PARTICLES 200

/* Layout in mm, frame e1 = towards the nipple, e2 = perpendicular (doc B5 distributions). */
static int calc_particles(const Canvas *c, const SynthFinding *f, Rng *lr, Rng *vr, float scale, Particle *p) {
    float cx, cy;
    synth_lesion_position(c, f, &cx, &cy);
    float mm = c->mmpx;
    float ex = c->nip_x - cx, ey = c->nip_y - cy, en = sqrtf(ex * ex + ey * ey) + 1e-6f;
    ex /= en;
    ey /= en;
    float E = f->size_mm;
    int n = f->n_calcs < MAX_PARTICLES ? f->n_calcs : MAX_PARTICLES;
    int m = f->calc_morph;
    /* fine-linear branching: a few branches of short segments along ducts towards the nipple */
    float br_ang = 0.0f, br_x = 0.0f, br_y = 0.0f;
    int np = 0;
    for (int i = 0; i < n; i++) {
        float u = 0, v = 0;   /* mm along e1, e2 */
        switch (f->calc_dist) {
        case SYNTH_CLUSTERED:
            do {
                u = 0.25f * E * rng_normal(lr);
                v = 0.25f * E * rng_normal(lr);
            } while (u * u + v * v > 0.25f * E * E);
            break;
        case SYNTH_LINEAR:
            u = synth_uniform(lr, -0.5f, 0.5f) * E;
            v = 0.4f * rng_normal(lr) + 0.08f * u * u / E;
            break;
        case SYNTH_SEGMENTAL: {   /* wedge, apex towards the nipple */
            float s = synth_uniform(lr, 0.0f, 1.0f);
            u = (s - 0.5f) * E;
            v = synth_uniform(lr, -1.0f, 1.0f) * (1.0f - s) * E * 0.35f;
            break;
        }
        case SYNTH_REGIONAL:
            do {
                u = synth_uniform(lr, -0.5f, 0.5f);
                v = synth_uniform(lr, -0.5f, 0.5f);
            } while (u * u + v * v > 0.25f);
            u *= E;
            v *= 0.7f * E;
            break;
        default: break;   /* diffuse: placed below, in pixels */
        }
        if (m == SYNTH_CALC_FINE_LINEAR && f->calc_dist != SYNTH_DIFFUSE) {
            /* every 3rd particle starts a branch; the others continue it */
            if (i % 3 == 0) {
                br_x = u;
                br_y = v;
                br_ang = synth_uniform(lr, -0.5f, 0.5f);
            } else {
                float step = synth_uniform(lr, 1.5f, 3.0f);
                br_ang += synth_uniform(lr, -0.6f, 0.6f);   /* branching 20-40 deg */
                br_x += step * cosf(br_ang);
                br_y += step * sinf(br_ang);
                u = br_x;
                v = br_y;
            }
        }
        Particle *q = &p[np];
        if (f->calc_dist == SYNTH_DIFFUSE) {
            int tries = 0;
            do {
                q->x = synth_uniform(vr, 0.0f, (float)c->W);
                q->y = synth_uniform(vr, 0.0f, (float)c->H);
            } while (c->mask[(size_t)(int)q->y * c->W + (int)q->x] != 1 && ++tries < 200);
            if (tries >= 200) continue;
        } else {
            /* view-dependent jitter: the other projection of the same cluster */
            float jit = c->view == SYNTH_MLO ? 0.15f : 0.0f;
            u += jit * E * 0.2f * rng_normal(vr);
            q->x = cx + (u * ex - v * ey) / mm;
            q->y = cy + (u * ey + v * ex) / mm;
        }
        q->ang = atan2f(ey, ex);
        q->hl = 0.0f;
        q->amp = 1.0f;
        float d;
        switch (m) {
        case SYNTH_CALC_ROUND: d = synth_uniform(lr, 0.5f, 1.1f); q->ra = q->rb = 0.5f * d; break;
        case SYNTH_CALC_RODLIKE:
            q->hl = 0.5f * synth_uniform(lr, 3.0f, 10.0f);
            q->ra = q->rb = 0.5f * synth_uniform(lr, 0.6f, 1.0f);
            q->ang += 0.2f * rng_normal(lr);
            break;
        case SYNTH_CALC_PUNCTATE: d = synth_uniform(lr, 0.3f, 0.5f); q->ra = q->rb = 0.5f * d; break;
        case SYNTH_CALC_AMORPHOUS:
            d = synth_uniform(lr, 0.2f, 0.35f);
            q->ra = q->rb = 0.5f * d;
            q->amp = 0.5f;
            break;
        case SYNTH_CALC_COARSE:
            d = synth_uniform(lr, 0.6f, 1.3f);
            q->ra = 0.5f * d;
            q->rb = 0.5f * d * synth_uniform(lr, 0.5f, 1.0f);
            q->ang = synth_uniform(lr, 0, PI_F);
            break;
        case SYNTH_CALC_PLEOMORPHIC:
            d = synth_clampf(0.45f * expf(0.45f * rng_normal(lr)), 0.2f, 1.0f);
            q->ra = 0.5f * d;
            q->rb = q->ra / synth_uniform(lr, 1.0f, 3.0f);
            q->ang = synth_uniform(lr, 0, PI_F);
            break;
        default:   /* fine linear: short thin segments along the branch */
            q->hl = 0.5f * synth_uniform(lr, 1.0f, 4.0f);
            q->ra = q->rb = 0.5f * synth_uniform(lr, 0.25f, 0.5f);
            q->ang += br_ang;
            break;
        }
        q->ra *= scale;
        q->rb *= scale;
        np++;
    }
    return np;
}

/* Mean projected thickness (mm) of a particle over each pixel it touches, 6x6 supersampled and
 * rescaled to its analytic volume so sub-pixel particles keep their signal. */
static int draw_particle(float *acc, uint8_t *lm, int W, int H, float mmpx, const Particle *q, float amp) {
    const int S = 6;
    float ra = q->ra / mmpx, rb = q->rb / mmpx, hl = q->hl / mmpx;   /* px */
    float cz = 0.5f * (q->ra + q->rb);                                 /* half depth, mm */
    float ext = hl + fmaxf(ra, rb) + 1.0f;
    int bx0 = (int)floorf(q->x - ext), bx1 = (int)floorf(q->x + ext);
    int by0 = (int)floorf(q->y - ext), by1 = (int)floorf(q->y + ext);
    if (bx0 < 0) bx0 = 0;
    if (by0 < 0) by0 = 0;
    if (bx1 > W - 1) bx1 = W - 1;
    if (by1 > H - 1) by1 = H - 1;
    if (bx0 > bx1 || by0 > by1) return 0;
    float ca = cosf(q->ang), sa = sinf(q->ang);
    /* analytic volume (mm^3): ellipsoid + cylinder part */
    double vol = 4.0 / 3.0 * 3.14159265 * q->ra * q->rb * cz + 3.14159265 * q->ra * q->rb * 2.0 * q->hl;
    int bw = bx1 - bx0 + 1, bh = by1 - by0 + 1;
    float loc_small[32 * 32];
    float *loc = bw * bh <= 32 * 32 ? loc_small : malloc(sizeof(float) * (size_t)bw * bh);
    if (!loc) return 1;
    double sum = 0;
    for (int py = 0; py < bh; py++)
        for (int px = 0; px < bw; px++) {
            float s = 0;
            for (int j = 0; j < S; j++)
                for (int i = 0; i < S; i++) {
                    float x = (float)(bx0 + px) + ((float)i + 0.5f) / S - q->x;
                    float y = (float)(by0 + py) + ((float)j + 0.5f) / S - q->y;
                    float u = x * ca + y * sa, v = -x * sa + y * ca;
                    float du = fmaxf(fabsf(u) - hl, 0.0f);
                    float d2 = (du / ra) * (du / ra) + (v / rb) * (v / rb);
                    if (d2 < 1.0f) s += 2.0f * cz * sqrtf(1.0f - d2);
                }
            loc[py * bw + px] = s / (S * S);
            sum += s / (S * S);
        }
    double px_area = (double)mmpx * mmpx;
    if (sum > 0) {
        float sc = (float)(vol / px_area / sum);
        for (int py = 0; py < bh; py++)
            for (int px = 0; px < bw; px++) {
                float v = loc[py * bw + px] * sc;
                if (v <= 0) continue;
                size_t i = (size_t)(by0 + py) * W + bx0 + px;
                acc[i] += amp * v;
                lm[i] = 1;
            }
    } else {   /* smaller than the sampling: bilinear splat of the volume */
        float fx = q->x - 0.5f, fy = q->y - 0.5f;
        int x0 = (int)floorf(fx), y0 = (int)floorf(fy);
        float ax = fx - x0, ay = fy - y0;
        float m = (float)(vol / px_area);
        float wts[4] = {(1 - ax) * (1 - ay), ax * (1 - ay), (1 - ax) * ay, ax * ay};
        for (int k = 0; k < 4; k++) {
            int x = x0 + (k & 1), y = y0 + (k >> 1);
            if (x < 0 || y < 0 || x >= W || y >= H) continue;
            acc[(size_t)y * W + x] += amp * m * wts[k];
            lm[(size_t)y * W + x] = 1;
        }
    }
    if (loc != loc_small) free(loc);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* tissue changes: asymmetry, obscuring tissue, distortion */

/* Findings made of tissue (focal asymmetry; the glandular tissue hiding part of an obscured
 * mass's margin) raise the gland field before it is thresholded, so they carry the breast's
 * own texture. */
void synth_lesions_field(Canvas *c, const SynthBreast *b, float *fld, float contrast) {
    int W = c->W, H = c->H;
    for (int k = 0; k < b->n_findings; k++) {
        const SynthFinding *f = &b->findings[k];
        Rng lr;
        rng_init(&lr, f->seed ^ 0x7157u);
        float cx, cy;
        synth_lesion_position(c, f, &cx, &cy);
        float kf = synth_clampf(contrast * subtlety_factor(f->subtlety), 0.0f, 1.5f);
        if (f->type == SYNTH_ASYMMETRY) {
            /* an irregular island: union of 6-10 Gaussian lumps, soft thresholded, so the border
             * is concave in places (not mass-like) */
            float D = f->size_mm / c->mmpx;
            int m = 6 + (int)rng_below(&lr, 5);
            float lx[10], ly[10], ls[10];
            for (int i = 0; i < m; i++) {
                lx[i] = cx + 0.22f * D * rng_normal(&lr);
                ly[i] = cy + 0.22f * D * rng_normal(&lr);
                ls[i] = synth_uniform(&lr, 0.10f, 0.2f) * D;
            }
            float a = 0.8f + 1.6f * kf;   /* field units (standard deviations) */
            int r = (int)(1.2f * D) + 2;
            for (int y = (int)cy - r; y <= (int)cy + r; y++)
                for (int x = (int)cx - r; x <= (int)cx + r; x++) {
                    if (x < 0 || y < 0 || x >= W || y >= H) continue;
                    size_t i = (size_t)y * W + x;
                    if (c->mask[i] != 1) continue;
                    float s = 0;
                    for (int j = 0; j < m; j++) {
                        float dx = (float)x + 0.5f - lx[j], dy = (float)y + 0.5f - ly[j];
                        s += expf(-0.5f * (dx * dx + dy * dy) / (ls[j] * ls[j]));
                    }
                    float isl = synth_clampf((s - 0.35f) / 0.4f, 0.0f, 1.0f);
                    fld[i] += a * isl * isl * (3 - 2 * isl);
                }
        } else if (f->type == SYNTH_MASS && f->margin == SYNTH_OBSCURED) {
            /* glandular tissue overlapping about a third of the margin */
            float R = 0.5f * f->size_mm / c->mmpx;
            float phi = synth_uniform(&lr, 0, 2 * PI_F);
            float bx = cx + 1.0f * R * cosf(phi), by = cy + 1.0f * R * sinf(phi), s = 0.8f * R;
            int r = (int)(3 * s) + 2;
            for (int y = (int)by - r; y <= (int)by + r; y++)
                for (int x = (int)bx - r; x <= (int)bx + r; x++) {
                    if (x < 0 || y < 0 || x >= W || y >= H) continue;
                    size_t i = (size_t)y * W + x;
                    if (c->mask[i] != 1) continue;
                    float dx = (float)x + 0.5f - bx, dy = (float)y + 0.5f - by;
                    fld[i] += 2.5f * expf(-0.5f * (dx * dx + dy * dy) / (s * s));
                }
        }
    }
}

/* Architectural distortion pulls the tissue towards a point (after the gland map exists). */
void synth_lesions_tissue(Canvas *c, const SynthBreast *b, float contrast) {
    int W = c->W, H = c->H;
    for (int k = 0; k < b->n_findings; k++) {
        const SynthFinding *f = &b->findings[k];
        float cx, cy;
        synth_lesion_position(c, f, &cx, &cy);
        float kf = synth_clampf(contrast * subtlety_factor(f->subtlety), 0.0f, 1.5f);
        if (f->type == SYNTH_DISTORTION) {
            /* pull the tissue towards the centre: a pixel at radius r shows the tissue from
             * radius r (1 + k exp(-r^2 / 2 s^2)) */
            float Rw = 0.5f * f->size_mm / c->mmpx, s = 0.5f * Rw, kk = 0.6f * kf;
            int r = (int)(1.5f * Rw) + 2;
            int x0 = (int)cx - r, x1 = (int)cx + r, y0 = (int)cy - r, y1 = (int)cy + r;
            if (x0 < 0) x0 = 0;
            if (y0 < 0) y0 = 0;
            if (x1 > W - 1) x1 = W - 1;
            if (y1 > H - 1) y1 = H - 1;
            for (int y = y0; y <= y1; y++)
                for (int x = x0; x <= x1; x++) c->tmp2[(size_t)y * W + x] = c->gland[(size_t)y * W + x];
            for (int y = y0; y <= y1; y++)
                for (int x = x0; x <= x1; x++) {
                    size_t i = (size_t)y * W + x;
                    if (c->mask[i] != 1) continue;
                    float dx = (float)x - cx, dy = (float)y - cy;
                    float sc = 1.0f + kk * expf(-0.5f * (dx * dx + dy * dy) / (s * s));
                    int sx = (int)lrintf(cx + dx * sc), sy = (int)lrintf(cy + dy * sc);
                    if (sx < x0 || sy < y0 || sx > x1 || sy > y1) continue;
                    if (c->mask[(size_t)sy * W + sx] != 1) continue;
                    c->gland[i] = c->tmp2[(size_t)sy * W + sx];
                }
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* rendering */

static void clip_box(int *x0, int *y0, int *x1, int *y1, int W, int H) {
    if (*x0 < 0) *x0 = 0;
    if (*y0 < 0) *y0 = 0;
    if (*x1 > W) *x1 = W;
    if (*y1 > H) *y1 = H;
}

int synth_lesions_render(Canvas *c, const SynthBreast *b, SynthImage *img, float contrast, float calc_scale) {
    int W = c->W, H = c->H;
    float mm = c->mmpx;
    /* At coarse pixels (0.47 mm at 512 px) a 0.3 mm particle is a fraction of a pixel and
     * vanishes under the texture (doc A14/B5); draw particle radii scaled by
     * sqrt(pixel / 0.15 mm) in [1, 2] unless configured. */
    if (calc_scale <= 0.0f) calc_scale = synth_clampf(sqrtf(mm / 0.15f), 1.0f, 2.0f);
    float *acc = c->tmp;   /* (H, W) lesion thickness-weighted attenuation, this finding */
    uint8_t *lm = calloc((size_t)W * H, 1);
    Particle *pp = malloc(sizeof(Particle) * MAX_PARTICLES);
    if (!lm || !pp) {
        free(lm);
        free(pp);
        return 1;
    }
    memset(acc, 0, sizeof(float) * (size_t)W * H);
    img->n_lesions = 0;
    for (int k = 0; k < b->n_findings; k++) {
        const SynthFinding *f = &b->findings[k];
        Rng lr, vr;
        rng_init(&lr, f->seed);
        vr = rng_fork(&lr, 1 + (uint64_t)c->view);
        float kf = contrast * subtlety_factor(f->subtlety);
        float cx, cy;
        synth_lesion_position(c, f, &cx, &cy);
        /* region this finding may touch */
        float reach = 0.5f * f->size_mm / mm * 4.0f + 8.0f;
        if (f->type == SYNTH_CALC && f->calc_dist == SYNTH_DIFFUSE) reach = (float)(W > H ? W : H);
        int rx0 = (int)(cx - reach), rx1 = (int)(cx + reach) + 1, ry0 = (int)(cy - reach), ry1 = (int)(cy + reach) + 1;
        clip_box(&rx0, &ry0, &rx1, &ry1, W, H);
        /* pad for calc boxes: particle bbox + 1 mm (doc B5) */
        int px0 = W, py0 = H, px1 = -1, py1 = -1;

        if (f->type == SYNTH_MASS || f->type == SYNTH_LYMPH_NODE) {
            MassGeom g;
            mass_geometry(c, f, &lr, &vr, &g);
            /* half depth along the beam, mm: compression flattens the lesion a little */
            float cz = 0.5f * f->size_mm * synth_uniform(&lr, 0.55f, 0.85f);
            float mu_m = f->type == SYNTH_LYMPH_NODE ? 0.97f * MU_MASS : MU_MASS;
            /* lymph node hilum: a fatty notch on one side */
            float hphi = synth_uniform(&lr, 0, 2 * PI_F);
            float hx = g.cx + g.R * cosf(hphi), hy = g.cy + g.R * sinf(hphi), hs = 0.3f * g.R;
            for (int y = ry0; y < ry1; y++)
                for (int x = rx0; x < rx1; x++) {
                    size_t i = (size_t)y * W + x;
                    if (c->mask[i] != 1) continue;
                    float rho = mass_rho(&g, (float)x + 0.5f, (float)y + 0.5f);
                    if (rho > 1.0f + 4.0f * g.w_edge + 0.2f) continue;
                    float tl = 2.0f * cz * mass_profile(rho, g.w_edge);
                    if (f->type == SYNTH_LYMPH_NODE) {
                        float dx = (float)x + 0.5f - hx, dy = (float)y + 0.5f - hy;
                        tl *= 1.0f - 0.85f * expf(-0.5f * (dx * dx + dy * dy) / (hs * hs));
                    }
                    tl = fminf(tl, 0.85f * c->t[i]);
                    acc[i] += tl;
                    if (rho <= 1.0f) lm[i] = 1;
                }
            if (f->margin == SYNTH_SPICULATED) {
                /* N ~ Poisson(12) in [5, 40] strands from the boundary, length 0.5-2 R (doc B4) */
                int ns = (int)lrintf(12.0f + 3.46f * rng_normal(&vr));
                ns = ns < 5 ? 5 : (ns > 40 ? 40 : ns);
                for (int s = 0; s < ns; s++) {
                    float phi = synth_uniform(&vr, 0, 2 * PI_F);
                    float rho_dir = g.R * 0.85f;
                    float sx = g.cx + rho_dir * cosf(phi), sy = g.cy + rho_dir * sinf(phi);
                    float len = synth_uniform(&vr, 0.5f, 2.0f) * g.R + 2.0f / mm;
                    float w0 = synth_uniform(&vr, 0.3f, 1.2f) / mm;
                    float th0 = 2.0f * cz * synth_uniform(&vr, 0.3f, 0.6f);
                    draw_strand(acc, lm, W, H, sx, sy, phi + 0.15f * rng_normal(&vr), len, w0, th0, &vr);
                }
            }
            /* the mass replaces local tissue */
            for (int y = 0; y < H; y++)
                for (int x = 0; x < W; x++) {
                    size_t i = (size_t)y * W + x;
                    if (acc[i] == 0.0f) continue;
                    float mu_loc = MU_FAT + (MU_GLAND - MU_FAT) * c->gland[i];
                    acc[i] = kf * (mu_m - mu_loc) * fminf(acc[i], 0.9f * c->t[i]);
                }
        } else if (f->type == SYNTH_DISTORTION) {
            /* strands radiating from a point without a central mass, 10-30 mm long */
            int ns = 10 + (int)rng_below(&vr, 11);
            float Rw = 0.5f * f->size_mm / mm;
            for (int s = 0; s < ns; s++) {
                float phi = synth_uniform(&vr, 0, 2 * PI_F);
                float r0 = synth_uniform(&vr, 0.5f, 2.5f) / mm;
                draw_strand(acc, lm, W, H, cx + r0 * cosf(phi), cy + r0 * sinf(phi), phi, synth_uniform(&vr, 0.5f, 1.0f) * Rw,
                            synth_uniform(&vr, 0.3f, 0.8f) / mm, synth_uniform(&vr, 2.5f, 5.0f), &vr);
            }
            int cr = (int)ceilf(2.0f / mm);
            for (int y = (int)cy - cr; y <= (int)cy + cr; y++)
                for (int x = (int)cx - cr; x <= (int)cx + cr; x++)
                    if (x >= 0 && y >= 0 && x < W && y < H && (x - cx) * (x - cx) + (y - cy) * (y - cy) <= (float)(cr * cr))
                        lm[(size_t)y * W + x] = 1;
            for (int y = 0; y < H; y++)
                for (int x = 0; x < W; x++) {
                    size_t i = (size_t)y * W + x;
                    if (acc[i] == 0.0f) continue;
                    float mu_loc = MU_FAT + (MU_GLAND - MU_FAT) * c->gland[i];
                    acc[i] = kf * (MU_MASS - mu_loc) * fminf(acc[i], 0.9f * c->t[i]);
                }
        } else if (f->type == SYNTH_ASYMMETRY) {
            /* already in the tissue: the mask is where the island dominates */
            float D = f->size_mm / mm;
            int r = (int)(1.2f * D) + 2;
            Rng tr;
            rng_init(&tr, f->seed ^ 0x7157u);   /* the same lumps as synth_lesions_tissue */
            int m = 6 + (int)rng_below(&tr, 5);
            float lx[10], ly[10], ls[10];
            for (int i = 0; i < m; i++) {
                lx[i] = cx + 0.22f * D * rng_normal(&tr);
                ly[i] = cy + 0.22f * D * rng_normal(&tr);
                ls[i] = synth_uniform(&tr, 0.10f, 0.2f) * D;
            }
            for (int y = (int)cy - r; y <= (int)cy + r; y++)
                for (int x = (int)cx - r; x <= (int)cx + r; x++) {
                    if (x < 0 || y < 0 || x >= W || y >= H) continue;
                    float s = 0;
                    for (int j = 0; j < m; j++) {
                        float dx = (float)x + 0.5f - lx[j], dy = (float)y + 0.5f - ly[j];
                        s += expf(-0.5f * (dx * dx + dy * dy) / (ls[j] * ls[j]));
                    }
                    if (s > 0.55f) lm[(size_t)y * W + x] = 1;
                }
        } else {   /* calcifications */
            int np = calc_particles(c, f, &lr, &vr, calc_scale, pp);
            for (int i = 0; i < np; i++) {
                if (draw_particle(acc, lm, W, H, mm, &pp[i], kf * pp[i].amp * MU_CALC)) {
                    free(lm);
                    free(pp);
                    return 1;
                }
                /* a particle centred outside the breast loses its mask below: keep it out of the box */
                int ix = (int)floorf(pp[i].x), iy = (int)floorf(pp[i].y);
                if (ix < 0 || iy < 0 || ix >= W || iy >= H || c->mask[(size_t)iy * W + ix] != 1) continue;
                float ext = (pp[i].hl + fmaxf(pp[i].ra, pp[i].rb) + 1.0f) / mm;
                px0 = (int)fminf((float)px0, floorf(pp[i].x - ext));
                py0 = (int)fminf((float)py0, floorf(pp[i].y - ext));
                px1 = (int)fmaxf((float)px1, ceilf(pp[i].x + ext));
                py1 = (int)fmaxf((float)py1, ceilf(pp[i].y + ext));
            }
            /* mask: particles dilated by one pixel */
            for (int y = ry0; y < ry1; y++)
                for (int x = rx0; x < rx1; x++) {
                    size_t i = (size_t)y * W + x;
                    if (lm[i] != 1) continue;
                    for (int dy = -1; dy <= 1; dy++)
                        for (int dx = -1; dx <= 1; dx++) {
                            int xx = x + dx, yy = y + dy;
                            if (xx >= rx0 && yy >= ry0 && xx < rx1 && yy < ry1 && !lm[(size_t)yy * W + xx])
                                lm[(size_t)yy * W + xx] = 2;
                        }
                }
        }

        /* inside the breast only; box = tight around the mask (+ calc margin) */
        int bx0 = W, by0 = H, bx1 = -1, by1 = -1;
        double sig = 0;
        size_t cnt = 0;
        for (int y = 0; y < H; y++)   /* whole image: strands may leave the region */
            for (int x = 0; x < W; x++) {
                size_t i = (size_t)y * W + x;
                if (lm[i] && c->mask[i] != 1) lm[i] = 0;
                if (!lm[i]) continue;
                lm[i] = 1;
                if (x < bx0) bx0 = x;
                if (y < by0) by0 = y;
                if (x > bx1) bx1 = x;
                if (y > by1) by1 = y;
                sig += acc[i];
                cnt++;
            }
        if (!cnt) {   /* not expected (the centre is in the tissue); keep one tissue pixel */
            int y = (int)cy, x = (int)cx;
            while (x > 0 && c->mask[(size_t)y * W + x] != 1) x--;
            lm[(size_t)y * W + x] = 1;
            bx0 = bx1 = x;
            by0 = by1 = y;
            cnt = 1;
        }
        bx1++;
        by1++;
        if (f->type == SYNTH_CALC && px1 >= 0) {
            int marg = (int)ceilf(1.0f / mm);
            bx0 = bx0 < px0 - marg ? bx0 : px0 - marg;
            by0 = by0 < py0 - marg ? by0 : py0 - marg;
            bx1 = bx1 > px1 + marg ? bx1 : px1 + marg;
            by1 = by1 > py1 + marg ? by1 : py1 + marg;
            clip_box(&bx0, &by0, &bx1, &by1, W, H);
        }
        SynthLesion *les = &img->lesions[img->n_lesions];
        les->finding = k;
        les->x0 = bx0;
        les->y0 = by0;
        les->x1 = bx1;
        les->y1 = by1;
        les->contrast = (float)(sig / (double)cnt);
        int bw = bx1 - bx0, bh = by1 - by0;
        les->mask = calloc((size_t)bw * bh, 1);
        if (!les->mask) {
            free(lm);
            free(pp);
            return 1;
        }
        for (int y = by0; y < by1; y++)
                for (int x = bx0; x < bx1; x++) les->mask[(size_t)(y - by0) * bw + (x - bx0)] = lm[(size_t)y * W + x] == 1;
        img->n_lesions++;

        /* add to the image, clear the scratch for the next finding */
        for (size_t i = 0; i < (size_t)W * H; i++) {
            c->L[i] += acc[i];
            acc[i] = 0.0f;
            lm[i] = 0;
        }
    }
    free(lm);
    free(pp);
    return 0;
}
