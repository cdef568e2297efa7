/*
 * fuzz_checkpoint.c — the checkpoint loader (engine/checkpoint.c: ckpt_load_stores' validation
 * of every tensor's presence and shape in two prefixed stores with optimizer moments, the
 * unexpected-key scan, extra state arrays, the training-state attributes step / rng_* and the
 * config text; ckpt_read_config), then what a resumed run does with the saved config: load it
 * back as YAML.
 * Input: an HDF5 file or a description of one (tests/fuzz/h5_harness.h).
 * Properties: a successful load fills the stores with the file's values and the RNG state with
 * buf_left in 0..4; the config text fits the caller's buffer; no HDF5 object stays open.
 * Seeds: checkpoints written by ckpt_save_stores for the stores below (raw bytes) and
 * descriptions of valid and near-valid ones (tests/fuzz/make_seeds.c).
 */
#include "tests/fuzz/h5_harness.h"
#include "engine/engine.h"

/* The layout the seeds use (tests/fuzz/make_seeds.c declares the same): a tiny student with
 * optimizer state and its teacher, as ssl_pretrain saves them, plus one state array. */
static void fuzz_ckpt_declare(ParamStore *ps, int values_only) {
    params_init(ps);
    ps->values_only = values_only;
    param_(ps, "blocks.0.attn.qkv.weight", 6, 2);
    param_(ps, "blocks.0.attn.qkv.bias", 6);
    param_(ps, "cls_token", 1, 1, 2);
    buffer_(ps, "bn.running_mean", 3);
    params_alloc(ps);
}

int fuzz_checkpoint(const uint8_t *data, size_t n) {
    char path[1024];
    fuzz_join(path, sizeof path, fuzz_tmpdir(), "checkpoint.h5");
    if (!h5f_build(data, n, path)) return 0;
    ParamStore s, t;
    fuzz_ckpt_declare(&s, 0);
    fuzz_ckpt_declare(&t, 1);
    float center[5];
    CkptStore stores[2] = {{.prefix = "student.", .ps = &s, .with_optim = 1}, {.prefix = "teacher.", .ps = &t}};
    CkptExtra extra[1] = {{"dino_center", center, 5}};
    CkptMeta meta;
    char config[256];
    Err e = {{0}};
    if (ckpt_load_stores(path, stores, 2, &meta, config, sizeof config, extra, 1, &e) == 0) {
        if (meta.rng.buf_left < 0 || meta.rng.buf_left > 4) fuzz_fail("rng buf_left %d", meta.rng.buf_left);
        if (strnlen(config, sizeof config) >= sizeof config) fuzz_fail("config text not terminated");
        (void)rng_u32(&meta.rng);
    } else if (!e.msg[0]) {
        fuzz_fail("ckpt_load_stores failed without a message");
    }
    h5f_check_closed("ckpt_load_stores");
    /* one store, no prefix, weights only (how `versa embed` / `extract` load) */
    e.msg[0] = 0;
    if (ckpt_load(path, &t, "", 0, NULL, NULL, 0, NULL, 0, &e) && !e.msg[0]) fuzz_fail("ckpt_load failed without a message");
    h5f_check_closed("ckpt_load");
    /* the saved config, as a resumed run reads it */
    e.msg[0] = 0;
    char *text = ckpt_read_config(path, &e);
    h5f_check_closed("ckpt_read_config");
    if (text) {
        Config c;
        cfg_init(&c);
        Err ce = {{0}};
        (void)cfg_load_string(&c, text, "checkpoint config", &ce);
        cfg_free(&c);
        free(text);
    } else if (!e.msg[0]) {
        fuzz_fail("ckpt_read_config failed without a message");
    }
    params_free(&s);
    params_free(&t);
    return 0;
}

FUZZ_TARGET(fuzz_checkpoint)
