/*
 * fuzz_config.c — the config reader (engine/config.c: libyaml documents flattened to dotted keys,
 * aliases, nesting limits; `key=value` / `+key=value` command-line overrides with flow lists)
 * and what reads a config: the typed getters, cfg_to_yaml (the text saved in every checkpoint),
 * and the pretrain / distill option parsers on a declared config.
 * Input: the YAML text, optionally followed by a "=====" line and override lines (one
 * `key=value` per line).
 * Properties:
 *   - cfg_to_yaml of a loaded config loads back (a resumed run reads it from the checkpoint) to
 *     the same table: same keys, same null-ness, same scalar text, same list items;
 *   - every failure comes with a message.
 * Seeds: configs/ (every YAML file) with the overrides of tests/e2e.
 */
#include "tests/fuzz/fuzz.h"
#include "engine/engine.h"
#include "ssl/ssl.h"
#include "distill/distill.h"

static const CfgEntry *fuzz_cfg_find(const Config *c, const char *key) {
    for (size_t i = 0; i < c->n; i++)
        if (!strcmp(c->e[i].key, key)) return &c->e[i];
    return NULL;
}

/* a loaded config -> YAML -> a fresh config: the same table */
static void fuzz_cfg_roundtrip(const Config *a) {
    char *yaml = cfg_to_yaml(a);
    Config b;
    cfg_init(&b);
    Err e = {{0}};
    if (cfg_load_string(&b, yaml, "roundtrip", &e)) fuzz_fail("cfg_to_yaml output does not load: %s\n---\n%s---", e.msg, yaml);
    if (b.n != a->n) fuzz_fail("round trip: %zu keys became %zu\n---\n%s---", a->n, b.n, yaml);
    for (size_t i = 0; i < a->n; i++) {
        const CfgEntry *x = &a->e[i], *y = fuzz_cfg_find(&b, x->key);
        if (!y) fuzz_fail("round trip lost key '%s'", x->key);
        if (x->is_null != y->is_null) fuzz_fail("round trip: '%s' null %d -> %d (value '%s')", x->key, x->is_null, y->is_null, x->value);
        if (x->is_null) continue;
        if (x->is_list != y->is_list) fuzz_fail("round trip: '%s' list %d -> %d", x->key, x->is_list, y->is_list);
        if (!x->is_list && strcmp(x->value, y->value)) fuzz_fail("round trip: '%s' = '%s' -> '%s'", x->key, x->value, y->value);
        if (x->is_list) {
            if (x->n_items != y->n_items) fuzz_fail("round trip: '%s' %zu items -> %zu", x->key, x->n_items, y->n_items);
            for (size_t k = 0; k < x->n_items; k++)
                if (strcmp(x->items[k], y->items[k])) fuzz_fail("round trip: '%s'[%zu] '%s' -> '%s'", x->key, k, x->items[k], y->items[k]);
        }
    }
    cfg_free(&b);
    free(yaml);
}

static void fuzz_cfg_getters(const Config *c) {
    for (size_t i = 0; i < c->n; i++) {
        const char *k = c->e[i].key;
        Err e = {{0}};
        double v[4];
        (void)cfg_get_float(c, k, 0, &e);
        (void)cfg_get_int(c, k, 0, &e);
        (void)cfg_get_bool(c, k, 0, &e);
        (void)cfg_get_str(c, k, "");
        (void)cfg_get_floats(c, k, v, 4, &e);
        size_t n = cfg_list_len(c, k);
        for (size_t j = 0; j <= n; j++)
            if ((cfg_list_item(c, k, j) == NULL) != (j == n)) fuzz_fail("cfg_list_item('%s', %zu) of %zu", k, j, n);
    }
}

/* YAML, then the override lines; returns 0 when everything applied */
static int fuzz_cfg_load(Config *c, const char *yaml, char *overrides) {
    Err e = {{0}};
    if (cfg_load_string(c, yaml, "fuzz.yaml", &e)) {
        if (!e.msg[0]) fuzz_fail("cfg_load_string failed without a message");
        return 1;
    }
    for (char *save = NULL, *line = overrides ? strtok_r(overrides, "\n", &save) : NULL; line;
         line = strtok_r(NULL, "\n", &save)) {
        e.msg[0] = 0;
        if (cfg_override(c, line, 0, &e) && !e.msg[0]) fuzz_fail("cfg_override failed without a message");
    }
    return 0;
}

int fuzz_config(const uint8_t *data, size_t n) {
    FuzzParts fp;
    fuzz_split(data, n, &fp);
    char *yaml = fuzz_strndup(fp.p[0], fp.n[0]);
    Err e = {{0}};

    /* free form, as `versa config` and a checkpoint's saved text are read */
    Config c;
    cfg_init(&c);
    char *ov = fp.count > 1 ? fuzz_strndup(fp.p[1], fp.n[1]) : NULL;
    if (fuzz_cfg_load(&c, yaml, ov) == 0) {
        fuzz_cfg_getters(&c);
        fuzz_cfg_roundtrip(&c);
    }
    cfg_free(&c);
    free(ov);

    /* declared, as `versa pretrain` / `versa distill` read their config */
    for (int which = 0; which < 2; which++) {
        cfg_init(&c);
        e.msg[0] = 0;
        if (which == 0 ? cfg_declare(&c, PRETRAIN_KEYS, PRETRAIN_N_KEYS, &e) : cfg_declare(&c, DISTILL_KEYS, DISTILL_N_KEYS, &e))
            fuzz_fail("cfg_declare: %s", e.msg);
        ov = fp.count > 1 ? fuzz_strndup(fp.p[1], fp.n[1]) : NULL;
        if (fuzz_cfg_load(&c, yaml, ov) == 0) {
            fuzz_cfg_getters(&c);
            fuzz_cfg_roundtrip(&c);
            e.msg[0] = 0;
            if (which == 0) {
                SslConfig s;
                (void)ssl_config_from(&c, &s, &e);
            } else {
                DistillConfig d;
                (void)distill_config_from(&c, &d, &e);
            }
        }
        cfg_free(&c);
        free(ov);
    }
    free(yaml);
    return 0;
}

FUZZ_TARGET(fuzz_config)
