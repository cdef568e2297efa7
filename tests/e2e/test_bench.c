/* test_bench.c — the benchmark end to end on synthetic mammograms written in the VinDr-Mammo and
 * CBIS-DDSM layouts and prepared by the real converters: every protocol (linear, k-NN,
 * multi-label, retrieval) beats chance with random-init backbones on a task their features can
 * separate (breast density), crops are cut from lesion boxes, a missing dataset is skipped, a
 * bad label fails only its task, the report files are written, and a rerun reads the feature
 * cache and reproduces every number.  The part-2 protocols (UNet segmentation, Faster R-CNN
 * detection, VQA on the synthetic MammoVQA JSON) run with tiny heads for a few steps: their rows
 * reach results.csv with finite values in range, the contact sheets are written, and the rerun
 * reproduces them exactly (these heads are seeded, not cached). */
#include "tests/common/testutil.h"
#include "bench/bench.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char g_dir[256];

static const char *SUITE =
    "suite: {name: e2e, description: tiny synthetic suite}\n"
    "input: {size: 32, batch: 64}\n"
    "linear: {val_every: 25, patience: 8, max_iters: 3000}\n"
    "multilabel: {val_every: 25, patience: 8, max_iters: 3000}\n"
    "retrieval: {mean: 0.5, std: 0.5}\n"
    "bootstrap: {n: 200, seed: 1}\n"
    "segmentation: {steps: 10, batch: 4, width: 0.125}\n"
    "detection: {steps: 10, batch: 2, fpn_channels: 16, representation: 32, train_fpn: true, anchor_sizes: [4, 8, 16],\n"
    "            box_batch: 32, rpn_batch: 32, proposals: 100}\n"
    "vqa: {steps: 10, batch: 16, dim: 32, depth: 1, heads: 2, max_words: 12}\n"
    "report: {sheet_images: 4}\n"
    "datasets:\n"
    "  vindr: {file: vindr.h5}\n"
    "  cbis: {file: cbis.h5}\n"
    "  vqa: {file: raw/mammovqa/MammoVQA-Image-Train.json}\n"
    "tasks:\n"
    "  density: {dataset: vindr, category: classification, protocol: [linear, knn], label: density,\n"
    "            classes: [A, B, C, D]}\n"
    "  density_ml: {dataset: vindr, category: classification, multilabel: true, label: density,\n"
    "               classes: [fatty, dense, extremely_dense], source: [\"A|B\", \"C|D\", D]}\n"
    "  dense_retrieval: {dataset: vindr, category: retrieval, label: density, classes: [fatty, dense],\n"
    "                    source: [\"A|B\", \"C|D\"]}\n"
    "  lesion_type: {dataset: cbis, category: classification, unit: crop, label: box, classes: [mass, calcification]}\n"
    "  findings: {dataset: vindr, category: classification, multilabel: true, label: findings,\n"
    "             classes: [Mass, Suspicious Calcification]}\n"
    "  missing: {dataset: nowhere, category: classification, label: density, classes: [A, B]}\n"
    "  mass_seg: {dataset: cbis, category: segmentation, classes: [mass]}\n"
    "  lesion_det: {dataset: cbis, category: detection, label: boxes, classes: [lesion], source: [\"mass|calcification\"]}\n"
    "  vqa_view: {dataset: vqa, category: vqa, label: View, classes: [MLO, CC]}\n"
    "  vqa_abnormality: {dataset: vqa, category: vqa, multilabel: true, label: Abnormality, metric: f1,\n"
    "                    classes: [Calcification, Mass, Normal, Asymmetry, Architectural distortion]}\n"
    "  bad_label: {dataset: vindr, category: classification, label: nope, classes: [a, b]}\n";

static const BenchModelSpec MODELS[2] = {{"vit", "random:vit_tiny:16:32"}, {"enb0", "random:efficientnet-b0:32"}};

