/*
 * data/synth.c — configuration, label sampling (no rendering), vocabularies and the per-view
 * rendering pipeline of the synthetic mammogram generator.  See data/synth.h for the model and
 * shared/docs/mammo-data.md (B1-B8) for where the numbers come from.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "data/synth.h"
#include "data/synth_internal.h"

/* ------------------------------------------------------------------------------------------ */
/* defaults */

void synth_priors_default(SynthPriors *p) {
    memset(p, 0, sizeof *p);
    /* screening density mix (doc B8); VinDr-like would be .005/.095/.765/.135 */
    const float dens[4] = {0.10f, 0.40f, 0.40f, 0.10f};
    memcpy(p->density, dens, sizeof dens);
    p->density_mismatch = 0.10f;
    /* enriched mode: 0 (.6), 1 (.3), 2-3 (.1) findings per breast */
    const float nf[4] = {0.60f, 0.30f, 0.07f, 0.03f};
    memcpy(p->n_findings, nf, sizeof nf);
    const float ft[SYNTH_N_FINDING_TYPES] = {0.45f, 0.35f, 0.05f, 0.10f, 0.05f};
    memcpy(p->finding_type, ft, sizeof ft);
    const float sh[SYNTH_N_SHAPES] = {0.20f, 0.30f, 0.15f, 0.35f};
    memcpy(p->mass_shape, sh, sizeof sh);
    const float mg[SYNTH_N_MARGINS] = {0.30f, 0.15f, 0.10f, 0.25f, 0.20f};
    memcpy(p->mass_margin, mg, sizeof mg);
    const float cm[SYNTH_N_CALC_MORPHS] = {0.10f, 0.05f, 0.20f, 0.15f, 0.10f, 0.28f, 0.12f};
    memcpy(p->calc_morph, cm, sizeof cm);
    const float cd[SYNTH_N_CALC_DISTS] = {0.55f, 0.10f, 0.10f, 0.15f, 0.10f};
    memcpy(p->calc_dist, cd, sizeof cd);
    /* CBIS-DDSM-like: most findings are rated obvious */
    const float st[5] = {0.08f, 0.15f, 0.25f, 0.27f, 0.25f};
    memcpy(p->subtlety, st, sizeof st);
    /* doc B7: BI-RADS 5th-edition ranges 3 <= 2 %, 4A 2-10, 4B 10-50, 4C 50-95, 5 >= 95 */
    const float pm[SYNTH_N_BIRADS] = {0.0f, 0.0f, 0.01f, 0.06f, 0.30f, 0.70f, 0.97f};
    memcpy(p->p_malignant, pm, sizeof pm);
    const float sp[3] = {0.70f, 0.10f, 0.20f};
    memcpy(p->split, sp, sizeof sp);
    p->monochrome1 = 0.2f;
}

void synth_config_default(SynthConfig *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->seed = 1234;
    cfg->n_patients = 500;
    cfg->width = 416;
    cfg->height = 512;
    cfg->fov_mm = 240.0f;
    cfg->bits = 12;
    cfg->noise = 0.03f;
    cfg->blur_px = 0.6f;
    cfg->lesion_contrast = 1.0f;
    cfg->acq_spread = 1.0f;
    synth_priors_default(&cfg->priors);
}

static int check_dist(const float *p, int n, const char *name, Err *e) {
    double s = 0;
    for (int i = 0; i < n; i++) {
        if (!(p[i] >= 0.0f)) return err_set(e, "synth config: priors.%s[%d] = %g is negative", name, i, p[i]);
        s += p[i];
    }
    if (s <= 0) return err_set(e, "synth config: priors.%s sums to 0", name);
    return 0;
}

