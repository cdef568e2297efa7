/* test_synth.c — the synthetic mammogram generator: determinism (seeds, thread counts), the
 * physics/texture building blocks (FFT, power-law slope), density classes, geometry (masks in
 * the breast, boxes around masks, pectoral on MLO, CC/MLO consistency), label priors and the
 * malignancy model, the subtlety knob, the output range, and the dataset writers (exact headers,
 * DICOM round trip, the real converters reading the result). */
#include "tests/common/testutil.h"
#include "data/data.h"
#include "data/synth_internal.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wsign-compare"
#include <stb_image.h>   /* implementation in data/stb_impl.c (libversa) */
#pragma GCC diagnostic pop

#include <dirent.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* small images keep the suite fast: 1 mm pixels */
static SynthConfig small_cfg(uint64_t seed) {
    SynthConfig c;
    synth_config_default(&c);
    c.seed = seed;
    c.width = 192;
    c.height = 240;
    c.quiet = 1;
    return c;
}

static void render_ok(const SynthConfig *cfg, const SynthExam *ex, int vi, SynthImage *img) {
    Err e = {{0}};
    if (synth_render(cfg, ex, vi, img, &e)) fail_msg("synth_render: %s", e.msg);
}

static uint64_t fnv(const void *p, size_t n, uint64_t h) {
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

static uint64_t image_hash(const SynthImage *im) {
    uint64_t h = 0xcbf29ce484222325ull;
    h = fnv(im->pixels, sizeof(uint16_t) * (size_t)im->width * im->height, h);
    h = fnv(im->breast_mask, (size_t)im->width * im->height, h);
    for (int l = 0; l < im->n_lesions; l++) {
        const SynthLesion *s = &im->lesions[l];
        int b[5] = {s->finding, s->x0, s->y0, s->x1, s->y1};
        h = fnv(b, sizeof b, h);
        h = fnv(s->mask, (size_t)(s->x1 - s->x0) * (s->y1 - s->y0), h);
    }
    return h;
}

/* ------------------------------------------------------------------------------------------ */
/* building blocks */

static void test_fft_matches_dft(void **st) {
    (void)st;
    enum { N = 32 };
    float z[2 * N], tw[N];
    double ref[2 * N];
    Rng r;
    rng_init(&r, 5);
    for (int i = 0; i < 2 * N; i++) z[i] = rng_normal(&r);
    for (int k = 0; k < N; k++) {
        double sr = 0, si = 0;
        for (int j = 0; j < N; j++) {
            double a = -2.0 * M_PI * j * k / N;
            sr += z[2 * j] * cos(a) - z[2 * j + 1] * sin(a);
            si += z[2 * j] * sin(a) + z[2 * j + 1] * cos(a);
        }
        ref[2 * k] = sr;
        ref[2 * k + 1] = si;
    }
    synth_fft_twiddles(tw, N);
    synth_fft(z, N, tw);
    double worst = 0;
    for (int i = 0; i < 2 * N; i++) worst = fmax(worst, fabs(z[i] - ref[i]));
    assert_true(worst < 1e-4);
}

/* Radially averaged power spectrum of the texture field: log-log slope = -beta (doc B9). */
static void test_powerlaw_slope(void **st) {
    (void)st;
    enum { N = 256 };
    float *f1 = malloc(sizeof(float) * N * N), *f2 = malloc(sizeof(float) * N * N);
    float *z = malloc(sizeof(float) * 2 * N * N), tw[N], col[2 * N];
    const float betas[2] = {2.6f, 3.4f};
    for (int bi = 0; bi < 2; bi++) {
        Rng a, b;
        rng_init(&a, 1);
        rng_init(&b, 2);
        /* f_min far below the fitted band, so the cut-off does not bend the slope */
        synth_powerlaw(f1, f2, N, 0.5f, betas[bi], 1e-4f, 0.02f, &a, &b);
        double slope_sum = 0;
        for (int which = 0; which < 2; which++) {
            const float *f = which ? f2 : f1;
            for (int i = 0; i < N * N; i++) {
                z[2 * i] = f[i];
                z[2 * i + 1] = 0;
            }
            synth_fft_twiddles(tw, N);
            for (int y = 0; y < N; y++) synth_fft(z + 2 * y * N, N, tw);
            for (int x = 0; x < N; x++) {
                for (int y = 0; y < N; y++) {
                    col[2 * y] = z[2 * (y * N + x)];
                    col[2 * y + 1] = z[2 * (y * N + x) + 1];
                }
                synth_fft(col, N, tw);
                for (int y = 0; y < N; y++) {
                    z[2 * (y * N + x)] = col[2 * y];
                    z[2 * (y * N + x) + 1] = col[2 * y + 1];
                }
            }
            /* radial bins 4..64 (0.03..0.5 cycles/mm at 0.5 mm), least squares in log-log */
            double P[N] = {0};
            int cnt[N] = {0};
            for (int y = 0; y < N; y++)
                for (int x = 0; x < N; x++) {
                    int sy = y <= N / 2 ? y : y - N, sx = x <= N / 2 ? x : x - N;
                    int rr = (int)lrint(sqrt((double)(sx * sx + sy * sy)));
                    if (rr < N) {
                        P[rr] += (double)z[2 * (y * N + x)] * z[2 * (y * N + x)] + (double)z[2 * (y * N + x) + 1] * z[2 * (y * N + x) + 1];
                        cnt[rr]++;
                    }
                }
            double sx = 0, sy = 0, sxx = 0, sxy = 0;
            int m = 0;
            for (int k = 4; k <= 64; k++) {
                double lx = log((double)k), ly = log(P[k] / cnt[k]);
                sx += lx;
                sy += ly;
                sxx += lx * lx;
                sxy += lx * ly;
                m++;
            }
            slope_sum += (m * sxy - sx * sy) / (m * sxx - sx * sx);
        }
        double slope = slope_sum / 2;
        print_message("beta %.1f: fitted spectrum slope %.3f\n", betas[bi], slope);
        assert_true(fabs(slope + betas[bi]) < 0.3);
    }
    free(f1);
    free(f2);
    free(z);
}

/* ------------------------------------------------------------------------------------------ */
/* determinism */

static void test_same_seed_same_output(void **st) {
    (void)st;
    SynthConfig cfg = small_cfg(42);
    cfg.priors.n_findings[0] = 0.2f;   /* most breasts with findings */
    for (long p = 0; p < 3; p++) {
        SynthExam a, b;
        synth_sample_exam(&cfg, p, &a);
        synth_sample_exam(&cfg, p, &b);
        assert_memory_equal(&a, &b, sizeof a);
        for (int v = 0; v < 4; v++) {
            SynthImage i1, i2;
            render_ok(&cfg, &a, v, &i1);
            render_ok(&cfg, &b, v, &i2);
            assert_true(image_hash(&i1) == image_hash(&i2));
            synth_image_free(&i1);
            synth_image_free(&i2);
        }
    }
    /* a different seed gives different images and labels */
    SynthConfig c2 = small_cfg(43);
    SynthExam a, b;
    synth_sample_exam(&cfg, 0, &a);
    synth_sample_exam(&c2, 0, &b);
    assert_true(memcmp(&a, &b, sizeof a) != 0);
    SynthImage i1, i2;
    render_ok(&cfg, &a, 0, &i1);
    render_ok(&c2, &b, 0, &i2);
    assert_true(image_hash(&i1) != image_hash(&i2));
    synth_image_free(&i1);
    synth_image_free(&i2);
}

/* Rendering inside an OpenMP team gives the images rendered one by one. */
static void test_parallel_render_identical(void **st) {
    (void)st;
    SynthConfig cfg = small_cfg(7);
    enum { N = 12 };
    uint64_t serial[N], par[N];
    for (int i = 0; i < N; i++) {
        SynthExam ex;
        SynthImage im;
        synth_sample_exam(&cfg, i / 4, &ex);
        render_ok(&cfg, &ex, i % 4, &im);
        serial[i] = image_hash(&im);
        synth_image_free(&im);
    }
#pragma omp parallel for schedule(dynamic, 1) num_threads(2)
    for (int i = N - 1; i >= 0; i--) {
        SynthExam ex;
        SynthImage im;
        Err e;
        synth_sample_exam(&cfg, i / 4, &ex);
        par[i] = synth_render(&cfg, &ex, i % 4, &im, &e) ? 0 : image_hash(&im);
        synth_image_free(&im);
    }
    for (int i = 0; i < N; i++) assert_true(serial[i] == par[i]);
}

/* ------------------------------------------------------------------------------------------ */
/* density */

static void test_density_monotonic(void **st) {
    (void)st;
    double tissue_frac[4], image_frac[4];
    for (int d = 0; d < 4; d++) {
        SynthConfig cfg = small_cfg(100 + d);
        cfg.keep_maps = 1;
        cfg.priors.density_mismatch = 0;
        for (int k = 0; k < 4; k++) cfg.priors.density[k] = k == d;
        double ts = 0, is = 0;
        int n = 0;
        for (long p = 0; p < 12; p++) {
            SynthExam ex;
            synth_sample_exam(&cfg, p, &ex);
            for (int v = 0; v < 4; v += 1) {
                SynthImage im;
                render_ok(&cfg, &ex, v, &im);
                const SynthBreast *b = &ex.breast[im.side];
                assert_int_equal(b->density, d);
                size_t tissue = 0, dense = 0;
                for (size_t i = 0; i < (size_t)im.width * im.height; i++)
                    if (im.breast_mask[i] == 1) {
                        tissue++;
                        dense += im.gland[i] > 0.5f * b->g_max;
                    }
                ts += (double)dense / (double)tissue;
                is += synth_image_dense_fraction(&im);
                n++;
                synth_image_free(&im);
            }
        }
        tissue_frac[d] = ts / n;
        image_frac[d] = is / n;
        print_message("density %c: glandular area fraction %.3f (tissue map), %.3f (image)\n", "ABCD"[d], tissue_frac[d],
                      image_frac[d]);
    }
    for (int d = 1; d < 4; d++) {
        assert_true(tissue_frac[d] > tissue_frac[d - 1] + 0.08);
        assert_true(image_frac[d] > image_frac[d - 1] + 0.08);
    }
    /* each class sits in its BI-RADS area bin (A < 25 %, B 25-50, C 50-75, D > 75 %), give or
     * take the +-5 % soft overlap of the sampled targets and the ligaments */
    static const double lo[4] = {0.0, 0.25, 0.50, 0.75}, hi[4] = {0.25, 0.50, 0.75, 1.0};
    for (int d = 0; d < 4; d++) assert_true(tissue_frac[d] > lo[d] - 0.05 && tissue_frac[d] < hi[d] + 0.05);
}

/* ------------------------------------------------------------------------------------------ */
/* geometry */

static void test_masks_inside_breast_boxes_enclose(void **st) {
    (void)st;
    SynthConfig cfg = small_cfg(9);
    cfg.priors.n_findings[0] = 0;   /* every breast has 1-3 findings, of every type */
    for (int t = 0; t < SYNTH_N_FINDING_TYPES; t++) cfg.priors.finding_type[t] = 1;
    int n_les = 0, types[SYNTH_N_FINDING_TYPES] = {0};
    for (long p = 0; p < 20; p++) {
        SynthExam ex;
        synth_sample_exam(&cfg, p, &ex);
        for (int v = 0; v < 4; v++) {
            SynthImage im;
            render_ok(&cfg, &ex, v, &im);
            const SynthBreast *b = &ex.breast[im.side];
            assert_int_equal(im.n_lesions, b->n_findings);
            for (int l = 0; l < im.n_lesions; l++) {
                const SynthLesion *s = &im.lesions[l];
                const SynthFinding *f = &b->findings[s->finding];
                assert_true(s->x0 >= 0 && s->y0 >= 0 && s->x1 <= im.width && s->y1 <= im.height);
                assert_true(s->x1 > s->x0 && s->y1 > s->y0);
                int bw = s->x1 - s->x0, mx0 = s->x1, my0 = s->y1, mx1 = -1, my1 = -1, npx = 0;
                for (int y = s->y0; y < s->y1; y++)
                    for (int x = s->x0; x < s->x1; x++) {
                        if (!s->mask[(size_t)(y - s->y0) * bw + (x - s->x0)]) continue;
                        npx++;
                        /* every mask pixel is breast tissue (not air, not pectoral) */
                        assert_int_equal(im.breast_mask[(size_t)y * im.width + x], 1);
                        mx0 = x < mx0 ? x : mx0;
                        my0 = y < my0 ? y : my0;
                        mx1 = x > mx1 ? x : mx1;
                        my1 = y > my1 ? y : my1;
                    }
                assert_true(npx > 0);
                /* the box encloses the mask; tight for everything but calcifications (+1 mm) */
                assert_true(mx0 >= s->x0 && my0 >= s->y0 && mx1 < s->x1 && my1 < s->y1);
                if (f->type != SYNTH_CALC) {
                    assert_int_equal(mx0, s->x0);
                    assert_int_equal(my0, s->y0);
                    assert_int_equal(mx1 + 1, s->x1);
                    assert_int_equal(my1 + 1, s->y1);
                }
                n_les++;
                types[f->type]++;
            }
            synth_image_free(&im);
        }
    }
    print_message("%d lesions checked (mass %d, calc %d, AD %d, asym %d, LN %d)\n", n_les, types[0], types[1], types[2],
                  types[3], types[4]);
    assert_true(n_les > 100);
    for (int t = 0; t < SYNTH_N_FINDING_TYPES; t++) assert_true(types[t] > 0);
}

static void test_pectoral_and_orientation(void **st) {
    (void)st;
    SynthConfig cfg = small_cfg(11);
    for (long p = 0; p < 6; p++) {
        SynthExam ex;
        synth_sample_exam(&cfg, p, &ex);
        for (int v = 0; v < 4; v++) {
            SynthImage im;
            render_ok(&cfg, &ex, v, &im);
            size_t breast = 0, pect = 0, pect_top_chest = 0, left = 0, right = 0;
            for (int y = 0; y < im.height; y++)
                for (int x = 0; x < im.width; x++) {
                    uint8_t m = im.breast_mask[(size_t)y * im.width + x];
                    breast += m != 0;
                    pect += m == 2;
                    int chest_side = im.side == SYNTH_LEFT ? x < im.width / 2 : x >= im.width / 2;
                    pect_top_chest += m == 2 && chest_side && y < im.height / 2;
                    if (m) *(x < im.width / 2 ? &left : &right) += 1;
                }
            double pf = (double)pect / (double)breast;
            if (im.view == SYNTH_MLO) {
                /* a pectoral triangle in the upper corner on the chest-wall side */
                assert_true(pf > 0.03);
                assert_true((double)pect_top_chest > 0.8 * (double)pect);
            } else {
                assert_true(pf < 0.03);   /* at most a thin sliver in CC */
            }
            /* chest wall on the left for L, on the right for R */
            if (im.side == SYNTH_LEFT) assert_true(left > right);
            else assert_true(right > left);
            synth_image_free(&im);
        }
    }
}

/* A finding keeps its depth (distance from the chest wall along the nipple line) between the CC
 * and MLO views of the same breast: within 1 cm (doc B4). */
static void test_cc_mlo_consistent(void **st) {
    (void)st;
    SynthConfig cfg = small_cfg(13);
    cfg.priors.n_findings[0] = 0;
    int checked = 0;
    double worst = 0;
    for (long p = 0; p < 10; p++) {
        SynthExam ex;
        synth_sample_exam(&cfg, p, &ex);
        for (int side = 0; side < 2; side++) {
            SynthImage cc, mlo;
            render_ok(&cfg, &ex, 2 * side, &cc);
            render_ok(&cfg, &ex, 2 * side + 1, &mlo);
            for (int l = 0; l < cc.n_lesions; l++) {
                const SynthFinding *f = &ex.breast[side].findings[l];
                if (f->type == SYNTH_CALC && f->calc_dist == SYNTH_DIFFUSE) continue;
                float dcc = 0.5f * (cc.lesions[l].x0 + cc.lesions[l].x1), dml = 0.5f * (mlo.lesions[l].x0 + mlo.lesions[l].x1);
                if (side == SYNTH_RIGHT) {
                    dcc = cc.width - dcc;
                    dml = mlo.width - dml;
                }
                /* depth from the chest wall relative to the nipple depth of each view */
                float ncc = side ? cc.width - cc.nipple_x : cc.nipple_x, nml = side ? mlo.width - mlo.nipple_x : mlo.nipple_x;
                double diff_mm = fabs((double)(ncc - dcc) - (double)(nml - dml)) * cc.mm_per_px;
                worst = fmax(worst, diff_mm);
                checked++;
            }
            synth_image_free(&cc);
            synth_image_free(&mlo);
        }
    }
    print_message("%d findings: worst CC/MLO nipple-distance difference %.1f mm\n", checked, worst);
    assert_true(checked > 15);
    assert_true(worst < 10.0);   /* doc B4: same nipple distance within 1 cm */
}

/* ------------------------------------------------------------------------------------------ */
/* output range and the difficulty knob */

static void test_bit_range(void **st) {
    (void)st;
    for (int bits = 12; bits <= 16; bits += 2) {
        SynthConfig cfg = small_cfg(17);
        cfg.bits = bits;
        uint32_t maxv = (1u << bits) - 1u;
        for (int v = 0; v < 4; v++) {
            SynthExam ex;
            SynthImage im;
            synth_sample_exam(&cfg, v, &ex);
            render_ok(&cfg, &ex, v, &im);
            uint32_t mx = 0, mn_tissue = maxv;
            for (size_t i = 0; i < (size_t)im.width * im.height; i++) {
                uint32_t px = im.pixels[i];
                assert_true(px <= maxv);
                if (!im.breast_mask[i]) assert_int_equal(px, 0);   /* air is black */
                else mn_tissue = px < mn_tissue ? px : mn_tissue;
                mx = px > mx ? px : mx;
            }
            assert_int_equal(im.bits, bits);
            assert_true(mx > maxv / 2);          /* the range is used */
            assert_true(mn_tissue >= 1);         /* tissue is never confused with air */
            assert_true(im.level_dense > im.level_fat);
            synth_image_free(&im);
        }
    }
}

/* Subtlety and lesion_contrast scale the signal a finding adds. */
static void test_subtlety_scales_contrast(void **st) {
    (void)st;
    SynthConfig cfg = small_cfg(19);
    cfg.priors.n_findings[0] = 0;
    int compared = 0;
    for (long p = 0; p < 8; p++) {
        SynthExam ex;
        synth_sample_exam(&cfg, p, &ex);
        SynthBreast *b = &ex.breast[SYNTH_LEFT];
        if (b->findings[0].type == SYNTH_ASYMMETRY) continue;   /* tissue, measured differently */
        float c[2];
        for (int k = 0; k < 2; k++) {
            for (int i = 0; i < b->n_findings; i++) b->findings[i].subtlety = k ? 5 : 1;
            SynthImage im;
            render_ok(&cfg, &ex, 0, &im);
            c[k] = im.lesions[0].contrast;
            synth_image_free(&im);
        }
        assert_true(c[1] > 2.0f * c[0]);
        compared++;
    }
    assert_true(compared >= 4);
    /* no lesion signal at lesion_contrast 0 */
    cfg.lesion_contrast = 0;
    SynthExam ex;
    SynthImage im;
    synth_sample_exam(&cfg, 0, &ex);
    render_ok(&cfg, &ex, 0, &im);
    for (int l = 0; l < im.n_lesions; l++) assert_true(fabsf(im.lesions[l].contrast) < 1e-6f);
    synth_image_free(&im);
}

/* ------------------------------------------------------------------------------------------ */
/* labels */

static void check_freq(const char *what, const int *count, const float *prior, int k, int n) {
    double s = 0;
    for (int i = 0; i < k; i++) s += prior[i];
    for (int i = 0; i < k; i++) {
        double p = prior[i] / s, q = (double)count[i] / n, sd = sqrt(p * (1 - p) / n);
        if (fabs(q - p) > 4 * sd + 1e-9) fail_msg("%s[%d]: frequency %.4f, prior %.4f (n = %d)", what, i, q, p, n);
    }
}

static void test_label_priors(void **st) {
    (void)st;
    SynthConfig cfg = small_cfg(23);
    /* non-default priors, to show the configured ones are what is drawn */
    const float dens[4] = {0.005f, 0.095f, 0.765f, 0.135f};   /* VinDr-like */
    memcpy(cfg.priors.density, dens, sizeof dens);
    const float nf[4] = {0.3f, 0.4f, 0.2f, 0.1f};
    memcpy(cfg.priors.n_findings, nf, sizeof nf);
    const float sub[5] = {0.3f, 0.1f, 0.1f, 0.2f, 0.3f};
    memcpy(cfg.priors.subtlety, sub, sizeof sub);
    enum { N = 1500 };
    int d[4] = {0}, n_f[4] = {0}, ft[SYNTH_N_FINDING_TYPES] = {0}, sh[SYNTH_N_SHAPES] = {0}, mg[SYNTH_N_MARGINS] = {0};
    int cm[SYNTH_N_CALC_MORPHS] = {0}, cd[SYNTH_N_CALC_DISTS] = {0}, su[5] = {0}, spl[3] = {0};
    int nfind = 0, nmass = 0, ncalc = 0;
    for (long p = 0; p < N; p++) {
        SynthExam ex;
        synth_sample_exam(&cfg, p, &ex);
        d[ex.breast[SYNTH_LEFT].density]++;
        spl[ex.split]++;
        const SynthBreast *b = &ex.breast[SYNTH_LEFT];
        n_f[b->n_findings]++;
        for (int i = 0; i < b->n_findings; i++) {
            const SynthFinding *f = &b->findings[i];
            ft[f->type]++;
            su[f->subtlety - 1]++;
            nfind++;
            if (f->type == SYNTH_MASS) {
                sh[f->shape]++;
                mg[f->margin]++;
                nmass++;
            }
            if (f->type == SYNTH_CALC) {
                cm[f->calc_morph]++;
                cd[f->calc_dist]++;
                ncalc++;
            }
            /* breast assessment is the max over findings */
            assert_true(b->birads >= f->birads);
        }
        if (!b->n_findings) assert_int_equal(b->birads, SYNTH_BR1);
    }
    check_freq("density", d, cfg.priors.density, 4, N);
    check_freq("split", spl, cfg.priors.split, 3, N);
    check_freq("n_findings", n_f, cfg.priors.n_findings, 4, N);
    check_freq("finding_type", ft, cfg.priors.finding_type, SYNTH_N_FINDING_TYPES, nfind);
    check_freq("subtlety", su, cfg.priors.subtlety, 5, nfind);
    check_freq("mass_shape", sh, cfg.priors.mass_shape, SYNTH_N_SHAPES, nmass);
    check_freq("mass_margin", mg, cfg.priors.mass_margin, SYNTH_N_MARGINS, nmass);
    check_freq("calc_morph", cm, cfg.priors.calc_morph, SYNTH_N_CALC_MORPHS, ncalc);
    check_freq("calc_dist", cd, cfg.priors.calc_dist, SYNTH_N_CALC_DISTS, ncalc);
    print_message("%d findings (%d masses, %d calcifications) over %d breasts\n", nfind, nmass, ncalc, N);
}

/* Pathology follows the BI-RADS category's malignancy rate, and the category follows the
 * descriptors: spiculated masses are mostly malignant, circumscribed round/oval ones rarely. */
static void test_malignancy_tied_to_features(void **st) {
    (void)st;
    SynthConfig cfg = small_cfg(29);
    cfg.priors.n_findings[0] = 0;
    int n_cat[SYNTH_N_BIRADS] = {0}, m_cat[SYNTH_N_BIRADS] = {0};
    int n_spic = 0, m_spic = 0, n_circ = 0, m_circ = 0, n_flb = 0, m_flb = 0, n_ben_calc = 0, m_ben_calc = 0;
    for (long p = 0; p < 4000; p++) {
        SynthExam ex;
        synth_sample_exam(&cfg, p, &ex);
        for (int s = 0; s < 2; s++) {
            const SynthBreast *b = &ex.breast[s];
            int any_mal = 0;
            for (int i = 0; i < b->n_findings; i++) {
                const SynthFinding *f = &b->findings[i];
                assert_int_equal(f->birads, synth_finding_birads(f));
                n_cat[f->birads]++;
                m_cat[f->birads] += f->malignant;
                any_mal |= f->malignant;
                if (f->type == SYNTH_MASS && f->margin == SYNTH_SPICULATED) {
                    n_spic++;
                    m_spic += f->malignant;
                }
                if (f->type == SYNTH_MASS && f->margin == SYNTH_CIRCUMSCRIBED &&
                    (f->shape == SYNTH_ROUND || f->shape == SYNTH_OVAL)) {
                    n_circ++;
                    m_circ += f->malignant;
                }
                if (f->type == SYNTH_CALC && f->calc_morph == SYNTH_CALC_FINE_LINEAR) {
                    n_flb++;
                    m_flb += f->malignant;
                }
                if (f->type == SYNTH_CALC && (f->calc_morph == SYNTH_CALC_ROUND || f->calc_morph == SYNTH_CALC_RODLIKE)) {
                    n_ben_calc++;
                    m_ben_calc += f->malignant;
                }
            }
            assert_int_equal(b->pathology, any_mal ? SYNTH_MALIGNANT : (b->n_findings ? SYNTH_BENIGN : SYNTH_NORMAL));
        }
    }
    for (int c = SYNTH_BR2; c < SYNTH_N_BIRADS; c++) {
        double p = cfg.priors.p_malignant[c], q = (double)m_cat[c] / n_cat[c];
        double sd = sqrt(p * (1 - p) / n_cat[c]);
        print_message("BI-RADS %-2s: %5d findings, malignant %.3f (configured %.2f)\n", synth_birads_name(c), n_cat[c], q, p);
        assert_true(n_cat[c] > 100);
        assert_true(fabs(q - p) <= 4 * sd + 1e-9);
    }
    double ps = (double)m_spic / n_spic, pc = (double)m_circ / n_circ, pf = (double)m_flb / n_flb;
    print_message("malignant: spiculated mass %.3f, circumscribed round/oval %.3f, fine-linear calcs %.3f, round/rod calcs %d/%d\n",
                  ps, pc, pf, m_ben_calc, n_ben_calc);
    assert_true(ps > 0.7 && pc < 0.05 && pf > 0.6);
    assert_int_equal(m_ben_calc, 0);
}

/* acq_spread: 0 gives every image the same display curve, a wider spread varies it more than the
 * default; the fat level of the VOI is where it shows (level_fat = the curve at fat-only tissue) */
static double level_fat_sd(float spread) {
    SynthConfig cfg = small_cfg(11);
    cfg.acq_spread = spread;
    double s = 0, s2 = 0;
    int n = 0;
    for (long p = 0; p < 3; p++) {
        SynthExam ex;
        synth_sample_exam(&cfg, p, &ex);
        for (int v = 0; v < 4; v++) {
            SynthImage im;
            render_ok(&cfg, &ex, v, &im);
            s += im.level_fat;
            s2 += (double)im.level_fat * im.level_fat;
            n++;
            synth_image_free(&im);
        }
    }
    double m = s / n;
    return sqrt(fmax(0.0, s2 / n - m * m));
}

static void test_acquisition_spread(void **st) {
    (void)st;
    double sd0 = level_fat_sd(0.0f), sd1 = level_fat_sd(1.0f), sd4 = level_fat_sd(4.0f);
    print_message("level_fat sd over 12 images: spread 0 %.1f, 1 %.1f, 4 %.1f\n", sd0, sd1, sd4);
    assert_true(sd0 < 0.5);
    assert_true(sd1 > 5.0);
    assert_true(sd4 > 2.5 * sd1);
}

static void test_config_errors(void **st) {
    (void)st;
    SynthConfig cfg = small_cfg(1);
    Err e = {{0}};
    assert_int_equal(synth_config_check(&cfg, &e), 0);
    cfg.bits = 8;
    assert_int_not_equal(synth_config_check(&cfg, &e), 0);
    assert_non_null(strstr(e.msg, "bits"));
    cfg = small_cfg(1);
    cfg.priors.mass_margin[2] = -1;
    assert_int_not_equal(synth_config_check(&cfg, &e), 0);
    assert_non_null(strstr(e.msg, "priors.mass_margin[2]"));
    cfg = small_cfg(1);
    for (int i = 0; i < 4; i++) cfg.priors.density[i] = 0;
    assert_int_not_equal(synth_config_check(&cfg, &e), 0);
    assert_non_null(strstr(e.msg, "priors.density"));
    cfg = small_cfg(1);
    cfg.acq_spread = 9;
    assert_int_not_equal(synth_config_check(&cfg, &e), 0);
    assert_non_null(strstr(e.msg, "acq_spread"));
    cfg = small_cfg(1);
    assert_int_not_equal(synth_write_dataset(&cfg, "/tmp", 0, &e), 0);
    assert_non_null(strstr(e.msg, "format"));
    int f = 0;
    assert_int_equal(synth_parse_formats("vindr,vqa", &f, &e), 0);
    assert_int_equal(f, SYNTH_FMT_VINDR | SYNTH_FMT_VQA);
    assert_int_equal(synth_parse_formats("all", &f, &e), 0);
    assert_int_equal(f, SYNTH_FMT_ALL);
    assert_int_not_equal(synth_parse_formats("vindr,inbreast", &f, &e), 0);
    assert_non_null(strstr(e.msg, "'inbreast'"));
}

/* ------------------------------------------------------------------------------------------ */
/* writers */

static char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)sz + 1);
    size_t got = fread(b, 1, (size_t)sz, f);
    fclose(f);
    b[got] = 0;
    if (n) *n = got;
    return b;
}

