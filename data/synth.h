/*
 * data/synth.h — synthetic mammograms with labels, and writers for the public datasets' on-disk
 * formats (VinDr-Mammo, CBIS-DDSM, MammoVQA), so tests, the demo and the synthetic benchmark run
 * the real converters on data that looks like real data.
 *
 * Model in one paragraph (parameters from shared/docs/mammo-data.md, part B):
 *   A patient has two breasts; each breast has a BI-RADS density (A-D), a target area percent
 *   density, a compressed thickness, an outline (superellipse + smooth perturbation), a texture
 *   seed and 0-3 findings with a 3-D position (depth from the chest wall, medio-lateral and
 *   supero-inferior offsets).  Each breast is rendered in CC and MLO: the outline per view (MLO
 *   with the pectoral muscle and the axillary tail), a fibroglandular map from a 1/f^beta
 *   power-law field (own radix-2 FFT, warped to converge on the nipple) thresholded to the target
 *   dense-area fraction, fat compartments (Cooper's ligaments), skin and nipple, lesions at the
 *   projected positions of their 3-D location; then Beer-Lambert projection
 *   (L = sum mu_i t_i), detector blur, Poisson-like quantum noise, thickness equalisation and a
 *   VOI curve into a 12-16 bit MONOCHROME2 image.  Labels (density, BI-RADS, pathology, finding
 *   descriptors, subtlety) are drawn first and need no rendering; pathology is Bernoulli with the
 *   malignancy rate of the finding's BI-RADS category, which follows from its descriptors.
 *
 * Images are indexed 4*patient + {0: L-CC, 1: L-MLO, 2: R-CC, 3: R-MLO}.  Everything drawn for
 * patient p comes from rng_fork(seed, p), everything drawn for image i from
 * rng_fork(seed, 2^40 + i), and a finding's shape from its own seed (drawn with the labels), so
 * the output does not depend on the thread count or on which images are rendered.
 *
 * Typical use:
 *   SynthConfig cfg; synth_config_default(&cfg); cfg.n_patients = 500;
 *   synth_write_dataset(&cfg, "out", SYNTH_FMT_ALL, &e);          // files on disk, or
 *   SynthExam ex; synth_sample_exam(&cfg, p, &ex);                  // labels only
 *   SynthImage im; synth_render(&cfg, &ex, 1, &im, &e); ...; synth_image_free(&im);
 *
 * Orientation: images are written as acquired and hung: a left breast has its chest wall on the
 * image's left edge (nipple pointing right), a right breast the mirror image.  CC views put the
 * lateral side up, MLO views the axilla up.
 */
#ifndef VERSA_SYNTH_H
#define VERSA_SYNTH_H

#include <stdint.h>
#include "engine/engine.h"

/* ---- vocabularies ---------------------------------------------------------------------- */

enum { SYNTH_CC = 0, SYNTH_MLO = 1 };
enum { SYNTH_LEFT = 0, SYNTH_RIGHT = 1 };
enum { SYNTH_TRAIN = 0, SYNTH_VAL = 1, SYNTH_TEST = 2 };
enum { SYNTH_NORMAL = 0, SYNTH_BENIGN = 1, SYNTH_MALIGNANT = 2 };   /* breast/image pathology */

typedef enum SynthFindingType {
    SYNTH_MASS = 0,
    SYNTH_CALC,            /* calcification group (cluster, line, segment, region, diffuse) */
    SYNTH_DISTORTION,      /* architectural distortion without a central mass */
    SYNTH_ASYMMETRY,       /* focal asymmetry */
    SYNTH_LYMPH_NODE,      /* intramammary lymph node (typically benign) */
    SYNTH_N_FINDING_TYPES
} SynthFindingType;

typedef enum { SYNTH_ROUND = 0, SYNTH_OVAL, SYNTH_LOBULATED, SYNTH_IRREGULAR,
               SYNTH_N_SHAPES } SynthMassShape;
typedef enum { SYNTH_CIRCUMSCRIBED = 0, SYNTH_OBSCURED, SYNTH_MICROLOBULATED, SYNTH_ILL_DEFINED,
               SYNTH_SPICULATED, SYNTH_N_MARGINS } SynthMassMargin;
typedef enum { SYNTH_CALC_ROUND = 0,      /* round and regular: typically benign */
               SYNTH_CALC_RODLIKE,        /* large rod-like: typically benign */
               SYNTH_CALC_PUNCTATE, SYNTH_CALC_AMORPHOUS, SYNTH_CALC_COARSE,
               SYNTH_CALC_PLEOMORPHIC, SYNTH_CALC_FINE_LINEAR,  /* fine linear branching */
               SYNTH_N_CALC_MORPHS } SynthCalcMorph;
typedef enum { SYNTH_CLUSTERED = 0, SYNTH_LINEAR, SYNTH_SEGMENTAL, SYNTH_REGIONAL,
               SYNTH_DIFFUSE, SYNTH_N_CALC_DISTS } SynthCalcDist;

