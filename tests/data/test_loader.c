/* test_loader.c — the batch loader: shards disjoint and complete, per-epoch shuffles, the same
 * batches for 0/1/3 worker threads, exact resume, corpus weights, the unreadable-sample policy,
 * plain (supervised) views with masks and boxes, and YAML corpus lists. */
#include "tests/common/testutil.h"
#include "data/loader.h"

#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S 48   /* prepared image size */

static char tmpdir[256], file_a[512], file_b[512], file_bad[512];

/* n samples of S x S uint8: a per-sample gradient + a bright square; label = i % 4; box = the
 * square; mask = the square; patients of 2 images */
static void make_file(const char *path, int n, int seed, int gzip) {
    PrepSchema s = {.dataset = "loader-test", .height = S, .width = S, .bits = 8, .gzip = gzip, .has_masks = 1,
                    .n_labels = 1, .labels = {{"density", PREP_CLASSES_DENSITY}}, .findings = "mass"};
    PrepWriter *w;
    Err e;
    assert_int_equal(prep_writer_open(&w, path, &s, &e), 0);
    uint8_t px[S * S], m[S * S];
    for (int i = 0; i < n; i++) {
        int x0 = 4 + (i * 5) % 30, y0 = 6 + (i * 3) % 30;
        for (int y = 0; y < S; y++)
            for (int x = 0; x < S; x++) {
                int in = x >= x0 && x < x0 + 10 && y >= y0 && y < y0 + 8;
                px[y * S + x] = (uint8_t)(in ? 230 : (x * 2 + y + i * 7 + seed) % 200);
                m[y * S + x] = (uint8_t)in;
            }
        int32_t lab = i % 4;
        uint8_t f = 1;
        PrepBox b = {(float)x0, (float)y0, (float)x0 + 10, (float)y0 + 8, 0, {0}};
        char pid[32], iid[32];
        snprintf(pid, sizeof pid, "p%d", i / 2);
        snprintf(iid, sizeof iid, "s%d_%d", seed, i);
        PrepSample smp = {.pixels = px, .mask = m, .labels = &lab, .findings = &f, .boxes = &b, .n_boxes = 1,
                          .view = 0, .laterality = 0, .split = 0, .patient_id = pid, .image_id = iid};
        assert_int_equal(prep_writer_add(w, &smp, &e), 0);
    }
    assert_int_equal(prep_writer_close(w, &e), 0);
}