static void first_line(const char *path, char *out, size_t n) {
    char *b = slurp(path, NULL);
    assert_non_null(b);
    size_t l = strcspn(b, "\n");
    snprintf(out, n, "%.*s", (int)l, b);
    free(b);
}

static int rm_rf(const char *path) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    return system(cmd);
}

/* every regular file under dir, hashed in sorted-name order */
static uint64_t tree_hash(const char *dir, uint64_t h, int *files) {
    DIR *d = opendir(dir);
    if (!d) return h;
    char *names[4096];
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) && n < 4096)
        if (de->d_name[0] != '.') names[n++] = strdup(de->d_name);
    closedir(d);
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && strcmp(names[j], names[j - 1]) < 0; j--) {
            char *t = names[j];
            names[j] = names[j - 1];
            names[j - 1] = t;
        }
    for (int i = 0; i < n; i++) {
        char p[2048];
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        struct stat s;
        stat(p, &s);
        h = fnv(names[i], strlen(names[i]), h);
        if (S_ISDIR(s.st_mode)) h = tree_hash(p, h, files);
        else {
            size_t len = 0;
            char *b = slurp(p, &len);
            h = fnv(b, len, h);
            free(b);
            (*files)++;
        }
        free(names[i]);
    }
    return h;
}

static void test_dataset_thread_count_invariant(void **st) {
    (void)st;
    char d1[256], d2[256];
    snprintf(d1, sizeof d1, "/tmp/versa_synth_t1_%d", (int)getpid());
    snprintf(d2, sizeof d2, "/tmp/versa_synth_t2_%d", (int)getpid());
    SynthConfig cfg = small_cfg(31);
    cfg.n_patients = 4;
    cfg.priors.n_findings[0] = 0.3f;
    Err e = {{0}};
    cfg.nthreads = 1;
    if (synth_write_dataset(&cfg, d1, SYNTH_FMT_ALL, &e)) fail_msg("%s", e.msg);
    cfg.nthreads = 2;
    if (synth_write_dataset(&cfg, d2, SYNTH_FMT_ALL, &e)) fail_msg("%s", e.msg);
    int f1 = 0, f2 = 0;
    uint64_t h1 = tree_hash(d1, 0xcbf29ce484222325ull, &f1), h2 = tree_hash(d2, 0xcbf29ce484222325ull, &f2);
    print_message("%d files, tree hash %016llx (1 thread) vs %016llx (2 threads)\n", f1, (unsigned long long)h1,
                  (unsigned long long)h2);
    assert_int_equal(f1, f2);
    assert_true(f1 > 16 + 16 + 5);   /* VinDr DICOMs + VQA PNGs + label files, plus CBIS */
    assert_true(h1 == h2);
    rm_rf(d1);
    rm_rf(d2);
}