static int setup(void **st) {
    (void)st;
    snprintf(g_dir, sizeof g_dir, "/tmp/versa_test_bench_%d", (int)getpid());
    SynthConfig sc;
    synth_config_default(&sc);
    sc.n_patients = 120;   /* 480 images; the test split holds ~64 */
    sc.width = 64;
    sc.height = 80;
    sc.seed = 1;
    sc.quiet = 1;
    Err e = {0};
    char raw[512], src[600], out[600];
    snprintf(raw, sizeof raw, "%s/raw", g_dir);
    if (synth_write_dataset(&sc, raw, SYNTH_FMT_VINDR | SYNTH_FMT_CBIS | SYNTH_FMT_VQA, &e)) fail_msg("synth: %s", e.msg);
    const struct {
        const char *sub, *file;
        int size;
        int (*fn)(const ConvertOpts *, ConvertStats *, Err *);
    } conv[2] = {{"vindr-mammo", "vindr.h5", 32, convert_vindr}, {"cbis-ddsm", "cbis.h5", 64, convert_cbis}};
    for (int k = 0; k < 2; k++) {
        snprintf(src, sizeof src, "%s/%s", raw, conv[k].sub);
        snprintf(out, sizeof out, "%s/%s", g_dir, conv[k].file);
        ConvertOpts o = convert_opts_default();
        o.raw_root = src;
        o.out_path = out;
        o.width = o.height = conv[k].size;
        ConvertStats cs = {0};
        if (conv[k].fn(&o, &cs, &e)) fail_msg("convert %s: %s", conv[k].sub, e.msg);
    }
    snprintf(out, sizeof out, "%s/suite.yaml", g_dir);
    FILE *f = fopen(out, "w");
    if (!f) fail_msg("cannot write %s", out);
    fputs(SUITE, f);
    fclose(f);
    return 0;
}

static int teardown(void **st) {
    (void)st;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    return system(cmd) == 0 ? 0 : 1;
}

static BenchRunOpts opts(char *suite, size_t n) {
    snprintf(suite, n, "%s/suite.yaml", g_dir);
    static char out[300];
    snprintf(out, sizeof out, "%s/results", g_dir);
    return (BenchRunOpts){.suite = suite, .models = MODELS, .n_models = 2, .data_root = g_dir, .out_dir = out, .quiet = 1};
}

static const BenchResult *result(const BenchRun *run, int model, const char *task) {
    for (int ti = 0; ti < run->n_sel; ti++)
        if (!strcmp(run->reg.tasks[run->task_sel[ti]].id, task)) return &run->res[(size_t)model * run->n_sel + ti];
    fail_msg("no result for %s", task);
    return NULL;
}

static double metric(const BenchResult *r, const char *name) {
    const BenchMetric *m = bench_result_metric(r, name);
    if (!m) fail_msg("no metric %s (status %s: %s)", name, bench_status_name(r->status), r->detail);
    assert_true(m->ci.lo <= m->ci.value + 1e-12 && m->ci.value <= m->ci.hi + 1e-12);
    return m->ci.value;
}

/* expected top-1 of a random ranking: sum over classes of P(query class) P(database class), for
 * the task's classes fatty (A, B) and dense (C, D) */
static double retrieval_chance(void) {
    char path[400];
    snprintf(path, sizeof path, "%s/vindr.h5", g_dir);
    Prepared p;
    Err e = {0};
    if (prep_open(&p, path, &e)) fail_msg("%s", e.msg);
    int col = prep_label_col(&p, "density");
    double q[8] = {0}, d[8] = {0}, nq = 0, nd = 0;
    for (size_t i = 0; i < p.n; i++) {
        int v = prep_label(&p, i, col);
        if (v < 0) continue;
        v = v >= 2;
        if (p.split[i] == PREP_SPLIT_TEST) q[v]++, nq++;
        else d[v]++, nd++;
    }
    double c = 0;
    for (int k = 0; k < 8; k++) c += (q[k] / nq) * (d[k] / nd);
    prep_close(&p);
    return c;
}

