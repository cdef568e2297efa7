/* test_registry.c — the benchmark suites: versamammo92.yaml holds exactly the 45 tasks of
 * recipe.md §3.4 with their published class maps, synthetic.yaml covers every category, a private
 * cohort file merges in, and mistakes in a suite are errors that name the file and the key. */
#include "tests/common/testutil.h"
#include "bench/bench.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char g_dir[128];

static int setup(void **st) {
    (void)st;
    snprintf(g_dir, sizeof g_dir, "/tmp/versa_test_registry_%d", (int)getpid());
    char cmd[256];
    snprintf(cmd, sizeof cmd, "mkdir -p %s", g_dir);
    return system(cmd) == 0 ? 0 : 1;
}

static int teardown(void **st) {
    (void)st;
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    return system(cmd) == 0 ? 0 : 1;
}

static const char *write_file(const char *name, const char *text) {
    static char path[8][256];
    static int k = 0;
    char *p = path[k++ % 8];
    snprintf(p, 256, "%s/%s", g_dir, name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return p;
}

static const BenchTask *task(const BenchRegistry *r, const char *id) {
    int i = bench_find_task(r, id);
    if (i < 0) fail_msg("task %s is not in %s", id, r->path);
    return &r->tasks[i];
}

static void test_versamammo92_has_the_45_tasks(void **st) {
    (void)st;
    BenchRegistry r;
    Err e = {0};
    if (bench_registry_load(&r, "versamammo92", NULL, 0, NULL, 0, &e)) fail_msg("%s", e.msg);
    assert_int_equal(r.n_tasks, 45);
    int seen[46] = {0}, cat[BENCH_N_CATEGORIES] = {0}, multilabel = 0, crops = 0, part2 = 0;
    for (int i = 0; i < r.n_tasks; i++) {
        const BenchTask *t = &r.tasks[i];
        assert_true(t->paper >= 1 && t->paper <= 45);
        seen[t->paper]++;
        cat[t->category]++;
        multilabel += t->multilabel && t->category == BENCH_CLASSIFICATION;
        crops += t->unit == BENCH_UNIT_CROP;
        int impl = 0;
        for (int p = 0; p < t->n_protocols; p++) impl |= bench_protocol_implemented(t->protocols[p]);
        part2 += !impl;
        assert_true(t->n_classes >= 1 && t->metric[0] && t->file[0][0]);
    }
    for (int k = 1; k <= 45; k++)
        if (seen[k] != 1) fail_msg("paper task #%d appears %d times", k, seen[k]);
    print_message("  classification %d (multi-label %d), segmentation %d, detection %d, retrieval %d, vqa %d; "
                  "%d crop tasks; %d tasks without an implemented protocol\n",
                  cat[BENCH_CLASSIFICATION], multilabel, cat[BENCH_SEGMENTATION], cat[BENCH_DETECTION],
                  cat[BENCH_RETRIEVAL], cat[BENCH_VQA], crops, part2);
    assert_int_equal(cat[BENCH_CLASSIFICATION], 31);
    assert_int_equal(multilabel, 4);
    assert_int_equal(cat[BENCH_SEGMENTATION], 2);
    assert_int_equal(cat[BENCH_DETECTION], 3);
    assert_int_equal(cat[BENCH_RETRIEVAL], 1);
    assert_int_equal(cat[BENCH_VQA], 8);
    assert_int_equal(part2, 0);   /* segmentation, detection and VQA joined in part 2 */
    /* the paper's protocol settings */
    assert_int_equal(r.set.size, 512);
    assert_int_equal(r.set.linear.val_every, 500);
    assert_int_equal(r.set.linear.patience, 20);
    assert_true(r.set.linear.lr == 1e-3 && r.set.linear.weight_decay == 0);
    assert_int_equal(r.set.boot_n, 1000);
    assert_int_equal(r.set.n_topk, 3);
    assert_true(r.set.multilabel_clahe && r.set.clahe.clip_limit == 2.0f && r.set.clahe.tiles_x == 8);

    /* published details of a few tasks */
    const BenchTask *t = task(&r, "cbis_composition");
    assert_int_equal(t->paper, 1);
    assert_string_equal(t->classes[0], "Level A");
    assert_string_equal(t->source[3], "D");
    assert_true(t->sizes[0] == 2242 && t->sizes[1] == 285 && t->sizes[2] == 576);
    t = task(&r, "cbis_finding");
    assert_int_equal(t->unit, BENCH_UNIT_CROP);
    assert_string_equal(t->label, "box");
    t = task(&r, "birads_retrieval");
    assert_int_equal(t->n_datasets, 3);
    assert_string_equal(t->file[1], "embed.h5");
    assert_string_equal(t->metric, "top1");
    t = task(&r, "vqa_abnormality");
    assert_true(t->multilabel && t->category == BENCH_VQA && t->n_classes == 10);
    t = task(&r, "cbis_pathology");
    assert_int_equal(t->n_protocols, 2);
    assert_int_equal(t->protocols[0], PROTO_LINEAR);
    assert_int_equal(t->protocols[1], PROTO_KNN);
    bench_registry_free(&r);
}

static void test_class_maps(void **st) {
    (void)st;
    BenchRegistry r;
    Err e = {0};
    if (bench_registry_load(&r, "versamammo92", NULL, 0, NULL, 0, &e)) fail_msg("%s", e.msg);
    /* INbreast BI-RADS on the converter's birads_sub classes: 4a/4b/4c -> 4, 6 dropped */
    const char names[8][PREP_NAME_LEN] = {"1", "2", "3", "4a", "4b", "4c", "5", "6"};
    int map[8];
    assert_int_equal(bench_class_map(task(&r, "inbreast_birads"), "inbreast.h5", names, 8, map, NULL, NULL, &e), 0);
    int want[8] = {0, 1, 2, 3, 3, 3, 4, -1};
    assert_memory_equal(map, want, sizeof want);
    /* CBIS pathology: normal dropped, benign -> Benign, malignant -> Malignant */
    const char path[3][PREP_NAME_LEN] = {"normal", "benign", "malignant"};
    assert_int_equal(bench_class_map(task(&r, "cbis_pathology"), "cbis.h5", path, 3, map, NULL, NULL, &e), 0);
    assert_true(map[0] == -1 && map[1] == 0 && map[2] == 1);
    /* LAMIS: Normal counts as Benign */
    assert_int_equal(bench_class_map(task(&r, "lamis_pathology"), "lamis.h5", path, 3, map, NULL, NULL, &e), 0);
    assert_true(map[0] == 0 && map[1] == 0 && map[2] == 1);
    /* INbreast findings (multi-label): calcification and cluster -> Calcification; Normal = <none> */
    const char fnd[6][PREP_NAME_LEN] = {"mass", "calcification", "cluster", "spiculated region", "distortion", "asymmetry"};
    uint32_t mask[6];
    int none;
    assert_int_equal(bench_class_map(task(&r, "inbreast_finding"), "inbreast.h5", fnd, 6, NULL, mask, &none, &e), 0);
    uint32_t want_mask[6] = {1u << 0, 1u << 1, 1u << 1, 0, 1u << 3, 1u << 2};
    assert_memory_equal(mask, want_mask, sizeof want_mask);
    assert_int_equal(none, 4);
    /* CMMD multi-label from a single-label column: "both" switches on Mass and Calcification */
    const char abn[3][PREP_NAME_LEN] = {"mass", "calcification", "both"};
    assert_int_equal(bench_class_map(task(&r, "cmmd_finding"), "cmmd.h5", abn, 3, NULL, mask, &none, &e), 0);
    assert_true(mask[0] == 1u && mask[1] == 2u && mask[2] == 3u && none == -1);
    /* a class whose sources the file does not have is an error naming the class and the file */
    const char bad[2][PREP_NAME_LEN] = {"benign", "cancer"};
    assert_int_equal(bench_class_map(task(&r, "cbis_pathology"), "x.h5", bad, 2, map, NULL, NULL, &e), 1);
    print_message("  %s\n", e.msg);
    assert_non_null(strstr(e.msg, "Malignant"));
    assert_non_null(strstr(e.msg, "x.h5"));
    bench_registry_free(&r);
}

static void test_synthetic_suite(void **st) {
    (void)st;
    BenchRegistry r;
    Err e = {0};
    if (bench_registry_load(&r, "synthetic", NULL, 0, NULL, 0, &e)) fail_msg("%s", e.msg);
    int cat[BENCH_N_CATEGORIES] = {0}, ml = 0, knn = 0, crop = 0;
    for (int i = 0; i < r.n_tasks; i++) {
        cat[r.tasks[i].category]++;
        ml += r.tasks[i].multilabel;
        crop += r.tasks[i].unit == BENCH_UNIT_CROP;
        for (int p = 0; p < r.tasks[i].n_protocols; p++) knn += r.tasks[i].protocols[p] == PROTO_KNN;
    }
    for (int c = 0; c < BENCH_N_CATEGORIES; c++)
        if (!cat[c]) fail_msg("synthetic suite has no %s task", bench_category_name(c));
    assert_true(ml >= 1 && knn >= 1 && crop >= 2);
    assert_int_equal(r.set.size, 96);
    /* a key=value override reaches the settings; an unknown one is an error with a suggestion */
    bench_registry_free(&r);
    const char *ov[1] = {"linear.patience=3"};
    if (bench_registry_load(&r, "synthetic", NULL, 0, ov, 1, &e)) fail_msg("%s", e.msg);
    assert_int_equal(r.set.linear.patience, 3);
    bench_registry_free(&r);
    const char *bad[1] = {"linear.patiense=3"};
    assert_int_equal(bench_registry_load(&r, "synthetic", NULL, 0, bad, 1, &e), 1);
    print_message("  %s\n", e.msg);
    assert_non_null(strstr(e.msg, "linear.patience"));
}

static void test_private_cohort_merges(void **st) {
    (void)st;
    BenchRegistry r;
    Err e = {0};
    const char *extra[1] = {"configs/bench/private_cohort_example.yaml"};
    if (bench_registry_load(&r, "versamammo92", extra, 1, NULL, 0, &e)) fail_msg("%s", e.msg);
    assert_int_equal(r.n_tasks, 48);
    const BenchTask *t = task(&r, "hospital_a_pathology");
    assert_string_equal(t->file[0], "hospital-a.h5");
    assert_int_equal(t->paper, 0);
    const char *pat[2] = {"hospital_a_*", "retrieval"};
    int n = 0;
    for (int i = 0; i < r.n_tasks; i++) n += bench_task_selected(&r.tasks[i], pat, 2);
    assert_int_equal(n, 4);   /* three hospital tasks + birads_retrieval (by category) */
    bench_registry_free(&r);
    /* the example file alone is a suite too */
    if (bench_registry_load(&r, "configs/bench/private_cohort_example.yaml", NULL, 0, NULL, 0, &e)) fail_msg("%s", e.msg);
    assert_int_equal(r.n_tasks, 3);
    assert_int_equal(r.set.linear.val_every, 500);   /* the built-in defaults = the paper's */
    bench_registry_free(&r);
}

static void expect_error(const char *yaml, const char *needle1, const char *needle2) {
    const char *p = write_file("bad.yaml", yaml);
    BenchRegistry r;
    Err e = {0};
    if (!bench_registry_load(&r, p, NULL, 0, NULL, 0, &e)) {
        bench_registry_free(&r);
        fail_msg("no error for:\n%s", yaml);
    }
    print_message("  %s\n", e.msg);
    assert_non_null(strstr(e.msg, "bad.yaml"));
    if (!strstr(e.msg, needle1)) fail_msg("'%s' not in: %s", needle1, e.msg);
    if (needle2 && !strstr(e.msg, needle2)) fail_msg("'%s' not in: %s", needle2, e.msg);
}

static void test_errors_name_file_and_key(void **st) {
    (void)st;
    expect_error("tasks: {t1: {dataset: d, category: classification, lable: x, classes: [a, b]}}\n", "tasks.t1.lable",
                 "did you mean 'label'");
    expect_error("tasks: {t1: {dataset: d, category: clasification, label: x, classes: [a, b]}}\n", "tasks.t1.category",
                 "clasification");
    expect_error("tasks: {t1: {dataset: d, category: classification, label: x, classes: [a, b], metric: top1}}\n",
                 "tasks.t1.metric", "top1");
    expect_error("tasks: {t1: {dataset: d, category: classification, label: x, classes: [a, b], source: [a]}}\n",
                 "tasks.t1.source", "1 entries for 2 classes");
    expect_error("tasks: {t1: {dataset: d, category: classification, label: x, classes: [a, b], protocol: [linaer]}}\n",
                 "tasks.t1.protocol", "did you mean 'linear'");
    expect_error("tasks: {t1: {dataset: d, category: retrieval, label: x, classes: [a, b], protocol: [linear]}}\n",
                 "tasks.t1.protocol", "belongs to classification");
    expect_error("tasks: {t1: {dataset: d, category: classification, label: box, classes: [a, b]}}\n", "tasks.t1.label",
                 "unit: crop");
    expect_error("knn: {kk: 3}\n", "knn.kk", "did you mean 'knn.k'");
    expect_error("bootstrap: {level: 1.5}\n", "bootstrap.level", NULL);
    expect_error("tasks: {t1: {category: classification, label: x, classes: [a, b]}}\n", "tasks.t1.dataset", "missing");
}

static void test_list_shows_presence(void **st) {
    (void)st;
    BenchRegistry r;
    Err e = {0};
    if (bench_registry_load(&r, "synthetic", NULL, 0, NULL, 0, &e)) fail_msg("%s", e.msg);
    write_file("synth-cbis.h5", "not really a prepared file, but it exists");
    char buf[16384];
    FILE *f = fmemopen(buf, sizeof buf, "w");
    bench_list(f, &r, g_dir);
    fclose(f);
    /* one line per task, presence per dataset, and how to make the missing ones */
    int lines = 0;
    for (char *p = buf; *p; p++) lines += *p == '\n';
    assert_true(lines >= r.n_tasks + 2);
    char *den = strstr(buf, "syn_cbis_density");
    assert_non_null(den);
    assert_non_null(strstr(den, "present"));
    char *vd = strstr(buf, "syn_vindr_density");
    assert_non_null(vd);
    assert_true(strstr(vd, "missing") < strchr(vd, '\n'));
    assert_non_null(strstr(buf, "missing datasets"));
    assert_non_null(strstr(buf, "versa bench --make-synthetic"));
    bench_registry_free(&r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_versamammo92_has_the_45_tasks),
        cmocka_unit_test(test_class_maps),
        cmocka_unit_test(test_synthetic_suite),
        cmocka_unit_test(test_private_cohort_merges),
        cmocka_unit_test(test_errors_name_file_and_key),
        cmocka_unit_test(test_list_shows_presence),
    };
    return cmocka_run_group_tests_name(__FILE__, tests, setup, teardown);
}
