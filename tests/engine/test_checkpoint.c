/* test_checkpoint.c — HDF5 checkpoints: exact round trip (values, optimizer moments, RNG, step,
 * config, extra arrays, several stores), validation messages that name every bad tensor, clean
 * failures on truncated / garbage / missing files, and atomic writes: a failed or killed write
 * never damages the previous checkpoint.
 *
 * With VERSA_CKPT_EXPORT=path the round-trip test also writes a checkpoint of a small
 * torch.nn.Sequential for tests/ref/check_ckpt_torch.py (optional, not run by CI). */
#include "tests/common/testutil.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- helpers ---- */

typedef struct TmpDir {
    char path[64];
} TmpDir;

static void tmpdir_make(TmpDir *d) {
    snprintf(d->path, sizeof d->path, "/tmp/versa-ckpt-XXXXXX");
    assert_non_null(mkdtemp(d->path));
}

static void tmpdir_remove(TmpDir *d) {
    DIR *dir = opendir(d->path);
    if (dir) {
        struct dirent *de;
        char p[512];
        while ((de = readdir(dir))) {
            if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
            snprintf(p, sizeof p, "%s/%s", d->path, de->d_name);
            if (unlink(p) != 0) rmdir(p);
        }
        closedir(dir);
    }
    rmdir(d->path);
}

/* number of entries in the folder (a failed save must not leave its temporary file) */
static int tmpdir_count(const TmpDir *d) {
    DIR *dir = opendir(d->path);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(dir)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) n++;
    closedir(dir);
    return n;
}

/* A small ViT-like student: weights, a 0-dim buffer like BatchNorm's num_batches_tracked. */
static void declare_model(ParamStore *ps, int values_only, size_t width) {
    params_init(ps);
    ps->values_only = values_only;
    param_(ps, "cls_token", 1, 1, width);
    param_(ps, "blocks.0.attn.qkv.weight", 3 * width, width);
    param_(ps, "blocks.0.attn.qkv.bias", 3 * width);
    param_(ps, "blocks.0.ls1.gamma", width);
    buffer_(ps, "bn.running_mean", width);
    param_declare(ps, "bn.num_batches_tracked", PARAM_BUFFER, 0, NULL);
    params_alloc(ps);
}

/* per tensor: the alignment gaps between tensors are not saved and must stay zero */
static void fill(ParamStore *ps, uint64_t seed) {
    Rng r;
    rng_init(&r, seed);
    for (size_t k = 0; k < ps->n; k++) {
        const Param *p = &ps->p[k];
        size_t n = p->t->numel;
        rng_fill_normal(&r, p->t->data, n, 0, 1);
        if (p->kind == PARAM_TRAINABLE && ps->m) {
            rng_fill_normal(&r, ps->m + p->offset, n, 0, 1);
            rng_fill_uniform(&r, ps->v + p->offset, n, 0, 1);
        }
    }
}

static void fill_const(ParamStore *ps, float value) {
    for (size_t k = 0; k < ps->n; k++)
        for (size_t i = 0; i < ps->p[k].t->numel; i++) ps->p[k].t->data[i] = value;
}

/* Runs f with stderr sent to a file; returns how many bytes were printed there. */
static long stderr_bytes_during(int (*f)(void *), void *ud, int *ret) {
    fflush(stderr);
    int saved = dup(2);
    FILE *tmp = tmpfile();
    dup2(fileno(tmp), 2);
    *ret = f(ud);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    fseek(tmp, 0, SEEK_END);
    long n = ftell(tmp);
    fclose(tmp);
    return n;
}

/* ---- round trip ---- */