static void test_protocols_beat_chance(void **st) {
    (void)st;
    char suite[300];
    BenchRunOpts o = opts(suite, sizeof suite);
    o.baseline = "enb0";
    BenchRun run;
    Err e = {0};
    if (bench_run(&o, &run, &e)) fail_msg("%s", e.msg);
    assert_int_equal(run.n_sel, 11);
    assert_int_equal(run.baseline, 1);
    for (int m = 0; m < 2; m++) {
        const char *nm = MODELS[m].name;
        const BenchResult *r = result(&run, m, "density");
        assert_int_equal(r->status, BENCH_OK);
        double auc = metric(r, "auc"), knn = metric(r, "knn_auc"), acc = metric(r, "acc");
        const BenchResult *ml = result(&run, m, "density_ml");
        assert_int_equal(ml->status, BENCH_OK);
        double mauc = metric(ml, "auc");
        const BenchResult *rt = result(&run, m, "dense_retrieval");
        assert_int_equal(rt->status, BENCH_OK);
        double top1 = metric(rt, "top1"), top3 = metric(rt, "top3"), mapr = metric(rt, "mapr"), chance = retrieval_chance();
        print_message("  %-4s density: linear AUC %.3f (acc %.3f), k-NN AUC %.3f; multi-label AUC %.3f; retrieval "
                      "top1 %.3f top3 %.3f mAP@R %.3f (top1 of a random ranking %.3f); n %zu/%zu/%zu\n",
                      nm, auc, acc, knn, mauc, top1, top3, mapr, chance, r->n_split[0], r->n_split[1], r->n_split[2]);
        assert_true(r->n_split[0] > 0 && r->n_split[1] > 0 && r->n_split[2] > 0);
        assert_true(auc > 0.6);
        assert_true(knn > 0.6);
        assert_true(mauc > 0.6);
        assert_true(top1 > chance + 0.05);
        assert_true(mapr > 0 && mapr < 1);
        assert_true(top3 >= top1);
        /* crops: one item per lesion box, labelled by the box's finding class */
        const BenchResult *lt = result(&run, m, "lesion_type");
        assert_int_equal(lt->status, BENCH_OK);
        assert_true(lt->n_split[2] > 0);
        assert_true(isfinite(metric(lt, "auc")));
        assert_int_equal(result(&run, m, "findings")->status, BENCH_OK);
        /* what cannot run is reported, not fatal */
        const BenchResult *ms = result(&run, m, "missing");
        assert_int_equal(ms->status, BENCH_SKIPPED);
        assert_non_null(strstr(ms->detail, "nowhere.h5"));
        /* part 2: every metric present, finite and in [0, 1] */
        static const struct {
            const char *task, *metrics[6];
        } dense[4] = {{"mass_seg", {"dice", "iou"}},
                      {"lesion_det", {"mean_iou", "map50", "froc_0.5", "froc_1", "froc_2"}},
                      {"vqa_view", {"acc", "bacc", "f1", "auc"}},
                      {"vqa_abnormality", {"f1", "acc", "auc"}}};
        for (int k = 0; k < 4; k++) {
            const BenchResult *dr = result(&run, m, dense[k].task);
            if (dr->status != BENCH_OK) fail_msg("%s %s: %s: %s", nm, dense[k].task, bench_status_name(dr->status), dr->detail);
            assert_true(dr->n_split[0] > 0 && dr->n_split[2] > 0);
            print_message("  %-4s %-16s", nm, dense[k].task);
            for (int q = 0; q < 6 && dense[k].metrics[q]; q++) {
                double v = metric(dr, dense[k].metrics[q]);
                print_message(" %s %.3f", dense[k].metrics[q], v);
                assert_true(isfinite(v) && v >= 0 && v <= 1);
            }
            print_message("  (n %zu/%zu/%zu)\n", dr->n_split[0], dr->n_split[1], dr->n_split[2]);
        }
        for (int k = 0; k < 2; k++) {   /* contact sheets of the segmentation and detection predictions */
            char png[600];
            snprintf(png, sizeof png, "%s/results/sheets/%s.%s.png", g_dir, dense[k].task, nm);
            FILE *fs = fopen(png, "rb");
            if (!fs) fail_msg("no contact sheet %s", png);
            unsigned char sg[8];
            assert_int_equal(fread(sg, 1, 8, fs), 8);
            fclose(fs);
            assert_memory_equal(sg, "\x89PNG\r\n\x1a\n", 8);
        }
        const BenchResult *bl = result(&run, m, "bad_label");
        assert_int_equal(bl->status, BENCH_FAILED);
        assert_non_null(strstr(bl->detail, "no label column 'nope'"));
    }
    /* the lesion crops: every box of the CBIS file became one item */
    char path[400];
    snprintf(path, sizeof path, "%s/cbis.h5", g_dir);
    Prepared p;
    if (prep_open(&p, path, &e)) fail_msg("%s", e.msg);
    const BenchResult *lt = result(&run, 0, "lesion_type");
    assert_int_equal(lt->n_split[0] + lt->n_split[1] + lt->n_split[2], p.n_boxes);
    prep_close(&p);

    /* ranks over the tasks both models completed */
    BenchRanks rk;
    bench_ranks(&run, &rk);
    assert_true(rk.n_tasks >= 5);   /* 5 classification/retrieval tasks + the part-2 ones with a finite primary metric */
    assert_true(fabs(rk.avg[0] + rk.avg[1] - 3.0) < 1e-9);   /* two models: ranks sum to 3 per task */
    assert_true(rk.firsts[0] + rk.firsts[1] >= rk.n_tasks);
    bench_ranks_free(&rk);

    /* the report */
    if (bench_write_report(&run, o.out_dir, &e)) fail_msg("%s", e.msg);
    char f[500], line[1024];
    snprintf(f, sizeof f, "%s/results.csv", o.out_dir);
    FILE *fp = fopen(f, "r");
    assert_non_null(fp);
    assert_non_null(fgets(line, sizeof line, fp));
    assert_string_equal(line, "model,task,category,metric,value,ci_low,ci_high\n");
    int rows = 0, want = 0;
    while (fgets(line, sizeof line, fp)) rows++;
    fclose(fp);
    for (size_t i = 0; i < (size_t)run.n_models * run.n_sel; i++) want += run.res[i].status == BENCH_OK ? run.res[i].metrics.n : 0;
    assert_int_equal(rows, want);
    snprintf(f, sizeof f, "%s/status.csv", o.out_dir);
    assert_int_equal(access(f, R_OK), 0);
    snprintf(f, sizeof f, "%s/report.md", o.out_dir);
    fp = fopen(f, "r");
    assert_non_null(fp);
    static char md[65536];
    size_t nmd = fread(md, 1, sizeof md - 1, fp);
    md[nmd] = 0;
    fclose(fp);
    assert_non_null(strstr(md, "## classification"));
    assert_non_null(strstr(md, "## retrieval"));
    assert_non_null(strstr(md, "average rank"));
    assert_non_null(strstr(md, "## Tasks not run"));
    assert_non_null(strstr(md, "## segmentation"));
    assert_non_null(strstr(md, "## detection"));
    assert_non_null(strstr(md, "## vqa"));
    assert_non_null(strstr(md, "sheets/mass_seg.vit.png"));
    assert_non_null(strstr(md, "## Paired differences against enb0"));
    /* paired.csv: one row per metric of every task both models completed, vit - enb0 */
    snprintf(f, sizeof f, "%s/paired.csv", o.out_dir);
    fp = fopen(f, "r");
    assert_non_null(fp);
    assert_non_null(fgets(line, sizeof line, fp));
    assert_string_equal(line, "model,task,metric,baseline,diff,ci_low,ci_high,p_le0\n");
    int prows = 0, pwant = 0, separated = 0;
    while (fgets(line, sizeof line, fp)) {
        char task[64], name[32];
        double d, lo, hi, p0;
        assert_int_equal(sscanf(line, "vit,%63[^,],%31[^,],enb0,%lf,%lf,%lf,%lf", task, name, &d, &lo, &hi, &p0), 6);
        double want_d = metric(result(&run, 0, task), name) - metric(result(&run, 1, task), name);
        if (fabs(d - want_d) > 2e-6) fail_msg("paired %s %s: %.6f, results give %.6f", task, name, d, want_d);
        assert_true(p0 >= 0 && p0 <= 1);
        if (isfinite(lo)) assert_true(lo <= hi);
        separated += isfinite(lo) && (lo > 0 || hi < 0);
        prows++;
    }
    fclose(fp);
    for (int ti = 0; ti < run.n_sel; ti++)
        if (run.res[ti].status == BENCH_OK && run.res[run.n_sel + ti].status == BENCH_OK) pwant += run.res[ti].metrics.n;
    assert_int_equal(prows, pwant);
    print_message("  paired.csv: %d rows, %d with a CI that excludes 0\n", prows, separated);
    snprintf(f, sizeof f, "%s/ranks.png", o.out_dir);
    fp = fopen(f, "rb");
    assert_non_null(fp);
    unsigned char sig[8];
    assert_int_equal(fread(sig, 1, 8, fp), 8);
    fclose(fp);
    assert_memory_equal(sig, "\x89PNG\r\n\x1a\n", 8);

    /* a rerun reads every feature from the cache and reproduces every number */
    BenchRun again;
    if (bench_run(&o, &again, &e)) fail_msg("%s", e.msg);
    for (size_t i = 0; i < (size_t)run.n_models * run.n_sel; i++) {
        const BenchResult *a = &run.res[i], *b = &again.res[i];
        assert_int_equal(a->status, b->status);
        if (a->status != BENCH_OK) continue;
        int dense_task = run.reg.tasks[a->task].category == BENCH_SEGMENTATION ||
                         run.reg.tasks[a->task].category == BENCH_DETECTION || run.reg.tasks[a->task].category == BENCH_VQA;
        if (!dense_task) {
            assert_non_null(strstr(b->detail, "cached)"));
            assert_null(strstr(b->detail, " 0/"));   /* "(k/k cached)", none extracted again */
        }
        assert_int_equal(a->metrics.n, b->metrics.n);
        for (int k = 0; k < a->metrics.n; k++) {
            const BenchCI *x = &a->metrics.m[k].ci, *y = &b->metrics.m[k].ci;
            if (!(x->value == y->value || (isnan(x->value) && isnan(y->value))) || !(x->lo == y->lo || isnan(x->lo)))
                fail_msg("%s %s: %.9f [%.9f] then %.9f [%.9f]", run.reg.tasks[a->task].id, a->metrics.m[k].name, x->value,
                         x->lo, y->value, y->lo);
        }
    }
    bench_run_free(&again);
    bench_run_free(&run);
}