/* BI-RADS assessment categories with the 4A/4B/4C split of the 5th edition. */
typedef enum { SYNTH_BR1 = 0, SYNTH_BR2, SYNTH_BR3, SYNTH_BR4A, SYNTH_BR4B, SYNTH_BR4C,
               SYNTH_BR5, SYNTH_N_BIRADS } SynthBirads;

#define SYNTH_MAX_FINDINGS 3          /* per breast */

/* ---- configuration ---------------------------------------------------------------------- */

/* Label priors.  Every array is a distribution (normalised when drawn).  Defaults: doc B8
 * (screening density mix, enriched finding counts, finding types mass:calc:asym:AD:LN =
 * .45:.35:.10:.05:.05) and B7 (malignancy by BI-RADS category). */
typedef struct SynthPriors {
    float density[4];                          /* A, B, C, D */
    float density_mismatch;                    /* P(the two breasts differ by one category) */
    float n_findings[SYNTH_MAX_FINDINGS + 1];  /* per breast: 0, 1, 2, 3 */
    float finding_type[SYNTH_N_FINDING_TYPES];
    float mass_shape[SYNTH_N_SHAPES];
    float mass_margin[SYNTH_N_MARGINS];
    float calc_morph[SYNTH_N_CALC_MORPHS];
    float calc_dist[SYNTH_N_CALC_DISTS];
    float subtlety[5];                         /* 1 (very subtle) .. 5 (obvious) */
    float p_malignant[SYNTH_N_BIRADS];         /* by category; BR1 unused */
    float split[3];                            /* train, val, test (per patient) */
    float monochrome1;                         /* fraction of DICOMs written MONOCHROME1 */
} SynthPriors;

typedef void (*SynthProgressFn)(void *ud, long done, long total);

typedef struct SynthConfig {
    uint64_t seed;
    long n_patients;          /* images = 4 * n_patients */
    int width, height;        /* output pixels (default 416 x 512) */
    float fov_mm;             /* physical height of the image (default 240 mm) */
    int bits;                 /* bits stored, 12..16 (default 12) */
    float noise;              /* relative quantum noise sigma/I in the breast for a 0.1 mm
                                 detector pixel (default 0.03); scaled down for larger pixels */
    float blur_px;            /* detector blur sigma in output pixels (default 0.6) */
    float lesion_contrast;    /* global lesion contrast factor (difficulty knob, default 1) */
    float acq_spread;         /* spread of the per-image display processing (default 1: VOI gain
                                 0.9-1.1, offset +-0.06 of the fat-to-dense range); X widens both
                                 X-fold and adds a display gamma exp(+-0.15 (X - 1)), as between
                                 vendors whose processed images differ in brightness and contrast */
    float calc_scale;         /* calcification radius factor; 0 (default) = auto: sqrt(pixel /
                                 0.15 mm) in [1, 2], so clusters stay visible at 512 px */
    SynthPriors priors;
    int keep_maps;            /* keep the glandular-fraction map in SynthImage.gland */
    int nthreads;             /* 0: OpenMP default */
    SynthProgressFn progress; /* NULL: a progress line on stderr */
    void *progress_ud;
    int quiet;                /* no stderr progress line */
} SynthConfig;

void synth_config_default(SynthConfig *cfg);
void synth_priors_default(SynthPriors *p);
/* Checks sizes, bits and priors; one line in e naming the field. */
int synth_config_check(const SynthConfig *cfg, Err *e);

/* ---- labels (drawn without rendering) --------------------------------------------------- */

typedef struct SynthFinding {
    int type;                 /* SynthFindingType */
    int shape, margin;        /* masses (and lymph nodes); -1 otherwise */
    int calc_morph, calc_dist;/* calcifications; -1 otherwise */
    int birads;               /* SynthBirads category of this finding */
    int malignant;            /* 0 / 1 */
    int subtlety;             /* 1..5 (CBIS-DDSM convention: 1 = most subtle) */
    float size_mm;            /* mass diameter, cluster extent, distortion or asymmetry size */
    int n_calcs;              /* number of particles (calcifications) */
    /* 3-D position: depth 0 = chest wall .. 1 = nipple (fraction of the nipple line);
     * lat > 0 lateral, sup > 0 superior, both in -1..1 of the local half-width */
    float depth, lat, sup;
    uint64_t seed;            /* contour/particle layout, shared by the CC and MLO renderings */
} SynthFinding;

typedef struct SynthBreast {
    int density;              /* 0..3 = A..D */
    float pd;                 /* target dense-area fraction inside the breast, 0..1 */
    float thickness_mm;       /* compressed thickness */
    float pnl_mm;             /* posterior nipple line length (chest wall to nipple, CC) */
    float half_width_mm[2];   /* chest-wall half extents: [0] lateral/superior, [1] medial/inferior */
    float shape_n;            /* superellipse exponent of the outline */
    float beta;               /* power-law exponent of the parenchymal texture */
    float g_max;              /* glandular share of the thickness where tissue is dense */
    uint64_t texture_seed;    /* low-frequency texture shared by CC and MLO */
    int birads;               /* breast assessment: max over findings; BR1 if none */
    int pathology;            /* SYNTH_NORMAL / BENIGN / MALIGNANT */
    int n_findings;
    SynthFinding findings[SYNTH_MAX_FINDINGS];
} SynthBreast;