static void export_torch_sequential(const char *path) {
    /* torch.nn.Sequential(Linear(4, 8), BatchNorm1d(8), ReLU(), Linear(8, 2)): value i of every
     * tensor is sin(i + k) for its index k, which the Python script recomputes */
    ParamStore ps;
    params_init(&ps);
    Tensor *t[9];
    t[0] = param_(&ps, "0.weight", 8, 4);
    t[1] = param_(&ps, "0.bias", 8);
    t[2] = param_(&ps, "1.weight", 8);
    t[3] = param_(&ps, "1.bias", 8);
    t[4] = buffer_(&ps, "1.running_mean", 8);
    t[5] = buffer_(&ps, "1.running_var", 8);
    t[6] = param_declare(&ps, "1.num_batches_tracked", PARAM_BUFFER, 0, NULL);
    t[7] = param_(&ps, "3.weight", 2, 8);
    t[8] = param_(&ps, "3.bias", 2);
    params_alloc(&ps);
    for (int k = 0; k < 9; k++)
        for (size_t i = 0; i < t[k]->numel; i++) t[k]->data[i] = sinf((float)(i + (size_t)k));
    t[5]->data[0] = 1.5f;              /* a variance must be positive */
    for (size_t i = 1; i < 8; i++) t[5]->data[i] = 1.0f + 0.1f * (float)i;
    t[6]->data[0] = 42;
    Err e = {0};
    if (ckpt_save(path, &ps, 0, NULL, NULL, 0, &e)) fail_msg("%s", e.msg);
    print_message("wrote %s for tests/ref/check_ckpt_torch.py\n", path);
    params_free(&ps);
}

static void test_round_trip(void **st) {
    (void)st;
    TmpDir d;
    tmpdir_make(&d);
    char path[128];
    snprintf(path, sizeof path, "%s/ckpt.h5", d.path);

    ParamStore student, teacher;
    declare_model(&student, 0, 8);
    declare_model(&teacher, 1, 8);
    fill(&student, 1);
    fill(&teacher, 2);
    Rng rng;
    rng_init(&rng, 77);
    for (int i = 0; i < 5; i++) rng_u32(&rng);   /* leaves buffered words: they must survive too */
    float center[6] = {1, 2, 3, 4, 5, 6};
    CkptExtra extra[1] = {{"dino_center", center, 6}};
    const char *config = "student:\n  arch: vit_tiny\noptim:\n  lr: 0.0005  # comment\nname: \"mammo ü\"\n";
    CkptMeta meta = {.step = 1234, .rng = rng, .config_text = config};
    CkptStore stores[2] = {{"student.", &student, 1, 0}, {"teacher.", &teacher, 0, 0}};
    Err e = {0};
    if (ckpt_save_stores(path, stores, 2, &meta, extra, 1, &e)) fail_msg("%s", e.msg);
    assert_int_equal(tmpdir_count(&d), 1);   /* no temporary left behind */

    ParamStore s2, t2;
    declare_model(&s2, 0, 8);
    declare_model(&t2, 1, 8);
    float center2[6] = {0};
    CkptExtra extra2[1] = {{"dino_center", center2, 6}};
    CkptMeta meta2;
    char config2[256];
    CkptStore stores2[2] = {{"student.", &s2, 1, 0}, {"teacher.", &t2, 0, 0}};
    if (ckpt_load_stores(path, stores2, 2, &meta2, config2, sizeof config2, extra2, 1, &e)) fail_msg("%s", e.msg);
    assert_memory_equal(s2.data, student.data, student.n_train * sizeof(float));
    assert_memory_equal(s2.m, student.m, student.n_train * sizeof(float));
    assert_memory_equal(s2.v, student.v, student.n_train * sizeof(float));
    assert_memory_equal(s2.buf, student.buf, student.n_buf * sizeof(float));
    assert_memory_equal(t2.data, teacher.data, teacher.n_train * sizeof(float));
    assert_memory_equal(t2.buf, teacher.buf, teacher.n_buf * sizeof(float));
    assert_memory_equal(center2, center, sizeof center);
    assert_int_equal(meta2.step, 1234);
    assert_string_equal(config2, config);
    /* the restored generator continues exactly where the saved one was */
    for (int i = 0; i < 50; i++) assert_int_equal(rng_u32(&meta2.rng), rng_u32(&rng));

    /* the config alone, for a resumed run that must rebuild its models first */
    char *cfg_text = ckpt_read_config(path, &e);
    assert_non_null(cfg_text);
    assert_string_equal(cfg_text, config);
    free(cfg_text);

    /* the teacher alone from the same file, through the one-store wrapper */
    ParamStore t3;
    declare_model(&t3, 1, 8);
    if (ckpt_load(path, &t3, "teacher.", 0, NULL, NULL, 0, NULL, 0, &e)) fail_msg("%s", e.msg);
    assert_memory_equal(t3.data, teacher.data, teacher.n_train * sizeof(float));
    /* asking for optimizer state a teacher-only file does not have */
    ParamStore s3;
    declare_model(&s3, 0, 8);
    char p2[160];
    snprintf(p2, sizeof p2, "%s/teacher.h5", d.path);
    if (ckpt_save(p2, &teacher, 0, NULL, NULL, 0, &e)) fail_msg("%s", e.msg);
    assert_int_equal(ckpt_load(p2, &s3, "", 1, NULL, NULL, 0, NULL, 0, &e), 1);
    assert_non_null(strstr(e.msg, "no optimizer state"));
    /* and a training resume from a weights-only file is refused with a reason */
    memset(&e, 0, sizeof e);
    assert_int_equal(ckpt_load(p2, &s3, "", 0, &meta2, NULL, 0, NULL, 0, &e), 1);
    assert_non_null(strstr(e.msg, "not a training checkpoint"));

    const char *exp = getenv("VERSA_CKPT_EXPORT");
    if (exp && exp[0]) export_torch_sequential(exp);

    params_free(&student);
    params_free(&teacher);
    params_free(&s2);
    params_free(&t2);
    params_free(&t3);
    params_free(&s3);
    tmpdir_remove(&d);
}