static void test_writers_formats_round_trip(void **st) {
    (void)st;
    char dir[256], p[512];
    snprintf(dir, sizeof dir, "/tmp/versa_synth_w_%d", (int)getpid());
    SynthConfig cfg = small_cfg(37);
    cfg.n_patients = 5;
    cfg.priors.n_findings[0] = 0.2f;
    cfg.priors.monochrome1 = 0.5f;
    Err e = {{0}};
    if (synth_write_dataset(&cfg, dir, SYNTH_FMT_ALL, &e)) fail_msg("%s", e.msg);

    /* exact headers of the real files */
    char line[1024];
    snprintf(p, sizeof p, "%s/vindr-mammo/breast-level_annotations.csv", dir);
    first_line(p, line, sizeof line);
    assert_string_equal(line, "study_id,series_id,image_id,laterality,view_position,height,width,breast_birads,breast_density,split");
    snprintf(p, sizeof p, "%s/vindr-mammo/finding_annotations.csv", dir);
    first_line(p, line, sizeof line);
    assert_string_equal(line, "study_id,series_id,image_id,laterality,view_position,height,width,breast_birads,breast_density,"
                              "finding_categories,finding_birads,xmin,ymin,xmax,ymax,split");
    const char *mass_h = "patient_id,breast_density,left or right breast,image view,abnormality id,abnormality type,"
                         "mass shape,mass margins,assessment,pathology,subtlety,image file path,cropped image file path,"
                         "ROI mask file path";
    const char *calc_h = "patient_id,breast density,left or right breast,image view,abnormality id,abnormality type,"
                         "calc type,calc distribution,assessment,pathology,subtlety,image file path,cropped image file path,"
                         "ROI mask file path";
    const char *tabs[4] = {"mass_case_description_train_set.csv", "mass_case_description_test_set.csv",
                           "calc_case_description_train_set.csv", "calc_case_description_test_set.csv"};
    for (int t = 0; t < 4; t++) {
        snprintf(p, sizeof p, "%s/cbis-ddsm/%s", dir, tabs[t]);
        first_line(p, line, sizeof line);
        assert_string_equal(line, t < 2 ? mass_h : calc_h);
    }

    /* labels read back through the CSV reader; DICOMs read back give the rendered pixels */
    Csv bl = {0};
    snprintf(p, sizeof p, "%s/vindr-mammo/breast-level_annotations.csv", dir);
    if (csv_read(p, &bl, &e)) fail_msg("%s", e.msg);
    assert_int_equal(bl.nrows, 4 * cfg.n_patients);
    int n_mono1 = 0;
    for (size_t i = 0; i < bl.nrows; i++) {
        SynthExam ex;
        synth_sample_exam(&cfg, (long)i / 4, &ex);
        int vi = (int)i % 4;
        const SynthBreast *b = &ex.breast[vi / 2];
        char want[32];
        snprintf(want, sizeof want, "BI-RADS %d", synth_birads_number(b->birads));
        assert_string_equal(csv_get_by(&bl, i, "breast_birads"), want);
        snprintf(want, sizeof want, "DENSITY %c", "ABCD"[b->density]);
        assert_string_equal(csv_get_by(&bl, i, "breast_density"), want);
        assert_string_equal(csv_get_by(&bl, i, "laterality"), vi / 2 ? "R" : "L");
        assert_string_equal(csv_get_by(&bl, i, "view_position"), vi % 2 ? "MLO" : "CC");
        assert_string_equal(csv_get_by(&bl, i, "split"), ex.split == SYNTH_TEST ? "test" : "training");
        snprintf(p, sizeof p, "%s/vindr-mammo/images/%s/%s.dicom", dir, csv_get_by(&bl, i, "study_id"),
                 csv_get_by(&bl, i, "image_id"));
        Dicom dc = {0};
        if (dicom_read(p, &dc, &e)) fail_msg("%s", e.msg);
        SynthImage im;
        render_ok(&cfg, &ex, vi, &im);
        assert_int_equal(dc.info.rows, im.height);
        assert_int_equal(dc.info.cols, im.width);
        assert_int_equal(dc.info.bits_stored, cfg.bits);
        assert_int_equal(dc.info.laterality, vi / 2 ? 'R' : 'L');
        assert_string_equal(dc.info.view, vi % 2 ? "MLO" : "CC");
        int m1 = !strcmp(dc.info.photometric, "MONOCHROME1");
        n_mono1 += m1;
        int maxv = (1 << cfg.bits) - 1;
        for (size_t k = 0; k < (size_t)im.width * im.height; k++) {
            int want_px = m1 ? maxv - im.pixels[k] : im.pixels[k];
            if (dc.pixels[k] != want_px) fail_msg("%s: pixel %zu is %d, rendered %d", p, k, dc.pixels[k], want_px);
        }
        /* rendering the DICOM (VOI window, MONOCHROME1 inverted) keeps air dark, tissue bright */
        Image r16 = {0};
        if (dicom_render(&dc, NULL, &r16, &e)) fail_msg("%s", e.msg);
        double air = 0, tis = 0;
        size_t na = 0, nt = 0;
        for (size_t k = 0; k < (size_t)im.width * im.height; k++) {
            if (im.breast_mask[k]) tis += r16.px[k], nt++;
            else air += r16.px[k], na++;
        }
        assert_true(na > 0 && nt > 0);
        assert_true(air / na < 0.02 * image_maxval(&r16));
        assert_true(tis / nt > air / na + 0.1 * image_maxval(&r16));
        image_free(&r16);
        dicom_free(&dc);
        synth_image_free(&im);
    }
    csv_free(&bl);
    print_message("%d of %d VinDr DICOMs written MONOCHROME1\n", n_mono1, 4 * (int)cfg.n_patients);
    assert_true(n_mono1 > 0 && n_mono1 < 4 * cfg.n_patients);

    /* the finding rows: one per lesion box, "No Finding" rows with empty boxes */
    Csv fa = {0};
    snprintf(p, sizeof p, "%s/vindr-mammo/finding_annotations.csv", dir);
    if (csv_read(p, &fa, &e)) fail_msg("%s", e.msg);
    int boxes = 0, nofind = 0;
    for (size_t i = 0; i < fa.nrows; i++) {
        const char *cat = csv_get_by(&fa, i, "finding_categories");
        assert_true(cat[0] == '[' && cat[1] == '\'');
        if (!strcmp(cat, "['No Finding']")) {
            assert_string_equal(csv_get_by(&fa, i, "xmin"), "");
            nofind++;
        } else {
            boxes++;
            assert_true(atof(csv_get_by(&fa, i, "xmax")) > atof(csv_get_by(&fa, i, "xmin")));
        }
    }
    csv_free(&fa);
    assert_true(boxes > 0 && nofind > 0);

    /* the real converters read both layouts */
    ConvertOpts o = convert_opts_default();
    ConvertStats cs;
    char root[512], out[512];
    o.width = 96;
    o.height = 128;
    /* no breast-region crop, so every written box must come back (the crop is preprocess.c's
     * business and is tested there) */
    o.prep.crop = 0;
    snprintf(root, sizeof root, "%s/vindr-mammo", dir);
    snprintf(out, sizeof out, "%s/vindr.h5", dir);
    o.raw_root = root;
    o.out_path = out;
    if (convert_vindr(&o, &cs, &e)) fail_msg("convert_vindr: %s", e.msg);
    assert_int_equal(cs.n_written, 4 * cfg.n_patients);
    assert_int_equal(cs.n_boxes, boxes);
    snprintf(root, sizeof root, "%s/cbis-ddsm", dir);
    snprintf(out, sizeof out, "%s/cbis.h5", dir);
    o.raw_root = root;
    o.out_path = out;
    if (convert_cbis(&o, &cs, &e)) fail_msg("convert_cbis: %s", e.msg);
    print_message("converters: VinDr %d images / %d boxes; CBIS %ld images, %ld masks\n", 4 * (int)cfg.n_patients, boxes,
                  cs.n_written, cs.n_masks);
    assert_true(cs.n_written > 0);
    assert_int_equal(cs.n_masks, cs.n_written);   /* every CBIS image has its ROI mask(s) */

    /* MammoVQA JSON: 7 questions per image over the three files */
    int items = 0, abn = 0;
    const char *js[3] = {"Train", "Eval", "Bench"};
    for (int s = 0; s < 3; s++) {
        snprintf(p, sizeof p, "%s/mammovqa/MammoVQA-Image-%s.json", dir, js[s]);
        char *b = slurp(p, NULL);
        assert_non_null(b);
        assert_true(b[0] == '{');
        for (char *q = b; (q = strstr(q, "\"Question topic\"")); q++) items++;
        for (char *q = b; (q = strstr(q, "\"multiple choice\"")); q++) abn++;
        free(b);
    }
    assert_int_equal(items, 7 * 4 * cfg.n_patients);
    assert_int_equal(abn, 4 * cfg.n_patients);
    rm_rf(dir);
}