typedef struct SynthExam {
    long patient;
    int split;                /* SYNTH_TRAIN / VAL / TEST */
    int age;
    int cc_pectoral;          /* bitmask by side: CC shows a sliver of pectoral muscle */
    SynthBreast breast[2];    /* [SYNTH_LEFT], [SYNTH_RIGHT] */
} SynthExam;

void synth_sample_exam(const SynthConfig *cfg, long patient, SynthExam *ex);

/* BI-RADS category from descriptors (doc B7) — what synth_sample_exam uses. */
int synth_finding_birads(const SynthFinding *f);

/* ---- rendered images -------------------------------------------------------------------- */

typedef struct SynthLesion {
    int finding;              /* index into the breast's findings */
    int x0, y0, x1, y1;       /* box in pixels, [x0, x1) x [y0, y1); tight around the mask
                                 (spicules included; calcifications + 1 mm margin) */
    uint8_t *mask;            /* (y1-y0, x1-x0), 1 = lesion; inside the breast mask */
    float contrast;           /* mean log attenuation the lesion adds inside its mask (signal
                                 strength; 0 for a focal asymmetry, which is made of tissue) */
} SynthLesion;

typedef struct SynthImage {
    int width, height;
    int side, view;           /* SYNTH_LEFT/RIGHT, SYNTH_CC/MLO */
    int bits;                 /* bits stored; pixels in [0, 2^bits - 1] */
    uint16_t *pixels;         /* (H, W) MONOCHROME2: dense = bright, air = 0 */
    uint8_t *breast_mask;     /* (H, W) 0 air, 1 breast tissue, 2 pectoral muscle */
    float *gland;             /* (H, W) glandular fraction map, only with cfg->keep_maps */
    float mm_per_px;
    float nipple_x, nipple_y; /* pixel position of the nipple */
    uint16_t level_fat, level_dense; /* nominal output of fatty / fully dense tissue */
    int n_lesions;
    SynthLesion lesions[SYNTH_MAX_FINDINGS];
} SynthImage;

/* Renders view 0..3 (L-CC, L-MLO, R-CC, R-MLO) of an exam.  Allocates img's buffers. */
int synth_render(const SynthConfig *cfg, const SynthExam *ex, int view_index, SynthImage *img,
                 Err *e);
void synth_image_free(SynthImage *img);
/* Fraction of breast-tissue pixels brighter than the midpoint of level_fat and level_dense. */
float synth_image_dense_fraction(const SynthImage *img);

/* ---- names (exact strings of the datasets) ---------------------------------------------- */
const char *synth_view_name(int view);                 /* "CC", "MLO" */
const char *synth_birads_name(int birads);             /* "1", "2", "3", "4A", "4B", "4C", "5" */
int synth_birads_number(int birads);                   /* 1..5 (4A/B/C -> 4) */
const char *synth_finding_name(int type);              /* VinDr category, e.g. "Mass" */
const char *synth_shape_name(int shape);               /* CBIS, e.g. "IRREGULAR" */
const char *synth_margin_name(int margin);             /* CBIS, e.g. "ILL_DEFINED" */
const char *synth_calc_morph_name(int morph);          /* CBIS, e.g. "FINE_LINEAR_BRANCHING" */
const char *synth_calc_dist_name(int dist);            /* CBIS, e.g. "CLUSTERED" */

/* ---- datasets --------------------------------------------------------------------------- */

enum {
    SYNTH_FMT_VINDR = 1,      /* images/<study>/<image>.dicom + breast-level/finding CSVs */
    SYNTH_FMT_CBIS = 2,       /* CBIS-DDSM/<case folders>/.../1-1.dcm + 4 case-description CSVs */
    SYNTH_FMT_VQA = 4,        /* images/<id>.png + MammoVQA-Image-{Train,Eval,Bench}.json */
    SYNTH_FMT_ALL = 7
};

/* "vindr", "cbis", "vqa", "all" or a comma list ("vindr,cbis") -> SYNTH_FMT_* bitmask (for the
 * CLI); an unknown name gives "synth: unknown format 'x' (vindr, cbis, vqa, all)". */
int synth_parse_formats(const char *s, int *formats, Err *e);

/* Generates cfg->n_patients exams (in parallel over images) and writes them under out_dir in
 * the formats of the `formats` bitmask.  Returns nonzero with one line in e on an I/O error. */
int synth_write_dataset(const SynthConfig *cfg, const char *out_dir, int formats, Err *e);

/* A PNG grid of the first n images (8-bit RGB): each image scaled to `tile_w` pixels wide,
 * lesion boxes drawn (red malignant, green benign) and mask outlines in yellow. */
int synth_contact_sheet(const SynthConfig *cfg, int n, int cols, int tile_w, const char *png_path,
                        Err *e);

#endif