static int setup(void **state) {
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/versa_test_loader_XXXXXX");
    if (!mkdtemp(tmpdir)) return 1;
    snprintf(file_a, sizeof file_a, "%s/a.h5", tmpdir);
    snprintf(file_b, sizeof file_b, "%s/b.h5", tmpdir);
    snprintf(file_bad, sizeof file_bad, "%s/bad.h5", tmpdir);
    make_file(file_a, 40, 0, 3);
    make_file(file_b, 10, 1, 3);
    make_file(file_bad, 12, 2, 3);
    /* corrupt sample 5 of bad.h5 */
    hid_t h = H5Fopen(file_bad, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t d = H5Dopen2(h, "images", H5P_DEFAULT);
    hsize_t off[3] = {5, 0, 0};
    unsigned filt;
    haddr_t addr;
    hsize_t size;
    H5Dget_chunk_info_by_coord(d, off, &filt, &addr, &size);
    H5Dclose(d);
    H5Fclose(h);
    FILE *f = fopen(file_bad, "r+b");
    fseek(f, (long)(addr + 2), SEEK_SET);
    for (int k = 0; k < 32; k++) fputc(0x5A ^ k, f);
    fclose(f);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    return system(cmd) == 0 ? 0 : 1;
}

static LoaderConfig small_multicrop(void) {
    LoaderConfig c = loader_config_default(LOADER_MULTICROP);
    c.batch_size = 4;
    c.split = -1;
    c.seed = 77;
    c.crops.global_size = 32;
    c.crops.local_size = 16;
    c.crops.n_local = 3;
    c.patch_size = 8;   /* 4x4 iBOT grid */
    c.n_workers = 2;
    c.prefetch = 2;
    return c;
}

static void open_corpus(Corpus *c, const char *path) {
    CorpusSource src = {path, 1.0f};
    Err e;
    if (corpus_open(c, &src, 1, &e)) fail_msg("%s", e.msg);
}

/* ---- shards ---- */

static void test_shards_disjoint_complete(void **state) {
    (void)state;
    Corpus c;
    open_corpus(&c, file_a);
    for (int drop = 0; drop < 2; drop++) {
        int seen[40] = {0}, total = 0;
        long nb0 = -1;
        for (int rank = 0; rank < 3; rank++) {
            LoaderConfig cfg = small_multicrop();
            cfg.world = 3;
            cfg.rank = rank;
            cfg.drop_last = drop;
            Loader *L;
            Err e;
            assert_int_equal(loader_open(&L, &c, &cfg, &e), 0);
            long nb = loader_batches_per_epoch(L);
            if (nb0 < 0) nb0 = nb;
            assert_int_equal(nb, nb0);   /* every rank steps in lockstep */
            for (long t = 0; t < nb; t++) {
                const Batch *b;
                assert_int_equal(loader_next(L, &b, &e), 0);
                assert_int_equal(b->epoch, 0);
                assert_int_equal(b->index, t);
                for (int j = 0; j < b->n; j++) {
                    seen[b->sample[j]]++;
                    total++;
                }
            }
            loader_close(L);
        }
        /* 40 samples, 3 ranks x 4: 3 full steps (36) + a tail of 4 split 1/1/2 */
        print_message("drop_last %d: %ld batches per rank, %d samples seen\n", drop, nb0, total);
        if (drop) {
            assert_int_equal(nb0, 3);
            assert_int_equal(total, 36);
        } else {
            assert_int_equal(nb0, 4);
            assert_int_equal(total, 40);
        }
        for (int i = 0; i < 40; i++) assert_true(seen[i] <= 1);   /* disjoint */
    }
    corpus_close(&c);
}

static void test_epochs_reshuffle(void **state) {
    (void)state;
    Corpus c;
    open_corpus(&c, file_a);
    LoaderConfig cfg = small_multicrop();
    cfg.drop_last = 0;
    Loader *L;
    Err e;
    assert_int_equal(loader_open(&L, &c, &cfg, &e), 0);
    int order[2][40];
    for (int ep = 0; ep < 2; ep++) {
        int k = 0, seen[40] = {0};
        for (long t = 0; t < loader_batches_per_epoch(L); t++) {
            const Batch *b;
            assert_int_equal(loader_next(L, &b, &e), 0);
            assert_int_equal(b->epoch, ep);
            for (int j = 0; j < b->n; j++) {
                order[ep][k++] = (int)b->sample[j];
                seen[b->sample[j]]++;
            }
        }
        assert_int_equal(k, 40);
        for (int i = 0; i < 40; i++) assert_int_equal(seen[i], 1);   /* a permutation */
    }
    assert_true(memcmp(order[0], order[1], sizeof order[0]) != 0);
    int ident = 1;
    for (int i = 0; i < 40; i++) ident &= order[0][i] == i;
    assert_false(ident);
    loader_close(L);
    corpus_close(&c);
}

/* ---- determinism across worker counts and resume ---- */

typedef struct Snap {
    size_t gsz, lsz, msz;
    float *global, *local;
    uint8_t *masks;
    int32_t labels[64];
    int64_t sample[64];
    int n;
} Snap;

static void snap(Snap *s, const Batch *b, const LoaderConfig *cfg) {
    size_t B = (size_t)cfg->batch_size, C = (size_t)cfg->channels;
    s->gsz = 2 * B * C * cfg->crops.global_size * cfg->crops.global_size;
    s->lsz = (size_t)cfg->crops.n_local * B * C * cfg->crops.local_size * cfg->crops.local_size;
    int g = cfg->crops.global_size / cfg->patch_size;
    s->msz = 2 * B * (size_t)(g * g);
    s->global = malloc(s->gsz * sizeof(float));
    s->local = malloc(s->lsz * sizeof(float));
    s->masks = malloc(s->msz);
    memcpy(s->global, b->global, s->gsz * sizeof(float));
    memcpy(s->local, b->local, s->lsz * sizeof(float));
    memcpy(s->masks, b->ibot_masks, s->msz);
    s->n = b->n;
    for (int j = 0; j < b->n; j++) {
        s->labels[j] = b->labels[j];
        s->sample[j] = b->sample[j];
    }
}

static void snap_free(Snap *s) {
    free(s->global);
    free(s->local);
    free(s->masks);
}

static void snap_equal(const Snap *a, const Snap *b) {
    assert_int_equal(a->n, b->n);
    assert_memory_equal(a->sample, b->sample, (size_t)a->n * sizeof(int64_t));
    assert_memory_equal(a->labels, b->labels, (size_t)a->n * sizeof(int32_t));
    /* all runs here use full batches (drop_last), so every element is a real sample's */
    assert_memory_equal(a->global, b->global, a->gsz * sizeof(float));
    assert_memory_equal(a->local, b->local, a->lsz * sizeof(float));
    assert_memory_equal(a->masks, b->masks, a->msz);
}

static void run_batches(const Corpus *c, LoaderConfig cfg, int n, Snap *out) {
    Loader *L;
    Err e;
    if (loader_open(&L, c, &cfg, &e)) fail_msg("%s", e.msg);
    for (int k = 0; k < n; k++) {
        const Batch *b;
        if (loader_next(L, &b, &e)) fail_msg("%s", e.msg);
        snap(&out[k], b, &cfg);
    }
    loader_close(L);
}

static void test_same_batches_any_worker_count(void **state) {
    (void)state;
    Corpus c;
    open_corpus(&c, file_a);
    LoaderConfig cfg = small_multicrop();   /* 10 batches per epoch: 12 spans the boundary */
    enum { NB = 12 };
    Snap a[NB], b[NB], z[NB];
    cfg.n_workers = 1;
    run_batches(&c, cfg, NB, a);
    cfg.n_workers = 3;
    cfg.prefetch = 3;
    run_batches(&c, cfg, NB, b);
    cfg.n_workers = 0;
    run_batches(&c, cfg, NB, z);
    int masked = 0;
    for (int k = 0; k < NB; k++) {
        snap_equal(&a[k], &b[k]);
        snap_equal(&a[k], &z[k]);
        for (size_t i = 0; i < a[k].msz; i++) masked += a[k].masks[i];
    }
    assert_true(masked > 0);
    /* a different seed gives different crops */
    Snap d[1];
    cfg.seed = 78;
    run_batches(&c, cfg, 1, d);
    assert_true(memcmp(d[0].global, a[0].global, a[0].gsz * sizeof(float)) != 0);
    snap_free(&d[0]);
    for (int k = 0; k < NB; k++) {
        snap_free(&a[k]);
        snap_free(&b[k]);
        snap_free(&z[k]);
    }
    corpus_close(&c);
}

static void test_resume_exact(void **state) {
    (void)state;
    Corpus c;
    open_corpus(&c, file_a);
    LoaderConfig cfg = small_multicrop();
    enum { NB = 14, CUT = 7 };
    Snap full[NB];
    run_batches(&c, cfg, NB, full);
    /* a run stopped after CUT batches saves its position ... */
    Loader *L;
    Err e;
    assert_int_equal(loader_open(&L, &c, &cfg, &e), 0);
    for (int k = 0; k < CUT; k++) {
        const Batch *b;
        assert_int_equal(loader_next(L, &b, &e), 0);
    }
    long ep, idx;
    loader_position(L, &ep, &idx);
    loader_close(L);
    assert_int_equal(ep * 10 + idx, CUT);
    /* ... and a new loader started there reproduces the rest exactly */
    cfg.start_epoch = ep;
    cfg.start_index = idx;
    cfg.n_workers = 3;
    Snap rest[NB - CUT];
    run_batches(&c, cfg, NB - CUT, rest);
    for (int k = 0; k < NB - CUT; k++) snap_equal(&full[CUT + k], &rest[k]);
    for (int k = 0; k < NB; k++) snap_free(&full[k]);
    for (int k = 0; k < NB - CUT; k++) snap_free(&rest[k]);
    corpus_close(&c);
}

/* ---- corpus weights ---- */

static void test_corpus_weights(void **state) {
    (void)state;
    CorpusSource src[2] = {{file_a, 1.0f}, {file_b, 3.0f}};
    Corpus c;
    Err e;
    assert_int_equal(corpus_open(&c, src, 2, &e), 0);
    LoaderConfig cfg = small_multicrop();
    cfg.epoch_size = 200;
    cfg.n_workers = 2;
    Loader *L;
    assert_int_equal(loader_open(&L, &c, &cfg, &e), 0);
    int from[2] = {0, 0}, use_b[10] = {0}, use_a[40] = {0};
    for (long t = 0; t < loader_batches_per_epoch(L); t++) {
        const Batch *b;
        assert_int_equal(loader_next(L, &b, &e), 0);
        for (int j = 0; j < b->n; j++) {
            from[b->source[j]]++;
            if (b->source[j] == 1) use_b[b->sample[j]]++;
            else use_a[b->sample[j]]++;
        }
    }
    print_message("weights 1:3 over 200 positions: %d from a (40 images), %d from b (10 images)\n", from[0], from[1]);
    assert_int_equal(from[0], 50);
    assert_int_equal(from[1], 150);
    for (int i = 0; i < 10; i++) assert_int_equal(use_b[i], 15);   /* 15 full passes over b */
    int mn = 99, mx = 0;
    for (int i = 0; i < 40; i++) {
        mn = use_a[i] < mn ? use_a[i] : mn;
        mx = use_a[i] > mx ? use_a[i] : mx;
    }
    assert_true(mx - mn <= 1);
    loader_close(L);
    corpus_close(&c);
}

/* ---- unreadable samples ---- */

static void test_unreadable_policy(void **state) {
    (void)state;
    Corpus c;
    open_corpus(&c, file_bad);
    LoaderConfig cfg = small_multicrop();
    cfg.batch_size = 3;
    cfg.shuffle = 0;   /* sample 5 is in batch 1 */
    Loader *L;
    Err e;
    assert_int_equal(loader_open(&L, &c, &cfg, &e), 0);
    const Batch *b;
    assert_int_equal(loader_next(L, &b, &e), 0);
    assert_int_equal(loader_next(L, &b, &e), 1);
    print_message("fail policy: %s\n", e.msg);
    assert_non_null(strstr(e.msg, file_bad));
    assert_non_null(strstr(e.msg, "sample 5"));
    loader_close(L);
    cfg.on_error = LOADER_SKIP;
    cfg.shuffle = 1;
    assert_int_equal(loader_open(&L, &c, &cfg, &e), 0);
    long ep0_skipped = 0;
    for (int k = 0; k < 8; k++) {
        assert_int_equal(loader_next(L, &b, &e), 0);
        for (int j = 0; j < b->n; j++) assert_true(b->sample[j] != 5);
        if (k == 3) ep0_skipped = b->n_skipped;
    }
    print_message("skip policy: %ld skipped in epoch 0, %ld after 2 epochs\n", ep0_skipped, b->n_skipped);
    assert_int_equal(ep0_skipped, 1);
    assert_int_equal(b->n_skipped, 2);
    loader_close(L);
    corpus_close(&c);
}

/* ---- plain views ---- */

static void test_plain_views(void **state) {
    (void)state;
    Corpus c;
    open_corpus(&c, file_a);
    LoaderConfig cfg = loader_config_default(LOADER_PLAIN);
    cfg.batch_size = 5;
    cfg.channels = 1;
    cfg.with_masks = 1;
    cfg.with_boxes = 1;
    cfg.plain.hflip_p = 1.0f;   /* always mirrored */
    for (int k = 0; k < 3; k++) {
        cfg.plain.mean[k] = 0.0f;
        cfg.plain.std[k] = 1.0f;
    }
    cfg.n_workers = 2;
    Loader *L;
    Err e;
    assert_int_equal(loader_open(&L, &c, &cfg, &e), 0);
    assert_int_equal(loader_batches_per_epoch(L), 8);
    const Batch *b;
    assert_int_equal(loader_next(L, &b, &e), 0);
    const Prepared *P = &c.src[0];
    float img[S * S];
    uint8_t m[S * S];
    for (int j = 0; j < b->n; j++) {
        size_t i = (size_t)b->sample[j];
        assert_int_equal(i, (size_t)j);   /* plain mode default: no shuffle */
        assert_int_equal(prep_read_image_f32(P, i, img, &e), 0);
        assert_int_equal(prep_read_mask(P, i, m, &e), 0);
        for (int y = 0; y < S; y++)
            for (int x = 0; x < S; x++) {
                assert_float_equal(b->image[(size_t)j * S * S + y * S + x], img[y * S + (S - 1 - x)], 1e-6);
                assert_int_equal(b->seg[(size_t)j * S * S + y * S + x], m[y * S + (S - 1 - x)]);
            }
        assert_int_equal(b->box_offset[j + 1] - b->box_offset[j], 1);
        PrepBox bx = b->boxes[b->box_offset[j]], src = prep_sample_boxes(P, i)[0];
        assert_float_equal(bx.x0, S - src.x1, 1e-5);
        assert_float_equal(bx.x1, S - src.x0, 1e-5);
        assert_float_equal(bx.y0, src.y0, 1e-5);
        assert_int_equal(b->labels[j], (int)(i % 4));
        assert_int_equal(b->findings[j], 1);
    }
    loader_close(L);
    /* resized + RandomResizedCrop + CLAHE: shapes, bounds, boxes inside the view */
    cfg.plain.out_h = cfg.plain.out_w = 32;
    cfg.plain.rrc_scale[0] = 0.5f;
    cfg.plain.rrc_scale[1] = 1.0f;
    cfg.plain.clahe = 1;
    cfg.plain.clahe_cfg.tiles_x = cfg.plain.clahe_cfg.tiles_y = 4;
    cfg.channels = 3;
    assert_int_equal(loader_open(&L, &c, &cfg, &e), 0);
    for (int k = 0; k < 8; k++) {
        assert_int_equal(loader_next(L, &b, &e), 0);
        for (size_t q = 0; q < (size_t)b->n * 3 * 32 * 32; q++) assert_true(b->image[q] >= 0.0f && b->image[q] <= 1.0f);
        for (int j = 0; j < b->box_offset[b->n]; j++) {
            PrepBox bx = b->boxes[j];
            assert_true(bx.x0 >= 0 && bx.x1 <= 32 && bx.y0 >= 0 && bx.y1 <= 32 && bx.x0 < bx.x1 && bx.y0 < bx.y1);
        }
    }
    loader_close(L);
    corpus_close(&c);
}

static void test_config_errors(void **state) {
    (void)state;
    Corpus c;
    open_corpus(&c, file_b);
    Loader *L;
    Err e;
    LoaderConfig cfg = small_multicrop();
    cfg.batch_size = 11;   /* 10 samples, drop_last */
    assert_int_equal(loader_open(&L, &c, &cfg, &e), 1);
    assert_non_null(strstr(e.msg, "smaller than"));
    cfg = small_multicrop();
    cfg.patch_size = 7;
    assert_int_equal(loader_open(&L, &c, &cfg, &e), 1);
    assert_non_null(strstr(e.msg, "patch_size"));
    cfg = small_multicrop();
    cfg.rank = 2;
    cfg.world = 2;
    assert_int_equal(loader_open(&L, &c, &cfg, &e), 1);
    corpus_close(&c);
}

static void test_corpus_from_yaml(void **state) {
    (void)state;
    Config cfg;
    cfg_init(&cfg);
    Err e = {{0}};
    char yaml[1200];
    snprintf(yaml, sizeof yaml, "data:\n  sources: [%s, %s]\n  weights: [1.0, 3.0]\n", file_a, file_b);
    assert_int_equal(cfg_load_string(&cfg, yaml, "corpus.yaml", &e), 0);
    CorpusSource src[4];
    int n;
    assert_int_equal(corpus_sources_from_config(&cfg, "data", src, 4, &n, &e), 0);
    assert_int_equal(n, 2);
    assert_string_equal(src[1].path, file_b);
    assert_float_equal(src[1].weight, 3.0f, 0);
    Corpus c;
    assert_int_equal(corpus_open(&c, src, n, &e), 0);
    corpus_close(&c);
    cfg_free(&cfg);
    cfg_init(&cfg);
    snprintf(yaml, sizeof yaml, "data:\n  sources: [%s, %s]\n  weights: [1.0]\n", file_a, file_b);
    assert_int_equal(cfg_load_string(&cfg, yaml, "corpus.yaml", &e), 0);
    assert_int_equal(corpus_sources_from_config(&cfg, "data", src, 4, &n, &e), 1);
    assert_non_null(strstr(e.msg, "data.weights"));
    cfg_free(&cfg);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shards_disjoint_complete),
        cmocka_unit_test(test_epochs_reshuffle),
        cmocka_unit_test(test_same_batches_any_worker_count),
        cmocka_unit_test(test_resume_exact),
        cmocka_unit_test(test_corpus_weights),
        cmocka_unit_test(test_unreadable_policy),
        cmocka_unit_test(test_plain_views),
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_corpus_from_yaml),
    };
    return cmocka_run_group_tests_name(__FILE__, tests, setup, teardown);
}