static void test_contact_sheet(void **st) {
    (void)st;
    char p[256];
    snprintf(p, sizeof p, "/tmp/versa_synth_sheet_%d.png", (int)getpid());
    SynthConfig cfg = small_cfg(41);
    cfg.priors.n_findings[0] = 0.0f;   /* every breast has findings: boxes and outlines to see */
    Err e = {{0}};
    if (synth_contact_sheet(&cfg, 8, 4, 96, p, &e)) fail_msg("%s", e.msg);
    int w, h, ch;
    uint8_t *rgb = stbi_load(p, &w, &h, &ch, 3);   /* (h, w, 3) */
    assert_non_null(rgb);
    assert_int_equal(w, 4 * (96 + 4) + 4);
    assert_int_equal(h, 2 * (120 + 4) + 4);
    /* gray mammogram pixels (tissue), box colours (red malignant / green benign), yellow outlines */
    long gray = 0, box = 0, yellow = 0;
    for (long i = 0; i < (long)w * h; i++) {
        int r = rgb[3 * i], g = rgb[3 * i + 1], b = rgb[3 * i + 2];
        if (r == g && g == b && r > 60) gray++;
        if ((r == 255 && g == 40 && b == 40) || (r == 40 && g == 230 && b == 60)) box++;
        if (r == 255 && g == 230 && b == 0) yellow++;
    }
    free(rgb);
    print_message("contact sheet %dx%d: %ld tissue, %ld box, %ld outline pixels\n", w, h, gray, box, yellow);
    assert_true(gray > (long)w * h / 8);   /* breasts fill a good part of the tiles */
    assert_true(box > 8 * 20);             /* at least one box of 4 x 5 px per image */
    assert_true(yellow > 8 * 4);
    unlink(p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fft_matches_dft),
        cmocka_unit_test(test_powerlaw_slope),
        cmocka_unit_test(test_same_seed_same_output),
        cmocka_unit_test(test_parallel_render_identical),
        cmocka_unit_test(test_density_monotonic),
        cmocka_unit_test(test_masks_inside_breast_boxes_enclose),
        cmocka_unit_test(test_pectoral_and_orientation),
        cmocka_unit_test(test_cc_mlo_consistent),
        cmocka_unit_test(test_bit_range),
        cmocka_unit_test(test_subtlety_scales_contrast),
        cmocka_unit_test(test_label_priors),
        cmocka_unit_test(test_malignancy_tied_to_features),
        cmocka_unit_test(test_acquisition_spread),
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_dataset_thread_count_invariant),
        cmocka_unit_test(test_writers_formats_round_trip),
        cmocka_unit_test(test_contact_sheet),
    };
    return RUN_GROUP(tests);
}