/* ---- validation ---- */

static void test_mismatch_names_every_tensor(void **st) {
    (void)st;
    TmpDir d;
    tmpdir_make(&d);
    char path[128];
    snprintf(path, sizeof path, "%s/ckpt.h5", d.path);
    ParamStore a;
    declare_model(&a, 0, 8);
    fill(&a, 3);
    Err e = {0};
    if (ckpt_save(path, &a, 1, NULL, NULL, 0, &e)) fail_msg("%s", e.msg);

    /* one tensor with another shape, one the file lacks ("head.weight"), and one in the file
     * the model lacks ("blocks.0.ls1.gamma") */
    ParamStore b;
    params_init(&b);
    param_(&b, "cls_token", 1, 1, 8);
    param_(&b, "blocks.0.attn.qkv.weight", 24, 4);     /* wrong shape */
    param_(&b, "blocks.0.attn.qkv.bias", 24);
    buffer_(&b, "bn.running_mean", 8);
    param_declare(&b, "bn.num_batches_tracked", PARAM_BUFFER, 0, NULL);
    param_(&b, "head.weight", 2, 8);                     /* missing from the file */
    params_alloc(&b);
    float before = b.data[0];
    assert_int_equal(ckpt_load(path, &b, "", 0, NULL, NULL, 0, NULL, 0, &e), 1);
    print_message("message: %s\n", e.msg);
    assert_non_null(strstr(e.msg, path));
    assert_non_null(strstr(e.msg, "1 missing (head.weight)"));
    assert_non_null(strstr(e.msg, "blocks.0.attn.qkv.weight: file (24,8) vs model (24,4)"));
    assert_non_null(strstr(e.msg, "1 unexpected (blocks.0.ls1.gamma)"));
    assert_float_equal(b.data[0], before, 0);   /* nothing read when validation fails */

    /* optimizer state is validated too */
    memset(&e, 0, sizeof e);
    assert_int_equal(ckpt_load(path, &b, "", 1, NULL, NULL, 0, NULL, 0, &e), 1);
    assert_non_null(strstr(e.msg, "optim/m/head.weight"));

    /* partial: unexpected tensors are ignored, the rest still checked */
    CkptStore s = {"", &b, 0, 1};
    memset(&e, 0, sizeof e);
    assert_int_equal(ckpt_load_stores(path, &s, 1, NULL, NULL, 0, NULL, 0, &e), 1);
    assert_null(strstr(e.msg, "unexpected"));
    assert_non_null(strstr(e.msg, "head.weight"));

    /* many problems: counts plus the first few names */
    ParamStore c;
    params_init(&c);
    char name[32];
    for (int i = 0; i < 12; i++) {
        snprintf(name, sizeof name, "extra.%d.weight", i);
        param_(&c, name, 3);
    }
    params_alloc(&c);
    memset(&e, 0, sizeof e);
    CkptStore sc = {"", &c, 0, 1};
    assert_int_equal(ckpt_load_stores(path, &sc, 1, NULL, NULL, 0, NULL, 0, &e), 1);
    print_message("message: %s\n", e.msg);
    assert_non_null(strstr(e.msg, "12 missing (extra.0.weight, extra.1.weight, extra.2.weight, ...)"));

    /* a missing extra state array */
    float buf[3];
    CkptExtra x = {"center", buf, 3};
    memset(&e, 0, sizeof e);
    assert_int_equal(ckpt_load(path, &a, "", 0, NULL, NULL, 0, &x, 1, &e), 1);
    assert_non_null(strstr(e.msg, "missing state array 'center'"));

    params_free(&a);
    params_free(&b);
    params_free(&c);
    tmpdir_remove(&d);
}