int synth_config_check(const SynthConfig *cfg, Err *e) {
    if (cfg->width < 64 || cfg->height < 64 || cfg->width > 8192 || cfg->height > 8192)
        return err_set(e, "synth config: image size %dx%d outside 64..8192", cfg->width, cfg->height);
    if (cfg->bits < 12 || cfg->bits > 16)
        return err_set(e, "synth config: bits = %d, expected 12..16", cfg->bits);
    if (!(cfg->fov_mm >= 50.0f && cfg->fov_mm <= 500.0f))
        return err_set(e, "synth config: fov_mm = %g, expected 50..500", cfg->fov_mm);
    if (!(cfg->noise >= 0.0f && cfg->noise <= 0.5f))
        return err_set(e, "synth config: noise = %g, expected 0..0.5", cfg->noise);
    if (!(cfg->blur_px >= 0.0f && cfg->blur_px <= 10.0f))
        return err_set(e, "synth config: blur_px = %g, expected 0..10", cfg->blur_px);
    if (!(cfg->calc_scale >= 0.0f && cfg->calc_scale <= 5.0f))
        return err_set(e, "synth config: calc_scale = %g, expected 0 (auto) .. 5", cfg->calc_scale);
    if (!(cfg->lesion_contrast >= 0.0f && cfg->lesion_contrast <= 10.0f))
        return err_set(e, "synth config: lesion_contrast = %g, expected 0..10", cfg->lesion_contrast);
    if (!(cfg->acq_spread >= 0.0f && cfg->acq_spread <= 8.0f))
        return err_set(e, "synth config: acq_spread = %g, expected 0..8", cfg->acq_spread);
    if (cfg->n_patients < 0) return err_set(e, "synth config: n_patients = %ld is negative", cfg->n_patients);
    const SynthPriors *p = &cfg->priors;
    if (check_dist(p->density, 4, "density", e) || check_dist(p->n_findings, SYNTH_MAX_FINDINGS + 1, "n_findings", e) ||
        check_dist(p->finding_type, SYNTH_N_FINDING_TYPES, "finding_type", e) ||
        check_dist(p->mass_shape, SYNTH_N_SHAPES, "mass_shape", e) ||
        check_dist(p->mass_margin, SYNTH_N_MARGINS, "mass_margin", e) ||
        check_dist(p->calc_morph, SYNTH_N_CALC_MORPHS, "calc_morph", e) ||
        check_dist(p->calc_dist, SYNTH_N_CALC_DISTS, "calc_dist", e) ||
        check_dist(p->subtlety, 5, "subtlety", e) || check_dist(p->split, 3, "split", e))
        return 1;
    for (int i = 0; i < SYNTH_N_BIRADS; i++)
        if (!(p->p_malignant[i] >= 0.0f && p->p_malignant[i] <= 1.0f))
            return err_set(e, "synth config: priors.p_malignant[%d] = %g outside 0..1", i, p->p_malignant[i]);
    if (!(p->density_mismatch >= 0.0f && p->density_mismatch <= 1.0f))
        return err_set(e, "synth config: priors.density_mismatch = %g outside 0..1", p->density_mismatch);
    if (!(p->monochrome1 >= 0.0f && p->monochrome1 <= 1.0f))
        return err_set(e, "synth config: priors.monochrome1 = %g outside 0..1", p->monochrome1);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* small helpers */

int synth_draw(Rng *r, const float *p, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += p[i];
    double u = (double)rng_uniform(r) * s, acc = 0;
    for (int i = 0; i < n; i++) {
        acc += p[i];
        if (u < acc && p[i] > 0) return i;
    }
    for (int i = n - 1; i >= 0; i--)
        if (p[i] > 0) return i;
    return 0;
}

float synth_uniform(Rng *r, float lo, float hi) { return lo + (hi - lo) * rng_uniform(r); }

float synth_clampf(float x, float lo, float hi) { return x < lo ? lo : (x > hi ? hi : x); }

static float lognormal(Rng *r, float median, float sigma_ln) { return median * expf(sigma_ln * rng_normal(r)); }

/* ------------------------------------------------------------------------------------------ */
/* labels */

/* Finding-level BI-RADS from descriptors (doc B7 table). */
int synth_finding_birads(const SynthFinding *f) {
    switch (f->type) {
    case SYNTH_MASS: {
        int irr = f->shape == SYNTH_IRREGULAR;
        switch (f->margin) {
        case SYNTH_SPICULATED: return irr ? SYNTH_BR5 : SYNTH_BR4C;
        case SYNTH_ILL_DEFINED: return irr ? SYNTH_BR4C : SYNTH_BR4B;
        case SYNTH_MICROLOBULATED: return irr ? SYNTH_BR4C : SYNTH_BR4A;
        case SYNTH_OBSCURED: return irr ? SYNTH_BR4B : SYNTH_BR4A;
        default: /* circumscribed */
            if (irr) return SYNTH_BR4B;
            return f->shape == SYNTH_LOBULATED ? SYNTH_BR4A : SYNTH_BR3;
        }
    }
    case SYNTH_CALC: {
        int ductal = f->calc_dist == SYNTH_LINEAR || f->calc_dist == SYNTH_SEGMENTAL;
        switch (f->calc_morph) {
        case SYNTH_CALC_ROUND:
        case SYNTH_CALC_RODLIKE: return SYNTH_BR2;
        case SYNTH_CALC_PUNCTATE:
            if (f->calc_dist == SYNTH_DIFFUSE) return SYNTH_BR2;
            return ductal ? SYNTH_BR4A : SYNTH_BR3;
        case SYNTH_CALC_AMORPHOUS:
            if (f->calc_dist == SYNTH_DIFFUSE) return SYNTH_BR2;
            return ductal ? SYNTH_BR4B : SYNTH_BR4A;
        case SYNTH_CALC_COARSE: return ductal ? SYNTH_BR4B : SYNTH_BR4A;
        case SYNTH_CALC_PLEOMORPHIC: return ductal ? SYNTH_BR4C : SYNTH_BR4B;
        default: /* fine linear (branching) */
            return ductal ? SYNTH_BR5 : SYNTH_BR4C;
        }
    }
    case SYNTH_DISTORTION:
    case SYNTH_ASYMMETRY: return SYNTH_BR4B;
    default: return SYNTH_BR2;   /* intramammary lymph node */
    }
}

/* Location: upper-outer quadrant ~50 % (doc B4); lat/sup inside a disc of radius 0.8. */
static void sample_location(Rng *r, SynthFinding *f) {
    static const float quad_p[4] = {0.50f, 0.15f, 0.20f, 0.15f};   /* UO, UI, LO, LI */
    int q = synth_draw(r, quad_p, 4);
    float phi = synth_uniform(r, 0.05f, 1.52f);
    float rad = 0.8f * sqrtf(synth_uniform(r, 0.02f, 1.0f));
    float lat = rad * cosf(phi), sup = rad * sinf(phi);
    if (q == 1 || q == 3) lat = -lat;
    if (q == 2 || q == 3) sup = -sup;
    f->lat = lat;
    f->sup = sup;
    f->depth = synth_uniform(r, 0.22f, 0.85f);
}

static void sample_finding(const SynthPriors *p, Rng *r, SynthFinding *f) {
    memset(f, 0, sizeof *f);
    f->shape = f->margin = f->calc_morph = f->calc_dist = -1;
    f->type = synth_draw(r, p->finding_type, SYNTH_N_FINDING_TYPES);
    switch (f->type) {
    case SYNTH_MASS:
        f->shape = synth_draw(r, p->mass_shape, SYNTH_N_SHAPES);
        f->margin = synth_draw(r, p->mass_margin, SYNTH_N_MARGINS);
        break;
    case SYNTH_CALC:
        f->calc_morph = synth_draw(r, p->calc_morph, SYNTH_N_CALC_MORPHS);
        f->calc_dist = synth_draw(r, p->calc_dist, SYNTH_N_CALC_DISTS);
        break;
    case SYNTH_LYMPH_NODE:
        f->shape = SYNTH_OVAL;
        f->margin = SYNTH_CIRCUMSCRIBED;
        break;
    default: break;
    }
    f->birads = synth_finding_birads(f);
    f->malignant = rng_uniform(r) < p->p_malignant[f->birads];
    f->subtlety = 1 + synth_draw(r, p->subtlety, 5);
    /* sizes depend on pathology (doc B4/B5): malignant masses a little larger, malignant
     * calcifications more numerous and more compact */
    switch (f->type) {
    case SYNTH_MASS:
        f->size_mm = f->malignant ? synth_clampf(lognormal(r, 14.0f, 0.4f), 5.0f, 50.0f)
                                  : synth_clampf(lognormal(r, 12.0f, 0.45f), 4.0f, 40.0f);
        break;
    case SYNTH_CALC:
        switch (f->calc_dist) {
        case SYNTH_CLUSTERED: f->size_mm = f->malignant ? synth_uniform(r, 5, 12) : synth_uniform(r, 6, 15); break;
        case SYNTH_LINEAR: f->size_mm = synth_uniform(r, 10, 30); break;
        case SYNTH_SEGMENTAL: f->size_mm = synth_uniform(r, 20, 40); break;
        case SYNTH_REGIONAL: f->size_mm = synth_uniform(r, 25, 50); break;
        default: f->size_mm = 0.0f; break;   /* diffuse: the whole breast */
        }
        if (f->calc_morph == SYNTH_CALC_RODLIKE) f->n_calcs = 3 + (int)rng_below(r, 6);
        else if (f->calc_dist == SYNTH_DIFFUSE) f->n_calcs = 15 + (int)rng_below(r, 26);
        else f->n_calcs = f->malignant ? 10 + (int)rng_below(r, 31) : 4 + (int)rng_below(r, 9);
        break;
    case SYNTH_DISTORTION: f->size_mm = synth_uniform(r, 15.0f, 35.0f); break;
    case SYNTH_ASYMMETRY: f->size_mm = synth_uniform(r, 15.0f, 35.0f); break;
    default: f->size_mm = synth_uniform(r, 5.0f, 10.0f); break;
    }
    sample_location(r, f);
    if (f->type == SYNTH_LYMPH_NODE) {   /* upper-outer, towards the axilla */
        f->lat = synth_uniform(r, 0.3f, 0.7f);
        f->sup = synth_uniform(r, 0.4f, 0.8f);
        f->depth = synth_uniform(r, 0.12f, 0.35f);
    }
    f->seed = (uint64_t)rng_u32(r) << 32 | rng_u32(r);
}

/* area PD uniform in the category's bin with +-5 % soft overlap (reader variability) */
static float sample_pd(Rng *r, int density) {
    static const float lo[4] = {0.05f, 0.25f, 0.50f, 0.75f}, hi[4] = {0.25f, 0.50f, 0.75f, 0.95f};
    return synth_clampf(synth_uniform(r, lo[density] - 0.05f, hi[density] + 0.05f), 0.03f, 0.97f);
}

static void sample_anatomy(Rng *r, int density, SynthBreast *b) {
    b->density = density;
    b->pd = sample_pd(r, density);
    static const float t_mu[4] = {62.0f, 57.0f, 48.0f, 40.0f};
    b->thickness_mm = synth_clampf(t_mu[density] + 8.0f * rng_normal(r), 25.0f, 95.0f);
    /* denser breasts are smaller (doc B1) */
    b->pnl_mm = synth_clampf(96.0f - 5.0f * density + 18.0f * rng_normal(r), 45.0f, 150.0f);
    /* chest-wall extent follows the nipple depth (a half-disc-like compressed breast) */
    float extent = synth_clampf(b->pnl_mm * synth_uniform(r, 1.6f, 2.2f) + 10.0f * rng_normal(r), 100.0f, 250.0f);
    float ratio = synth_uniform(r, 0.85f, 1.15f);
    b->half_width_mm[0] = 0.5f * extent * ratio;
    b->half_width_mm[1] = extent - b->half_width_mm[0];
    b->shape_n = synth_uniform(r, 1.8f, 2.6f);
    b->beta = synth_uniform(r, 2.6f, 3.4f);
    /* glandular share of the path where tissue is dense: the doc's U(0.5, 0.9) gives volumetric
     * densities far above the population's (mean 19 %, 95 % < 45 %, Yaffe 2009) and makes a
     * 14 mm mass fainter than plain dense tissue; U(0.3, 0.6) keeps both realistic */
    b->g_max = synth_uniform(r, 0.3f, 0.6f);
    b->texture_seed = (uint64_t)rng_u32(r) << 32 | rng_u32(r);
}

/* the other breast of the same woman: the same anatomy within a few per cent */
static void twin_anatomy(Rng *r, const SynthBreast *a, int density, SynthBreast *b) {
    b->density = density;
    b->pd = density == a->density ? synth_clampf(a->pd + 0.04f * rng_normal(r), 0.03f, 0.97f) : sample_pd(r, density);
    b->thickness_mm = synth_clampf(a->thickness_mm * synth_uniform(r, 0.95f, 1.05f), 25.0f, 95.0f);
    b->pnl_mm = synth_clampf(a->pnl_mm * synth_uniform(r, 0.95f, 1.05f), 45.0f, 150.0f);
    b->half_width_mm[0] = a->half_width_mm[0] * synth_uniform(r, 0.95f, 1.05f);
    b->half_width_mm[1] = a->half_width_mm[1] * synth_uniform(r, 0.95f, 1.05f);
    b->shape_n = a->shape_n + synth_uniform(r, -0.1f, 0.1f);
    b->beta = a->beta + synth_uniform(r, -0.1f, 0.1f);
    b->g_max = synth_clampf(a->g_max * synth_uniform(r, 0.95f, 1.05f), 0.2f, 0.7f);
    b->texture_seed = (uint64_t)rng_u32(r) << 32 | rng_u32(r);
}

static void sample_findings(const SynthPriors *p, Rng *r, SynthBreast *b) {
    b->n_findings = synth_draw(r, p->n_findings, SYNTH_MAX_FINDINGS + 1);
    b->birads = SYNTH_BR1;
    b->pathology = SYNTH_NORMAL;
    for (int i = 0; i < b->n_findings; i++) {
        SynthFinding *f = &b->findings[i];
        sample_finding(p, r, f);
        if (f->birads > b->birads) b->birads = f->birads;
        if (f->malignant) b->pathology = SYNTH_MALIGNANT;
        else if (b->pathology == SYNTH_NORMAL) b->pathology = SYNTH_BENIGN;
    }
}

void synth_sample_exam(const SynthConfig *cfg, long patient, SynthExam *ex) {
    const SynthPriors *p = &cfg->priors;
    Rng root, r;
    rng_init(&root, cfg->seed);
    r = rng_fork(&root, (uint64_t)patient);
    memset(ex, 0, sizeof *ex);
    ex->patient = patient;
    ex->split = synth_draw(&r, p->split, 3);
    ex->age = (int)synth_clampf(56.0f + 10.0f * rng_normal(&r), 35.0f, 85.0f);
    int dl = synth_draw(&r, p->density, 4), dr = dl;
    if (rng_uniform(&r) < p->density_mismatch) {
        int up = rng_uniform(&r) < 0.5f;
        if (dl == 0) up = 1;
        if (dl == 3) up = 0;
        dr = dl + (up ? 1 : -1);
    }
    for (int s = 0; s < 2; s++)
        if (rng_uniform(&r) < 0.3f) ex->cc_pectoral |= 1 << s;
    sample_anatomy(&r, dl, &ex->breast[SYNTH_LEFT]);
    twin_anatomy(&r, &ex->breast[SYNTH_LEFT], dr, &ex->breast[SYNTH_RIGHT]);
    sample_findings(p, &r, &ex->breast[SYNTH_LEFT]);
    sample_findings(p, &r, &ex->breast[SYNTH_RIGHT]);
}

/* ------------------------------------------------------------------------------------------ */
/* names */

const char *synth_view_name(int view) { return view == SYNTH_MLO ? "MLO" : "CC"; }

const char *synth_birads_name(int birads) {
    static const char *n[SYNTH_N_BIRADS] = {"1", "2", "3", "4A", "4B", "4C", "5"};
    return birads >= 0 && birads < SYNTH_N_BIRADS ? n[birads] : "0";
}

int synth_birads_number(int birads) {
    static const int n[SYNTH_N_BIRADS] = {1, 2, 3, 4, 4, 4, 5};
    return birads >= 0 && birads < SYNTH_N_BIRADS ? n[birads] : 0;
}

const char *synth_finding_name(int type) {
    static const char *n[SYNTH_N_FINDING_TYPES] = {"Mass", "Suspicious Calcification",
                                                   "Architectural Distortion", "Focal Asymmetry",
                                                   "Suspicious Lymph Node"};
    return type >= 0 && type < SYNTH_N_FINDING_TYPES ? n[type] : "No Finding";
}

const char *synth_shape_name(int shape) {
    static const char *n[SYNTH_N_SHAPES] = {"ROUND", "OVAL", "LOBULATED", "IRREGULAR"};
    return shape >= 0 && shape < SYNTH_N_SHAPES ? n[shape] : "";
}

const char *synth_margin_name(int margin) {
    static const char *n[SYNTH_N_MARGINS] = {"CIRCUMSCRIBED", "OBSCURED", "MICROLOBULATED",
                                             "ILL_DEFINED", "SPICULATED"};
    return margin >= 0 && margin < SYNTH_N_MARGINS ? n[margin] : "";
}

const char *synth_calc_morph_name(int morph) {
    static const char *n[SYNTH_N_CALC_MORPHS] = {"ROUND_AND_REGULAR", "LARGE_RODLIKE", "PUNCTATE",
                                                 "AMORPHOUS", "COARSE", "PLEOMORPHIC",
                                                 "FINE_LINEAR_BRANCHING"};
    return morph >= 0 && morph < SYNTH_N_CALC_MORPHS ? n[morph] : "";
}

const char *synth_calc_dist_name(int dist) {
    static const char *n[SYNTH_N_CALC_DISTS] = {"CLUSTERED", "LINEAR", "SEGMENTAL", "REGIONAL",
                                                "DIFFUSELY_SCATTERED"};
    return dist >= 0 && dist < SYNTH_N_CALC_DISTS ? n[dist] : "";
}

/* ------------------------------------------------------------------------------------------ */
/* blur */

/* Separable blur.  sigma <= 3 px: a Gaussian kernel of radius 3 sigma; larger: three box
 * filters of matched variance (Wells 1986), so the cost does not grow with sigma.  Edges are
 * clamped.  The vertical passes run along whole rows (contiguous, vectorisable). */

static int gauss_kernel(float sigma, float *k) {   /* k: up to 2*10+1 taps */
    int rad = (int)ceilf(3.0f * sigma);
    if (rad < 1) rad = 1;
    if (rad > 10) rad = 10;
    float s = 0;
    for (int j = -rad; j <= rad; j++) s += k[j + rad] = expf(-0.5f * (float)(j * j) / (sigma * sigma));
    for (int j = 0; j <= 2 * rad; j++) k[j] /= s;
    return rad;
}

static void gauss_h(const float *x, float *o, int W, int H, const float *k, int rad) {
    for (int y = 0; y < H; y++) {
        const float *row = x + (size_t)y * W;
        float *out = o + (size_t)y * W;
        for (int i = 0; i < W; i++) {
            float s = 0;
            if (i >= rad && i < W - rad) {
                const float *p = row + i - rad;
                for (int j = 0; j <= 2 * rad; j++) s += k[j] * p[j];
            } else {
                for (int j = -rad; j <= rad; j++) {
                    int ii = i + j < 0 ? 0 : (i + j >= W ? W - 1 : i + j);
                    s += k[j + rad] * row[ii];
                }
            }
            out[i] = s;
        }
    }
}

static void gauss_v(const float *x, float *o, int W, int H, const float *k, int rad) {
    for (int y = 0; y < H; y++) {
        float *out = o + (size_t)y * W;
        for (int i = 0; i < W; i++) out[i] = 0.0f;
        for (int j = -rad; j <= rad; j++) {
            int yy = y + j < 0 ? 0 : (y + j >= H ? H - 1 : y + j);
            const float *row = x + (size_t)yy * W;
            float kj = k[j + rad];
            for (int i = 0; i < W; i++) out[i] += kj * row[i];
        }
    }
}

/* box of width 2r+1 along rows, edge-clamped */
static void box_h(const float *x, float *o, int W, int H, int r) {
    float inv = 1.0f / (float)(2 * r + 1);
    for (int y = 0; y < H; y++) {
        const float *a = x + (size_t)y * W;
        float *out = o + (size_t)y * W;
        double s = 0;
        for (int j = -r; j <= r; j++) s += a[j < 0 ? 0 : (j >= W ? W - 1 : j)];
        for (int i = 0; i < W; i++) {
            out[i] = (float)(s * inv);
            int add = i + r + 1, sub = i - r;
            s += a[add >= W ? W - 1 : add] - a[sub < 0 ? 0 : sub];
        }
    }
}

/* box along columns: a running sum per column, updated a row at a time */
static void box_v(const float *x, float *o, int W, int H, int r, double *acc) {
    float inv = 1.0f / (float)(2 * r + 1);
    for (int i = 0; i < W; i++) acc[i] = 0;
    for (int j = -r; j <= r; j++) {
        const float *row = x + (size_t)(j < 0 ? 0 : (j >= H ? H - 1 : j)) * W;
        for (int i = 0; i < W; i++) acc[i] += row[i];
    }
    for (int y = 0; y < H; y++) {
        float *out = o + (size_t)y * W;
        for (int i = 0; i < W; i++) out[i] = (float)(acc[i] * inv);
        int add = y + r + 1, sub = y - r;
        const float *ra = x + (size_t)(add >= H ? H - 1 : add) * W, *rs = x + (size_t)(sub < 0 ? 0 : sub) * W;
        for (int i = 0; i < W; i++) acc[i] += (double)ra[i] - rs[i];
    }
}

int synth_blur(float *x, float *tmp, int W, int H, float sigma) {
    if (sigma <= 0.05f) return 0;
    if (sigma <= 3.0f) {
        float k[21];
        int rad = gauss_kernel(sigma, k);
        gauss_h(x, tmp, W, H, k, rad);
        gauss_v(tmp, x, W, H, k, rad);
        return 0;
    }
    /* three boxes of width w = 2r + 1: variance 3 (w^2 - 1) / 12 = sigma^2 */
    int r = (int)floorf(0.5f * (sqrtf(4.0f * sigma * sigma + 1.0f) - 1.0f));
    if (r < 1) r = 1;
    double *acc = malloc(sizeof(double) * (size_t)W);
    if (!acc) return 1;
    for (int pass = 0; pass < 3; pass++) {
        box_h(x, tmp, W, H, r);
        box_v(tmp, x, W, H, r, acc);
    }
    free(acc);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* canvas and rendering */

int canvas_alloc(Canvas *c, int W, int H) {
    memset(c, 0, sizeof *c);
    c->W = W;
    c->H = H;
    size_t n = (size_t)W * H;
    c->edge = calloc((size_t)H, sizeof(float));
    c->mask = calloc(n, 1);
    c->dskin = calloc(n, sizeof(float));
    c->t = calloc(n, sizeof(float));
    c->gland = calloc(n, sizeof(float));
    c->L = calloc(n, sizeof(float));
    c->tmp = calloc(n, sizeof(float));
    c->tmp2 = calloc(n, sizeof(float));
    if (!c->edge || !c->mask || !c->dskin || !c->t || !c->gland || !c->L || !c->tmp || !c->tmp2) {
        canvas_free(c);
        return 1;
    }
    return 0;
}

void canvas_free(Canvas *c) {
    free(c->edge);
    free(c->mask);
    free(c->dskin);
    free(c->t);
    free(c->gland);
    free(c->L);
    free(c->tmp);
    free(c->tmp2);
    memset(c, 0, sizeof *c);
}

void synth_image_free(SynthImage *img) {
    if (!img) return;
    free(img->pixels);
    free(img->breast_mask);
    free(img->gland);
    for (int i = 0; i < img->n_lesions; i++) free(img->lesions[i].mask);
    memset(img, 0, sizeof *img);
}

static void flip_u16(uint16_t *p, int W, int H) {
    for (int y = 0; y < H; y++) {
        uint16_t *r = p + (size_t)y * W;
        for (int i = 0, j = W - 1; i < j; i++, j--) {
            uint16_t t = r[i];
            r[i] = r[j];
            r[j] = t;
        }
    }
}

static void flip_u8(uint8_t *p, int W, int H) {
    for (int y = 0; y < H; y++) {
        uint8_t *r = p + (size_t)y * W;
        for (int i = 0, j = W - 1; i < j; i++, j--) {
            uint8_t t = r[i];
            r[i] = r[j];
            r[j] = t;
        }
    }
}

static void flip_f32(float *p, int W, int H) {
    for (int y = 0; y < H; y++) {
        float *r = p + (size_t)y * W;
        for (int i = 0, j = W - 1; i < j; i++, j--) {
            float t = r[i];
            r[i] = r[j];
            r[j] = t;
        }
    }
}

/* A right breast is the mirror image of the canonical (left) rendering. */
static void mirror_image(SynthImage *img) {
    int W = img->width, H = img->height;
    flip_u16(img->pixels, W, H);
    flip_u8(img->breast_mask, W, H);
    if (img->gland) flip_f32(img->gland, W, H);
    img->nipple_x = (float)W - img->nipple_x;
    for (int i = 0; i < img->n_lesions; i++) {
        SynthLesion *l = &img->lesions[i];
        int w = l->x1 - l->x0, h = l->y1 - l->y0;
        flip_u8(l->mask, w, h);
        int x0 = W - l->x1, x1 = W - l->x0;
        l->x0 = x0;
        l->x1 = x1;
    }
}

int synth_render(const SynthConfig *cfg, const SynthExam *ex, int view_index, SynthImage *img, Err *e) {
    memset(img, 0, sizeof *img);
    if (view_index < 0 || view_index > 3) return err_set(e, "synth_render: view index %d outside 0..3", view_index);
    int side = view_index / 2, view = view_index % 2;
    const SynthBreast *b = &ex->breast[side];
    int W = cfg->width, H = cfg->height;
    Canvas c;
    if (canvas_alloc(&c, W, H)) return err_set(e, "synth_render: out of memory for a %dx%d image", W, H);
    c.mmpx = cfg->fov_mm / (float)H;
    c.view = view;

    Rng root, r, shared;
    rng_init(&root, cfg->seed);
    r = rng_fork(&root, SYNTH_IMAGE_STREAM + 4 * (uint64_t)ex->patient + (uint64_t)view_index);
    rng_init(&shared, b->texture_seed);

    img->width = W;
    img->height = H;
    img->side = side;
    img->view = view;
    img->bits = cfg->bits;
    img->mm_per_px = c.mmpx;
    img->pixels = calloc((size_t)W * H, sizeof(uint16_t));
    img->breast_mask = malloc((size_t)W * H);
    if (!img->pixels || !img->breast_mask) {
        canvas_free(&c);
        synth_image_free(img);
        return err_set(e, "synth_render: out of memory for a %dx%d image", W, H);
    }

    synth_anatomy(&c, ex, side, view, &r);
    int oom = synth_parenchyma(&c, b, view, &shared, &r, cfg->lesion_contrast);
    if (!oom) {
        synth_lesions_tissue(&c, b, cfg->lesion_contrast);
        synth_base_attenuation(&c, &r);
        oom = synth_lesions_render(&c, b, img, cfg->lesion_contrast, cfg->calc_scale);
    }
    if (!oom) oom = synth_acquire(&c, cfg, img, &r);
    if (oom) {
        canvas_free(&c);
        synth_image_free(img);
        return err_set(e, "synth_render: out of memory for a %dx%d image", W, H);
    }

    memcpy(img->breast_mask, c.mask, (size_t)W * H);
    img->nipple_x = c.nip_x;
    img->nipple_y = c.nip_y;
    if (cfg->keep_maps) {
        img->gland = malloc(sizeof(float) * (size_t)W * H);
        if (img->gland) memcpy(img->gland, c.gland, sizeof(float) * (size_t)W * H);
    }
    canvas_free(&c);
    if (side == SYNTH_RIGHT) mirror_image(img);
    return 0;
}

float synth_image_dense_fraction(const SynthImage *img) {
    float thr = 0.5f * ((float)img->level_fat + (float)img->level_dense);
    size_t n = (size_t)img->width * img->height, tissue = 0, dense = 0;
    for (size_t i = 0; i < n; i++) {
        if (img->breast_mask[i] != 1) continue;
        tissue++;
        dense += (float)img->pixels[i] > thr;
    }
    return tissue ? (float)dense / (float)tissue : 0.0f;
}