/* `versa bench` on the test suite with `args` must exit 1; its output (stdout + stderr) in buf */
static void bench_must_fail(const char *bin, const char *args, const char *out, char *buf, size_t nbuf) {
    char cmd[2400];
    snprintf(cmd, sizeof cmd, "%s bench --suite %s/suite.yaml --data-root %s --out %s/cli %s > %s 2>&1", bin, g_dir, g_dir,
             g_dir, args, out);
    int rc = system(cmd);
    assert_true(WIFEXITED(rc) && WEXITSTATUS(rc) == 1);
    FILE *f = fopen(out, "r");
    assert_non_null(f);
    size_t n = fread(buf, 1, nbuf - 1, f);
    buf[n] = 0;
    fclose(f);
}

/* `versa bench --list` and a bad model spec through the program */
static void test_cli(void **st) {
    (void)st;
    const char *bin = getenv("VERSA_BIN") ? getenv("VERSA_BIN") : "build/versa";
    if (access(bin, X_OK) != 0) {
        print_message("%s not built: skipping\n", bin);
        skip();
    }
    char cmd[2400], out[400];
    snprintf(out, sizeof out, "%s/list.txt", g_dir);
    snprintf(cmd, sizeof cmd, "%s bench --list --suite %s/suite.yaml --data-root %s > %s 2>&1", bin, g_dir, g_dir, out);
    assert_int_equal(system(cmd), 0);
    FILE *f = fopen(out, "r");
    assert_non_null(f);
    char buf[8192];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    assert_non_null(strstr(buf, "e2e: 11 tasks"));
    assert_non_null(strstr(buf, "nowhere.h5"));
    bench_must_fail(bin, "--model x=random:vit_huge:16", out, buf, sizeof buf);
    print_message("  bad spec: %s", buf);
    assert_non_null(strstr(buf, "vit_huge"));
    bench_must_fail(bin, "--model x=random:vit_tiny:16:32 --baseline nosuch", out, buf, sizeof buf);
    print_message("  bad baseline: %s", buf);
    assert_non_null(strstr(buf, "--baseline nosuch: no --model of that name"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_protocols_beat_chance),
        cmocka_unit_test(test_cli),
    };
    return cmocka_run_group_tests_name(__FILE__, tests, setup, teardown);
}
