/* models.c — the backbones a benchmark run compares, from a one-line SPEC (see bench.h):
 * stage-1 checkpoints (ssl_load_model), EfficientNet tensors in lukemelas names and ViT tensors in
 * DINOv2 names (this project's students, or weights converted from PyTorch — the same path), and
 * random-init baselines.  Architectures of weight files are inferred from their tensor names and
 * shapes, so `effnet-ckpt:model.h5` needs no other argument. */
#include "bench/bench.h"
#include <ctype.h>
#include <hdf5.h>
#include <stdlib.h>
#include <string.h>
#include <stdarg.h>
#include <sys/stat.h>

/* snprintf that may truncate (descriptions, cache keys): vsnprintf keeps -Wformat-truncation quiet */
__attribute__((format(printf, 3, 4))) static void sfmt(char *dst, size_t n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dst, n, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------------------------------------ */
/* the datasets of an HDF5 file's root: names and shapes */

typedef struct H5Entry {
    char *name;
    int nd;
    size_t shape[VT_MAX_DIMS];
} H5Entry;

typedef struct H5List {
    H5Entry *e;
    size_t n, cap;
} H5List;

/* H5Literate callback: datasets only (opening a group as a dataset fails; errors are silenced) */
static herr_t list_cb(hid_t g, const char *name, const H5L_info_t *info, void *ud) {
    (void)info;
    H5List *l = ud;
    hid_t ds = H5Dopen2(g, name, H5P_DEFAULT);
    if (ds < 0) return 0;
    hid_t sp = H5Dget_space(ds);
    hsize_t dims[VT_MAX_DIMS] = {0};
    int nd = H5Sget_simple_extent_ndims(sp);
    if (nd >= 0 && nd <= VT_MAX_DIMS) {
        H5Sget_simple_extent_dims(sp, dims, NULL);
        if (l->n == l->cap) {
            l->cap = l->cap ? 2 * l->cap : 256;
            l->e = realloc(l->e, l->cap * sizeof(H5Entry));
        }
        H5Entry *en = &l->e[l->n++];
        en->name = strdup(name);
        en->nd = nd;
        for (int i = 0; i < nd; i++) en->shape[i] = (size_t)dims[i];
    }
    H5Sclose(sp);
    H5Dclose(ds);
    return 0;
}

static int h5_list(const char *path, H5List *l, Err *e) {
    memset(l, 0, sizeof *l);
    H5E_auto2_t fn;
    void *data;
    H5Eget_auto2(H5E_DEFAULT, &fn, &data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    int rc = 0;
    if (f < 0) rc = err_set(e, "%s: not a readable HDF5 file", path);
    else {
        H5Literate(f, H5_INDEX_NAME, H5_ITER_INC, NULL, list_cb, l);
        H5Fclose(f);
    }
    H5Eset_auto2(H5E_DEFAULT, fn, data);
    return rc;
}

static void h5_list_free(H5List *l) {
    for (size_t i = 0; i < l->n; i++) free(l->e[i].name);
    free(l->e);
    memset(l, 0, sizeof *l);
}

static const H5Entry *h5_find(const H5List *l, const char *name) {
    for (size_t i = 0; i < l->n; i++)
        if (!strcmp(l->e[i].name, name)) return &l->e[i];
    return NULL;
}

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

/* The prefix under which `anchor` (e.g. "_conv_stem.weight") lives; with `want` given it must be
 * that one.  Several candidates without a choice is an error naming them. */
static int find_prefix(const H5List *l, const char *path, const char *anchor, const char *want, const char *what,
                       char *prefix, size_t n, Err *e) {
    char found[512] = "";
    int count = 0;
    for (size_t i = 0; i < l->n; i++) {
        if (!ends_with(l->e[i].name, anchor)) continue;
        size_t pl = strlen(l->e[i].name) - strlen(anchor);
        if (pl && l->e[i].name[pl - 1] != '.') continue;
        char p[256];
        snprintf(p, sizeof p, "%.*s", (int)pl, l->e[i].name);
        if (want && strcmp(p, want)) continue;
        if (count++ == 0) snprintf(prefix, n, "%s", p);
        size_t fl = strlen(found);
        snprintf(found + fl, sizeof found - fl, "%s'%s'", fl ? ", " : "", p);
    }
    if (count == 0) {
        if (want) return err_set(e, "%s: no %s tensors under prefix '%s' (no '%s%s')", path, what, want, want, anchor);
        return err_set(e, "%s: no %s tensors (no dataset named '...%s')", path, what, anchor);
    }
    if (count > 1) return err_set(e, "%s: %d %s tensor sets (prefixes %s): choose one with prefix=...", path, count, what, found);
    return 0;
}

/* largest N + 1 over names "<prefix><word>.N.*" */
static int count_indexed(const H5List *l, const char *prefix, const char *word) {
    char head[300];
    snprintf(head, sizeof head, "%s%s.", prefix, word);
    size_t hl = strlen(head);
    int n = 0;
    for (size_t i = 0; i < l->n; i++)
        if (!strncmp(l->e[i].name, head, hl) && isdigit((unsigned char)l->e[i].name[hl])) {
            int k = atoi(l->e[i].name + hl) + 1;
            if (k > n) n = k;
        }
    return n;
}

/* ------------------------------------------------------------------------------------------ */
/* specs */

#define SPEC_MAX_FIELDS 8

typedef struct Spec {
    char buf[512];
    char *f[SPEC_MAX_FIELDS];     /* positional fields */
    int n;
    const char *prefix;           /* prefix=... */
    long seed, size;              /* seed=..., size=... (-1 unset) */
    int feature;                  /* feature=gap|cls|cls_gap (ViT; BENCH_FEAT_*) */
    double layerscale;            /* layerscale=X (random ViT; < 0 unset) */
} Spec;

static int spec_parse(const char *text, Spec *s, Err *e) {
    memset(s, 0, sizeof *s);
    s->seed = s->size = -1;
    s->layerscale = -1;
    snprintf(s->buf, sizeof s->buf, "%s", text);
    char *p = s->buf;
    while (p) {
        char *c = strchr(p, ':');
        if (c) *c = 0;
        if (!strncmp(p, "prefix=", 7)) s->prefix = p + 7;
        else if (!strncmp(p, "feature=", 8)) {
            if (!strcmp(p + 8, "gap")) s->feature = BENCH_FEAT_GAP;
            else if (!strcmp(p + 8, "cls")) s->feature = BENCH_FEAT_CLS;
            else if (!strcmp(p + 8, "cls_gap")) s->feature = BENCH_FEAT_CLS_GAP;
            else return err_set(e, "model spec '%s': '%s' is not feature=gap, cls or cls_gap", text, p);
        } else if (!strncmp(p, "layerscale=", 11)) {
            char *end;
            s->layerscale = strtod(p + 11, &end);
            if (*end || !(s->layerscale >= 0.0 && s->layerscale <= 10.0))
                return err_set(e, "model spec '%s': '%s' is not a LayerScale init in [0, 10]", text, p);
        } else if (!strncmp(p, "seed=", 5) || !strncmp(p, "size=", 5)) {
            char *end;
            long v = strtol(p + 5, &end, 10);
            if (*end || v < 0) return err_set(e, "model spec '%s': '%s' is not a non-negative integer", text, p);
            if (p[1] == 'e') s->seed = v;
            else s->size = v;
        } else {
            if (s->n == SPEC_MAX_FIELDS) return err_set(e, "model spec '%s': too many fields", text);
            s->f[s->n++] = p;
        }
        p = c ? c + 1 : NULL;
    }
    return 0;
}

static int is_uint(const char *s) {
    if (!*s) return 0;
    for (; *s; s++)
        if (!isdigit((unsigned char)*s)) return 0;
    return 1;
}

static int round_to_patch(int size, int patch) {
    int k = (size + patch / 2) / patch;
    return (k < 1 ? 1 : k) * patch;
}

static void fingerprint(BenchModel *m, const char *path) {
    struct stat st;
    if (path && stat(path, &st) == 0)
        sfmt(m->fingerprint, sizeof m->fingerprint, "%s|size=%d|bytes=%lld|mtime=%lld.%09ld", m->spec, m->size,
                 (long long)st.st_size, (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
    else
        sfmt(m->fingerprint, sizeof m->fingerprint, "%s|size=%d", m->spec, m->size);
}

static int load_random(BenchModel *m, const Spec *s, int default_size, Err *e) {
    if (s->n < 2) return err_set(e, "model spec '%s': expected random:ARCH[:PATCH][:SIZE]", m->spec);
    const char *arch = s->f[1];
    uint64_t seed = s->seed >= 0 ? (uint64_t)s->seed : 0;
    Rng r;
    rng_init(&r, seed);
    params_init(&m->ps);
    m->ps.values_only = 1;
    if (!strncmp(arch, "vit_", 4)) {
        if (s->n < 3 || !is_uint(s->f[2]))
            return err_set(e, "model spec '%s': a ViT needs its patch size (random:%s:16[:SIZE])", m->spec, arch);
        int patch = atoi(s->f[2]);
        int size = s->n >= 4 ? (is_uint(s->f[3]) ? atoi(s->f[3]) : -1) : (s->size > 0 ? (int)s->size : default_size);
        if (size < 0 || s->n > 4) return err_set(e, "model spec '%s': expected random:%s:PATCH[:SIZE]", m->spec, arch);
        if (patch < 2) return err_set(e, "model spec '%s': patch %d is too small", m->spec, patch);
        size = round_to_patch(size, patch);
        ViTConfig vc;
        if (vit_config(arch, patch, size, &vc))
            return err_set(e, "model spec '%s': unknown ViT '%s' (vit_tiny, vit_small, vit_base, vit_large)", m->spec, arch);
        if (s->layerscale >= 0) vc.layerscale = (float)s->layerscale;
        vit_declare(&m->vit, &vc, &m->ps, "");
        params_alloc(&m->ps);
        vit_init(&m->vit, &r);
        m->kind = BENCH_VIT;
        m->size = size;
        m->patch = patch;
        m->in_chans = vc.in_chans;
        m->feat_dim = vc.embed_dim;
        sfmt(m->desc, sizeof m->desc, "%s/%d random init (seed %llu, LayerScale %g), %d px", arch, patch,
             (unsigned long long)seed, (double)vc.layerscale, size);
        return 0;
    }
    EffNetConfig ec;
    if (effnet_config(arch, &ec))
        return err_set(e, "model spec '%s': unknown architecture '%s' (vit_tiny..vit_large, efficientnet-b0..b7)", m->spec, arch);
    int size = s->n >= 3 ? (is_uint(s->f[2]) ? atoi(s->f[2]) : -1) : (s->size > 0 ? (int)s->size : default_size);
    if (size < 32 || s->n > 3) return err_set(e, "model spec '%s': expected random:%s[:SIZE >= 32]", m->spec, arch);
    ec.static_size = size;
    effnet_declare(&m->effnet, &ec, &m->ps, "");
    params_alloc(&m->ps);
    effnet_init(&m->effnet, &r);
    m->kind = BENCH_EFFNET;
    m->size = size;
    m->in_chans = ec.in_chans;
    m->feat_dim = m->effnet.feat_dim;
    sfmt(m->desc, sizeof m->desc, "efficientnet-b%d random init (seed %llu), %d px", ec.variant, (unsigned long long)seed, size);
    return 0;
}

static int load_ssl(BenchModel *m, const Spec *s, int default_size, Err *e) {
    if (s->n < 2) return err_set(e, "model spec '%s': expected ckpt:PATH[:teacher|student][:SIZE]", m->spec);
    const char *path = s->f[1], *which = "teacher";
    int size = s->size > 0 ? (int)s->size : 0;
    for (int i = 2; i < s->n; i++) {
        if (!strcmp(s->f[i], "teacher") || !strcmp(s->f[i], "student")) which = s->f[i];
        else if (is_uint(s->f[i])) size = atoi(s->f[i]);
        else return err_set(e, "model spec '%s': '%s' is not teacher, student or a size", m->spec, s->f[i]);
    }
    SslConfig sc;
    if (ssl_load_model(path, which, &sc, &m->ssl, &m->ps, e)) return 1;
    m->is_ssl = 1;
    m->kind = BENCH_VIT;
    m->patch = sc.vit.patch;
    m->size = round_to_patch(size > 0 ? size : default_size, m->patch);
    m->in_chans = sc.vit.in_chans;
    m->feat_dim = sc.vit.embed_dim;
    sfmt(m->desc, sizeof m->desc, "stage-1 %s ViT (dim %d, depth %d, /%d) from %s, %d px", which, sc.vit.embed_dim,
             sc.vit.depth, sc.vit.patch, path, m->size);
    fingerprint(m, path);
    return 0;
}

static int load_effnet_file(BenchModel *m, const Spec *s, int default_size, Err *e) {
    if (s->n < 2) return err_set(e, "model spec '%s': expected effnet-ckpt:PATH[:efficientnet-bN][:SIZE][:prefix=P]", m->spec);
    const char *path = s->f[1], *arch = NULL;
    int size = s->size > 0 ? (int)s->size : default_size;
    for (int i = 2; i < s->n; i++) {
        if (is_uint(s->f[i])) size = atoi(s->f[i]);
        else arch = s->f[i];
    }
    if (size < 32) return err_set(e, "model spec '%s': size %d is below 32", m->spec, size);
    H5List l;
    if (h5_list(path, &l, e)) return 1;
    char prefix[256];
    int rc = 1;
    if (find_prefix(&l, path, "_conv_stem.weight", s->prefix, "EfficientNet (lukemelas names)", prefix, sizeof prefix, e))
        goto out;
    int blocks = count_indexed(&l, prefix, "_blocks");
    char hk[300];
    snprintf(hk, sizeof hk, "%s_conv_head.weight", prefix);
    const H5Entry *head = h5_find(&l, hk);
    if (!head || head->nd != 4) {
        err_set(e, "%s: missing '%s'", path, hk);
        goto out;
    }
    EffNetConfig ec;
    int found = -1;
    for (int v = 0; v < 8 && found < 0; v++) {
        char nm[32];
        snprintf(nm, sizeof nm, "efficientnet-b%d", v);
        if (arch && strcmp(arch, nm) && strcmp(arch, nm + 13)) continue;
        effnet_config(nm, &ec);
        ParamStore tmp;
        EffNet probe;
        params_init(&tmp);
        effnet_declare(&probe, &ec, &tmp, "");
        if (probe.n_blocks == blocks && (size_t)probe.feat_dim == head->shape[0]) found = v;
        params_free(&tmp);
    }
    if (found < 0) {
        if (arch)
            err_set(e, "%s: the tensors under '%s' (%d blocks, head %zu channels) do not match %s", path, prefix, blocks,
                    head->shape[0], arch);
        else
            err_set(e, "%s: the tensors under '%s' (%d blocks, head %zu channels) match no EfficientNet B0-B7", path, prefix,
                    blocks, head->shape[0]);
        goto out;
    }
    char nm[32];
    snprintf(nm, sizeof nm, "efficientnet-b%d", found);
    effnet_config(nm, &ec);
    ec.static_size = size;   /* TF "SAME" padding computed for the size the model runs at */
    params_init(&m->ps);
    m->ps.values_only = 1;
    effnet_declare(&m->effnet, &ec, &m->ps, "");
    params_alloc(&m->ps);
    CkptStore st = {.prefix = prefix, .ps = &m->ps, .partial = 1};
    if (ckpt_load_stores(path, &st, 1, NULL, NULL, 0, NULL, 0, e)) goto out;
    m->kind = BENCH_EFFNET;
    m->size = size;
    m->in_chans = ec.in_chans;
    m->feat_dim = m->effnet.feat_dim;
    sfmt(m->desc, sizeof m->desc, "%s from %s%s%s%s, %d px", nm, path, prefix[0] ? " (prefix '" : "", prefix,
             prefix[0] ? "')" : "", size);
    fingerprint(m, path);
    rc = 0;
out:
    h5_list_free(&l);
    return rc;
}

static int load_vit_file(BenchModel *m, const Spec *s, int default_size, Err *e) {
    if (s->n < 2) return err_set(e, "model spec '%s': expected vit-h5:PATH[:SIZE][:prefix=P]", m->spec);
    const char *path = s->f[1];
    int size = s->size > 0 ? (int)s->size : default_size;
    for (int i = 2; i < s->n; i++) {
        if (!is_uint(s->f[i])) return err_set(e, "model spec '%s': '%s' is not a size", m->spec, s->f[i]);
        size = atoi(s->f[i]);
    }
    H5List l;
    if (h5_list(path, &l, e)) return 1;
    char prefix[256], k[320];
    int rc = 1;
    if (find_prefix(&l, path, "patch_embed.proj.weight", s->prefix, "ViT (DINOv2 names)", prefix, sizeof prefix, e)) goto out;
    snprintf(k, sizeof k, "%spatch_embed.proj.weight", prefix);
    const H5Entry *pe = h5_find(&l, k);
    snprintf(k, sizeof k, "%spos_embed", prefix);
    const H5Entry *pos = h5_find(&l, k);
    if (!pe || pe->nd != 4 || !pos || pos->nd != 3) {
        err_set(e, "%s: missing or malformed '%spatch_embed.proj.weight' / '%spos_embed'", path, prefix, prefix);
        goto out;
    }
    int C = (int)pe->shape[0], patch = (int)pe->shape[2];
    const char *arch = C == 192 ? "vit_tiny" : C == 384 ? "vit_small" : C == 768 ? "vit_base" : C == 1024 ? "vit_large" : NULL;
    if (!arch) {
        err_set(e, "%s: embedding width %d is not a ViT-Ti/S/B/L", path, C);
        goto out;
    }
    snprintf(k, sizeof k, "%sregister_tokens", prefix);
    const H5Entry *reg = h5_find(&l, k);
    int R = reg && reg->nd == 3 ? (int)reg->shape[1] : 0;
    long tokens = (long)pos->shape[1] - 1;
    int M = 0;
    while ((long)(M + 1) * (M + 1) <= tokens) M++;
    if ((long)M * M != tokens) {
        err_set(e, "%s: pos_embed has %ld patch positions, not a square grid", path, tokens);
        goto out;
    }
    ViTConfig vc;
    vit_config(arch, patch, M * patch, &vc);
    vc.in_chans = (int)pe->shape[1];
    vc.depth = count_indexed(&l, prefix, "blocks");
    vc.n_registers = R;
    snprintf(k, sizeof k, "%sblocks.0.ls1.gamma", prefix);
    if (!h5_find(&l, k)) vc.layerscale = 0;
    params_init(&m->ps);
    m->ps.values_only = 1;
    vit_declare(&m->vit, &vc, &m->ps, "");
    params_alloc(&m->ps);
    CkptStore st = {.prefix = prefix, .ps = &m->ps, .partial = 1};
    if (ckpt_load_stores(path, &st, 1, NULL, NULL, 0, NULL, 0, e)) goto out;
    m->kind = BENCH_VIT;
    m->patch = patch;
    m->size = round_to_patch(size, patch);
    m->in_chans = vc.in_chans;
    m->feat_dim = C;
    sfmt(m->desc, sizeof m->desc, "%s/%d (depth %d) from %s%s%s%s, %d px", arch, patch, vc.depth, path,
             prefix[0] ? " (prefix '" : "", prefix, prefix[0] ? "')" : "", m->size);
    fingerprint(m, path);
    rc = 0;
out:
    h5_list_free(&l);
    return rc;
}

int bench_model_load(BenchModel *m, const char *name, const char *spec, int default_size, Err *e) {
    memset(m, 0, sizeof *m);
    snprintf(m->name, sizeof m->name, "%s", name);
    snprintf(m->spec, sizeof m->spec, "%s", spec);
    for (const char *p = name; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr("_-.+", *p))
            return err_set(e, "model name '%s': use letters, digits and _-.+ only (it names a folder)", name);
    if (!name[0]) return err_set(e, "model spec '%s': empty model name", spec);
    Spec s;
    if (spec_parse(spec, &s, e)) return 1;
    int rc;
    if (s.n == 0) return err_set(e, "empty model spec");
    if (!strcmp(s.f[0], "random")) rc = load_random(m, &s, default_size, e);
    else if (!strcmp(s.f[0], "ckpt")) rc = load_ssl(m, &s, default_size, e);
    else if (!strcmp(s.f[0], "effnet-ckpt")) rc = load_effnet_file(m, &s, default_size, e);
    else if (!strcmp(s.f[0], "vit-h5")) rc = load_vit_file(m, &s, default_size, e);
    else
        return err_set(e, "model spec '%s': unknown kind '%s' (ckpt, effnet-ckpt, vit-h5, random)", spec, s.f[0]);
    if (rc) {
        bench_model_free(m);
        return 1;
    }
    if (!m->fingerprint[0]) fingerprint(m, NULL);
    if (s.layerscale >= 0 && !(m->kind == BENCH_VIT && !m->is_ssl && !strcmp(s.f[0], "random"))) {
        bench_model_free(m);
        return err_set(e, "model spec '%s': layerscale= applies to random ViTs only", spec);
    }
    if (s.feature != BENCH_FEAT_GAP) {
        if (m->kind != BENCH_VIT) {
            bench_model_free(m);
            return err_set(e, "model spec '%s': feature= applies to ViTs only", spec);
        }
        m->feature = s.feature;
        if (m->feature == BENCH_FEAT_CLS_GAP) m->feat_dim *= 2;
    }
    return 0;
}

void bench_model_free(BenchModel *m) {
    if (m->is_ssl) ssl_model_free(&m->ssl);
    else if (m->kind == BENCH_VIT) vit_free(&m->vit);
    params_free(&m->ps);
    m->is_ssl = 0;
    memset(&m->vit, 0, sizeof m->vit);
}

void bench_model_forward(Ctx *c, const BenchModel *m, const float *x, int B, float *feat) {
    int prev = ctx_set_grad(c, 0);
    int training = c->training;
    c->training = 0;
    ctx_step_begin(c);
    const size_t S = (size_t)m->size;
    Tensor *in = tensor_from(c, 4, TSHAPE((size_t)B, (size_t)m->in_chans, S, S), x);
    Tensor *f;
    if (m->kind == BENCH_VIT) {
        ViTOut o = vit_forward(c, m->is_ssl ? &m->ssl.backbone : &m->vit, in, NULL);
        Tensor *both[2] = {o.cls, o.pooled};
        f = m->feature == BENCH_FEAT_CLS ? o.cls : m->feature == BENCH_FEAT_CLS_GAP ? op_concat(c, both, 2, 1) : o.pooled;
    } else f = effnet_forward(c, &m->effnet, in).pooled;
    tensor_copy_to(f, feat);
    c->training = training;
    ctx_set_grad(c, prev);
}
