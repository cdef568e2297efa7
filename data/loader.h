/*
 * data/loader.h — the batch loader: worker threads with prefetch, per-epoch shuffling from the
 * seed, sharding by (rank, world), a resumable position, and two output kinds:
 *   LOADER_MULTICROP  DINO/DINOv2 crops (2 global + N local) + iBOT masks, for pretraining;
 *   LOADER_PLAIN      one view per sample at a fixed size (optional RandomResizedCrop, H/V flips,
 *                     CLAHE), with segmentation masks and boxes, for the supervised protocols.
 *
 * Determinism.  An epoch is a list of E positions (source, sample).  Position p of epoch e is
 * augmented with rng_fork(seed, e * E + p): the crops of a sample depend only on (seed, e, p),
 * never on which thread made them, how many threads there are, or on (rank, world).  Batch t of
 * an epoch (on this rank) holds positions [(t*world + rank) * B, + B); the last global step of a
 * drop_last = 0 epoch splits its remainder evenly over the ranks.  So the ranks' shards are
 * disjoint and together cover the epoch.  iBOT masks of a batch come from
 * rng_fork(seed', (e * n_batches + t) * world + rank).
 *
 * Epoch composition.  Samples are those of the chosen split in every corpus source.  Source s
 * gets round(E * w_s / sum w) positions (largest remainders, ties to the lower index), filled by
 * concatenated seeded permutations of its samples (so a small source is repeated, a large one
 * sub-sampled, each sample at most once more than any other); the combined list is shuffled
 * with the epoch's Rng (or kept in source order with shuffle = 0).
 *
 * Resume.  loader_position() gives the (epoch, index) of the next batch loader_next will
 * return; a loader opened with that start position returns exactly the same batches as the
 * uninterrupted one.
 *
 * Unreadable samples: LOADER_FAIL (default) makes loader_next fail with an Err naming the file
 * and sample; LOADER_SKIP replaces the sample by the next readable one of the same source
 * (deterministically) and counts it in Batch.n_skipped.
 */
#ifndef VERSA_DATA_LOADER_H
#define VERSA_DATA_LOADER_H

#include <stddef.h>
#include <stdint.h>
#include "engine/engine.h"
#include "data/augment.h"
#include "data/prepared.h"

typedef enum LoaderMode { LOADER_MULTICROP = 0, LOADER_PLAIN = 1 } LoaderMode;
enum { LOADER_FAIL = 0, LOADER_SKIP = 1 };

typedef struct PlainConfig {
    int out_h, out_w;          /* output size; 0 = the prepared size */
    float rrc_scale[2];        /* RandomResizedCrop scale; {0, 0} = whole image */
    float rrc_ratio[2];        /* (3/4, 4/3) */
    float hflip_p, vflip_p;    /* 0.5 / 0.5 for segmentation & detection, 0 for eval */
    int clahe;                 /* 1: CLAHE before normalisation */
    ClaheConfig clahe_cfg;
    float mean[3], std[3];     /* downstream: 0.5 / 0.5 */
} PlainConfig;

typedef struct LoaderConfig {
    LoaderMode mode;
    int batch_size;            /* B per rank */
    int split;                 /* PREP_SPLIT_* or -1 = every sample */
    int shuffle;               /* 1: a new order every epoch */
    int drop_last;             /* 1: only full global steps (training) */
    uint64_t seed;
    int rank, world;           /* this process's shard (0, 1 without MPI) */
    int n_workers;             /* worker threads; 0 = build batches in loader_next */
    int prefetch;              /* batches built ahead (>= 1) */
    int channels;              /* 1, or 3 (gray replicated) */
    int on_error;              /* LOADER_FAIL or LOADER_SKIP */
    long epoch_size;           /* positions per epoch; 0 = the selected samples' count */
    long start_epoch, start_index;   /* resume position */
    MultiCropConfig crops;     /* LOADER_MULTICROP (its `channels` is overridden) */
    int patch_size;            /* iBOT grid = global_size / patch_size (14) */
    MaskConfig masks;          /* grid filled in by the loader */
    int ibot;                  /* 1: make iBOT masks */
    PlainConfig plain;         /* LOADER_PLAIN */
    int with_masks;            /* LOADER_PLAIN: deliver segmentation masks */
    int with_boxes;            /* LOADER_PLAIN: deliver boxes */
} LoaderConfig;

/* DINOv2 multi-crop defaults (B 32, 2x224 + 8x96, patch 14, iBOT on), 2 workers, prefetch 4. */
LoaderConfig loader_config_default(LoaderMode mode);

typedef struct Batch {
    int n;                     /* samples in the batch (B, or fewer in a drop_last = 0 tail) */
    long epoch, index;         /* this batch's position */
    /* LOADER_MULTICROP */
    float *global;             /* (2, B, C, G, G) crop-major, as DINOv2's collate */
    float *local;              /* (n_local, B, C, L, L) */
    uint8_t *ibot_masks;       /* (2*B, grid_h*grid_w) 0/1, over the 2*B global crops */
    int mask_upperbound;
    /* LOADER_PLAIN */
    float *image;              /* (B, C, H, W) */
    uint8_t *seg;              /* (B, H, W) 0/1 or NULL */
    PrepBox *boxes;            /* boxes of sample j: [box_offset[j], box_offset[j+1]) */
    int32_t *box_offset;       /* (B + 1) */
    /* both */
    int32_t *labels;           /* (B, n_labels) -1 = missing; names as source 0's */
    uint8_t *findings;         /* (B, n_findings) */
    int32_t *source;           /* (B) corpus source */
    int64_t *sample;           /* (B) sample index in that source */
    long n_skipped;            /* unreadable samples replaced in the batches returned so far
                                  (since loader_open; LOADER_SKIP) */
} Batch;

typedef struct Loader Loader;

/* The loader borrows the corpus (keep it open while the loader lives). */
int loader_open(Loader **L, const Corpus *c, const LoaderConfig *cfg, Err *e);
/* Next batch; the returned pointer stays valid until the next call (or loader_close). */
int loader_next(Loader *L, const Batch **b, Err *e);
void loader_position(const Loader *L, long *epoch, long *index);
long loader_batches_per_epoch(const Loader *L);
long loader_epoch_size(const Loader *L);
int loader_n_labels(const Loader *L);
int loader_n_findings(const Loader *L);
void loader_close(Loader *L);

#endif