typedef struct LoadArgs {
    const char *path;
    ParamStore *ps;
    Err *e;
} LoadArgs;

static int do_load(void *ud) {
    LoadArgs *a = ud;
    return ckpt_load(a->path, a->ps, "", 0, NULL, NULL, 0, NULL, 0, a->e);
}

static void test_truncated_and_garbage_files(void **st) {
    (void)st;
    TmpDir d;
    tmpdir_make(&d);
    char path[128];
    snprintf(path, sizeof path, "%s/ckpt.h5", d.path);
    ParamStore a;
    declare_model(&a, 0, 64);
    fill(&a, 4);
    Err e = {0};
    if (ckpt_save(path, &a, 1, NULL, NULL, 0, &e)) fail_msg("%s", e.msg);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(truncate(path, sb.st_size / 2), 0);

    LoadArgs la = {path, &a, &e};
    int ret;
    long printed = stderr_bytes_during(do_load, &la, &ret);
    print_message("truncated: %s\n", e.msg);
    assert_int_equal(ret, 1);
    assert_non_null(strstr(e.msg, path));
    assert_non_null(strstr(e.msg, "truncated or corrupt"));
    assert_int_equal(printed, 0);   /* HDF5's error stack stays quiet */

    /* not HDF5 at all */
    FILE *f = fopen(path, "wb");
    for (int i = 0; i < 4096; i++) fputc((i * 7919) & 255, f);
    fclose(f);
    memset(&e, 0, sizeof e);
    assert_int_equal(do_load(&la), 1);
    assert_non_null(strstr(e.msg, "truncated or corrupt"));

    /* absent */
    snprintf(path, sizeof path, "%s/none.h5", d.path);
    memset(&e, 0, sizeof e);
    assert_int_equal(do_load(&la), 1);
    assert_non_null(strstr(e.msg, "No such file"));
    char *cfg = ckpt_read_config(path, &e);
    assert_null(cfg);
    params_free(&a);
    tmpdir_remove(&d);
}

/* ---- atomic writes ---- */

static void check_version(const char *path, float value) {
    ParamStore b;
    declare_model(&b, 0, 64);
    Err e = {0};
    if (ckpt_load(path, &b, "", 0, NULL, NULL, 0, NULL, 0, &e)) fail_msg("%s", e.msg);
    for (size_t k = 0; k < b.n; k++)
        for (size_t i = 0; i < b.p[k].t->numel; i++)
            if (b.p[k].t->data[i] != value)
                fail_msg("%s[%zu]: %g, expected %g", b.p[k].name, i, b.p[k].t->data[i], value);
    params_free(&b);
}

static void test_failed_write_keeps_old_checkpoint(void **st) {
    (void)st;
    TmpDir d;
    tmpdir_make(&d);
    char path[128];
    snprintf(path, sizeof path, "%s/ckpt.h5", d.path);
    ParamStore old, big;
    declare_model(&old, 0, 64);
    fill_const(&old, 1.0f);
    Err e = {0};
    if (ckpt_save(path, &old, 0, NULL, NULL, 0, &e)) fail_msg("%s", e.msg);

    /* 1. disk full in the middle of the write: a file-size limit below the new file's size
     *    (works as root too, unlike a read-only folder) */
    declare_model(&big, 0, 256);   /* ~1 MB with the moments */
    fill_const(&big, 2.0f);
    struct rlimit saved, lim;
    getrlimit(RLIMIT_FSIZE, &saved);
    lim = saved;
    lim.rlim_cur = 256 << 10;
    signal(SIGXFSZ, SIG_IGN);   /* get EFBIG instead of being killed */
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    int ret = ckpt_save(path, &big, 1, NULL, NULL, 0, &e);
    setrlimit(RLIMIT_FSIZE, &saved);
    signal(SIGXFSZ, SIG_DFL);
    print_message("disk full: %s\n", e.msg);
    assert_int_equal(ret, 1);
    assert_non_null(strstr(e.msg, path));
    assert_int_equal(tmpdir_count(&d), 1);   /* the temporary file was removed */
    check_version(path, 1.0f);

    /* 2. the temporary file cannot be created (its name is taken by a folder) */
    char tmp[192];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    assert_int_equal(mkdir(tmp, 0755), 0);
    memset(&e, 0, sizeof e);
    assert_int_equal(ckpt_save(path, &old, 0, NULL, NULL, 0, &e), 1);
    print_message("blocked: %s\n", e.msg);
    assert_non_null(strstr(e.msg, "cannot create"));
    rmdir(tmp);
    check_version(path, 1.0f);

    /* 3. a name HDF5 would turn into groups is refused before anything is written */
    ParamStore bad;
    params_init(&bad);
    param_(&bad, "a/b", 2);
    params_alloc(&bad);
    memset(&e, 0, sizeof e);
    assert_int_equal(ckpt_save(path, &bad, 0, NULL, NULL, 0, &e), 1);
    assert_non_null(strstr(e.msg, "'a/b'"));
    check_version(path, 1.0f);

    /* 4. an unwritable folder (only meaningful when not root: root ignores permissions) */
    if (geteuid() != 0) {
        chmod(d.path, 0555);
        memset(&e, 0, sizeof e);
        assert_int_equal(ckpt_save(path, &old, 0, NULL, NULL, 0, &e), 1);
        assert_non_null(strstr(e.msg, "Permission denied"));
        chmod(d.path, 0755);
        check_version(path, 1.0f);
    }
    params_free(&bad);
    params_free(&old);
    params_free(&big);
    tmpdir_remove(&d);
}

/* A child process saves checkpoints in a loop, each one filled with its own version number, and
 * is killed with SIGKILL at different moments.  Whatever the moment, the checkpoint on disk must
 * load and hold one consistent version. */
static void test_kill_during_write(void **st) {
    (void)st;
    TmpDir d;
    tmpdir_make(&d);
    char path[128];
    snprintf(path, sizeof path, "%s/ckpt.h5", d.path);
    ParamStore ps;
    declare_model(&ps, 0, 256);
    fill_const(&ps, 0.0f);
    Err e = {0};
    if (ckpt_save(path, &ps, 1, NULL, NULL, 0, &e)) fail_msg("%s", e.msg);
    const int delays_ms[4] = {3, 17, 41, 90};
    for (int round = 0; round < 4; round++) {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            for (int v = 1;; v++) {
                fill_const(&ps, (float)v);
                if (ckpt_save(path, &ps, 1, NULL, NULL, 0, &e)) _exit(3);
            }
        }
        struct timespec ts = {0, delays_ms[round] * 1000000L};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        assert_true(WIFSIGNALED(status));   /* it was still saving, not failing */
        ParamStore b;
        declare_model(&b, 0, 256);
        if (ckpt_load(path, &b, "", 1, NULL, NULL, 0, NULL, 0, &e)) fail_msg("round %d: %s", round, e.msg);
        float v = b.data[0];
        for (size_t k = 0; k < b.n; k++) {
            const Tensor *t = b.p[k].t;
            for (size_t i = 0; i < t->numel; i++)
                if (t->data[i] != v) fail_msg("round %d: %s mixes versions %g and %g", round, b.p[k].name, v, t->data[i]);
        }
        print_message("killed after %d ms: checkpoint holds version %g, intact\n", delays_ms[round], v);
        params_free(&b);
    }
    params_free(&ps);
    tmpdir_remove(&d);   /* also removes temporaries the killed writers left */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_mismatch_names_every_tensor),
        cmocka_unit_test(test_truncated_and_garbage_files),
        cmocka_unit_test(test_failed_write_keeps_old_checkpoint),
        cmocka_unit_test(test_kill_during_write),
    };
    return RUN_GROUP(tests);
}
