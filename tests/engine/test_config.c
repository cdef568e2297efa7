/* test_config.c — YAML configs: nesting to dotted keys, lists, overrides, declared keys with
 * defaults and types, error messages that name the file and key, and the YAML round trip. */
#include "tests/common/testutil.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *YAML =
    "# a DINOv2-style config\n"
    "student:\n"
    "  arch: vit_small\n"
    "  patch_size: 16\n"
    "  drop_path_rate: 0.1\n"
    "optim:\n"
    "  lr: 5.0e-4\n"
    "  clip_grad: 3.0\n"
    "  freeze_last_layer: true\n"
    "crops:\n"
    "  global_crops_scale: [0.32, 1.0]\n"
    "  local_crops_number: 2\n"
    "ibot:\n"
    "  mask_ratio_min_max:\n"
    "    - 0.1\n"
    "    - 0.5\n"
    "data:\n"
    "  root: \"/data/my mammo: set\"\n"
    "  note: ~\n"
    "train:\n"
    "  output_dir: out\n"
    "  deep:\n"
    "    deeper:\n"
    "      key: x\n";

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_nested_yaml(void **st) {
    (void)st;
    Config cfg;
    Err e = {0};
    cfg_init(&cfg);
    if (cfg_load_string(&cfg, YAML, "x.yaml", &e)) fail_msg("%s", e.msg);
    assert_string_equal(cfg_get_str(&cfg, "student.arch", NULL), "vit_small");
    assert_int_equal(cfg_get_int(&cfg, "student.patch_size", 0, &e), 16);
    assert_float_equal(cfg_get_float(&cfg, "optim.lr", 0, &e), 5e-4, 1e-15);
    assert_true(cfg_get_bool(&cfg, "optim.freeze_last_layer", 0, &e));
    assert_string_equal(cfg_get_str(&cfg, "train.deep.deeper.key", NULL), "x");
    assert_string_equal(cfg_get_str(&cfg, "data.root", NULL), "/data/my mammo: set");
    /* lists: flow and block style, as text and as items */
    assert_string_equal(cfg_get(&cfg, "crops.global_crops_scale"), "[0.32, 1.0]");
    double v[4];
    assert_int_equal(cfg_get_floats(&cfg, "ibot.mask_ratio_min_max", v, 4, &e), 2);
    assert_float_equal(v[0], 0.1, 0);
    assert_float_equal(v[1], 0.5, 0);
    assert_int_equal(cfg_list_len(&cfg, "crops.global_crops_scale"), 2);
    assert_string_equal(cfg_list_item(&cfg, "crops.global_crops_scale", 1), "1.0");
    /* null and absent keys read as the default */
    assert_false(cfg_has(&cfg, "data.note"));
    assert_float_equal(cfg_get_float(&cfg, "data.note", 7.5, &e), 7.5, 0);
    assert_int_equal(cfg_get_int(&cfg, "no.such.key", 3, &e), 3);
    assert_string_equal(e.msg, "");
    /* key order is file order */
    assert_string_equal(cfg.e[0].key, "student.arch");
    cfg_free(&cfg);
}

static void test_overrides(void **st) {
    (void)st;
    Config cfg;
    Err e = {0};
    cfg_init(&cfg);
    if (cfg_load_string(&cfg, YAML, "x.yaml", &e)) fail_msg("%s", e.msg);
    if (cfg_override(&cfg, "optim.lr=1e-4", 0, &e)) fail_msg("%s", e.msg);
    if (cfg_override(&cfg, "crops.global_crops_scale=[0.4, 0.9]", 0, &e)) fail_msg("%s", e.msg);
    if (cfg_override(&cfg, "+train.new_key=hello", 0, &e)) fail_msg("%s", e.msg);   /* explicit add */
    if (cfg_override(&cfg, "student.arch=vit_base", 0, &e)) fail_msg("%s", e.msg);
    assert_float_equal(cfg_get_float(&cfg, "optim.lr", 0, &e), 1e-4, 0);
    double v[2];
    assert_int_equal(cfg_get_floats(&cfg, "crops.global_crops_scale", v, 2, &e), 2);
    assert_float_equal(v[1], 0.9, 0);
    assert_string_equal(cfg_get_str(&cfg, "train.new_key", NULL), "hello");
    assert_string_equal(cfg_get_str(&cfg, "student.arch", NULL), "vit_base");
    /* a value cannot also be a map */
    assert_int_equal(cfg_override(&cfg, "+student.arch.depth=12", 0, &e), 1);
    assert_non_null(strstr(e.msg, "conflicts with 'student.arch'"));
    memset(&e, 0, sizeof e);
    assert_int_equal(cfg_override(&cfg, "optim.lr", 0, &e), 1);
    assert_non_null(strstr(e.msg, "not key=value"));
    cfg_free(&cfg);
}

static void test_unknown_key(void **st) {
    (void)st;
    Config cfg;
    Err e = {0};
    cfg_init(&cfg);
    char path[] = "/tmp/versa-cfg-XXXXXX.yaml";
    int fd = mkstemps(path, 5);
    assert_true(fd >= 0);
    close(fd);
    write_file(path, YAML);
    if (cfg_load_file(&cfg, path, &e)) fail_msg("%s", e.msg);
    assert_int_equal(cfg_override(&cfg, "optim.lrr=1e-3", 0, &e), 1);
    char want[256];
    snprintf(want, sizeof want, "%s: unknown key 'optim.lrr' (did you mean 'optim.lr'?)", path);
    assert_string_equal(e.msg, want);
    /* the last component alone is recognised too */
    memset(&e, 0, sizeof e);
    assert_int_equal(cfg_override(&cfg, "clip_grad=1", 0, &e), 1);
    assert_non_null(strstr(e.msg, "did you mean 'optim.clip_grad'"));
    /* allowed explicitly by the caller */
    memset(&e, 0, sizeof e);
    assert_int_equal(cfg_override(&cfg, "optim.lrr=1e-3", 1, &e), 0);
    cfg_free(&cfg);

    /* declared keys: a file may not add keys either */
    static const CfgSpec spec[] = {
        {"optim.lr", CFG_FLOAT, "1e-3", "peak learning rate"},
        {"optim.epochs", CFG_INT, "100", "training epochs"},
    };
    cfg_init(&cfg);
    memset(&e, 0, sizeof e);
    if (cfg_declare(&cfg, spec, 2, &e)) fail_msg("%s", e.msg);
    write_file(path, "optim:\n  lr: 1e-4\n  epoch: 3\n");
    assert_int_equal(cfg_load_file(&cfg, path, &e), 1);
    snprintf(want, sizeof want, "%s: unknown key 'optim.epoch' (did you mean 'optim.epochs'?)", path);
    assert_string_equal(e.msg, want);
    cfg_free(&cfg);

    /* YAML syntax errors carry a line number; a missing file names the file */
    cfg_init(&cfg);
    write_file(path, "a:\n  b: [1, 2\n");
    memset(&e, 0, sizeof e);
    assert_int_equal(cfg_load_file(&cfg, path, &e), 1);
    assert_non_null(strstr(e.msg, "line "));
    assert_non_null(strstr(e.msg, path));
    write_file(path, "a: 1\nb: 2\na: 3\n");
    memset(&e, 0, sizeof e);
    assert_int_equal(cfg_load_file(&cfg, path, &e), 1);
    assert_non_null(strstr(e.msg, "'a' is set twice"));
    write_file(path, "- 1\n- 2\n");
    memset(&e, 0, sizeof e);
    assert_int_equal(cfg_load_file(&cfg, path, &e), 1);
    assert_non_null(strstr(e.msg, "mapping"));
    write_file(path, "tasks:\n  - {name: a}\n");
    memset(&e, 0, sizeof e);
    assert_int_equal(cfg_load_file(&cfg, path, &e), 1);
    assert_non_null(strstr(e.msg, "tasks: only lists of plain values"));
    /* an alias bomb: 2^30 empty maps reached through aliases must fail fast, not hang */
    char bomb[2048] = "a0: &a0 {}\n";
    for (int i = 1; i <= 30; i++) {
        char line[64];
        snprintf(line, sizeof line, "a%d: &a%d {x: *a%d, y: *a%d}\n", i, i, i - 1, i - 1);
        strcat(bomb, line);
    }
    write_file(path, bomb);
    memset(&e, 0, sizeof e);
    assert_int_equal(cfg_load_file(&cfg, path, &e), 1);
    assert_non_null(strstr(e.msg, "too many nodes"));
    unlink(path);
    memset(&e, 0, sizeof e);
    assert_int_equal(cfg_load_file(&cfg, path, &e), 1);
    assert_non_null(strstr(e.msg, "No such file"));
    cfg_free(&cfg);
}

static void test_bad_values(void **st) {
    (void)st;
    static const CfgSpec spec[] = {
        {"optim.lr", CFG_FLOAT, "1e-3", "peak learning rate"},
        {"optim.epochs", CFG_INT, "100", "training epochs"},
        {"optim.nesterov", CFG_BOOL, "false", "Nesterov momentum"},
        {"crops.global_crops_scale", CFG_LIST, "[0.32, 1.0]", "RandomResizedCrop scale"},
        {"student.arch", CFG_STR, "vit_small", "backbone"},
        {"data.root", CFG_STR, NULL, "dataset folder"},
    };
    Config cfg;
    Err e = {0};
    cfg_init(&cfg);
    if (cfg_declare(&cfg, spec, sizeof spec / sizeof spec[0], &e)) fail_msg("%s", e.msg);
    /* defaults */
    assert_float_equal(cfg_get_float(&cfg, "optim.lr", 0, &e), 1e-3, 0);
    assert_int_equal(cfg_get_int(&cfg, "optim.epochs", 0, &e), 100);
    assert_false(cfg_has(&cfg, "data.root"));
    /* a typed key rejects a bad override at once, naming the command line */
    assert_int_equal(cfg_override(&cfg, "optim.lr=abc", 0, &e), 1);
    assert_string_equal(e.msg, "command line: optim.lr: expected a number, got 'abc'");
    memset(&e, 0, sizeof e);
    assert_int_equal(cfg_override(&cfg, "optim.epochs=1.5", 0, &e), 1);
    assert_non_null(strstr(e.msg, "expected an integer, got '1.5'"));
    memset(&e, 0, sizeof e);
    assert_int_equal(cfg_override(&cfg, "optim.nesterov=maybe", 0, &e), 1);
    assert_non_null(strstr(e.msg, "expected true or false"));
    memset(&e, 0, sizeof e);
    assert_int_equal(cfg_load_string(&cfg, "optim:\n  lr: [1, 2]\n", "y.yaml", &e), 1);
    assert_string_equal(e.msg, "y.yaml: optim.lr: expected a single float, got a list");
    memset(&e, 0, sizeof e);
    assert_int_equal(cfg_override(&cfg, "crops.global_crops_scale=[0.1, 0.2", 0, &e), 1);
    assert_non_null(strstr(e.msg, "cannot read"));
    assert_float_equal(cfg_get_float(&cfg, "optim.lr", 0, &e), 1e-3, 0);   /* unchanged */
    cfg_free(&cfg);

    /* without declared types, the getter reports the bad value, the file, and keeps the first */
    cfg_init(&cfg);
    memset(&e, 0, sizeof e);
    if (cfg_load_string(&cfg, "optim:\n  lr: fast\n  wd: slow\n", "z.yaml", &e)) fail_msg("%s", e.msg);
    double lr = cfg_get_float(&cfg, "optim.lr", 1e-3, &e);
    double wd = cfg_get_float(&cfg, "optim.wd", 0.04, &e);
    assert_float_equal(lr, 1e-3, 0);
    assert_float_equal(wd, 0.04, 0);
    assert_string_equal(e.msg, "z.yaml: optim.lr: expected a number, got 'fast'");   /* sticky */
    double two[1];
    memset(&e, 0, sizeof e);
    if (cfg_override(&cfg, "+x=[1, 2]", 0, &e)) fail_msg("%s", e.msg);
    assert_int_equal(cfg_get_floats(&cfg, "x", two, 1, &e), 0);
    assert_non_null(strstr(e.msg, "at most 1"));
    cfg_free(&cfg);
}

static void test_round_trip(void **st) {
    (void)st;
    Config a, b;
    Err e = {0};
    cfg_init(&a);
    cfg_init(&b);
    if (cfg_load_string(&a, YAML, "x.yaml", &e)) fail_msg("%s", e.msg);
    /* keys added later must rejoin their group; awkward strings must survive quoting */
    if (cfg_override(&a, "+student.extra=a \"quoted\" # not a comment", 0, &e)) fail_msg("%s", e.msg);
    if (cfg_override(&a, "+list.odd=[\"a, b\", -x, '']", 0, &e)) fail_msg("%s", e.msg);
    if (cfg_override(&a, "+esc=tab\there", 0, &e)) fail_msg("%s", e.msg);
    char *text = cfg_to_yaml(&a);
    print_message("%s", text);
    if (cfg_load_string(&b, text, "round-trip", &e)) fail_msg("%s\n%s", e.msg, text);
    assert_int_equal(a.n, b.n);
    for (size_t i = 0; i < a.n; i++) {
        const CfgEntry *x = &a.e[i];
        const CfgEntry *y = NULL;
        for (size_t j = 0; j < b.n; j++)
            if (!strcmp(b.e[j].key, x->key)) y = &b.e[j];
        if (!y) fail_msg("key %s lost in the round trip", x->key);
        assert_int_equal(x->is_list, y->is_list);
        assert_int_equal(x->is_null, y->is_null);
        if (!x->is_null) assert_string_equal(x->value, y->value);
        for (size_t k = 0; k < x->n_items; k++) assert_string_equal(x->items[k], y->items[k]);
    }
    assert_string_equal(cfg_list_item(&b, "list.odd", 0), "a, b");
    assert_string_equal(cfg_list_item(&b, "list.odd", 2), "");
    assert_string_equal(cfg_get_str(&b, "esc", NULL), "tab\there");
    /* "student:" appears once: the added key was emitted inside its group */
    assert_non_null(strstr(text, "student:\n  arch: vit_small\n"));
    assert_null(strstr(strstr(text, "student:") + 1, "\nstudent:"));
    char *text2 = cfg_to_yaml(&b);
    assert_string_equal(text, text2);   /* a fixed point */
    free(text);
    free(text2);
    cfg_free(&a);
    cfg_free(&b);
}

/* the bounded distance behind "did you mean": exact up to the bound, bound + 1 beyond it */
static void test_edit_distance_within(void **st) {
    (void)st;
    assert_int_equal(edit_distance_within("kitten", "sitting", 5), 3);
    assert_int_equal(edit_distance_within("kitten", "sitting", 3), 3);
    assert_int_equal(edit_distance_within("kitten", "sitting", 2), 3);      /* over: max + 1 */
    assert_int_equal(edit_distance_within("optim.lr", "optim.lr", 0), 0);
    assert_int_equal(edit_distance_within("optim.lrr", "optim.lr", 1), 1);
    assert_int_equal(edit_distance_within("", "abc", 3), 3);
    assert_int_equal(edit_distance_within("a", "abcdef", 2), 3);            /* lengths alone */
    assert_int_equal(edit_distance_within("abcdefgh", "hgfedcba", 100), 8);
    char longer[300];
    memset(longer, 'x', sizeof longer - 1);
    longer[sizeof longer - 1] = 0;
    assert_int_equal(edit_distance_within(longer, longer, 4), 5);            /* too long to compare */
}

/* values set from the command line must be text a YAML file can hold: they end up in the config
 * a checkpoint stores (findings 18 and 25 of fuzz_config) */
static void test_override_text_yaml_can_hold(void **st) {
    (void)st;
    static const struct {
        const char *value;
        int ok;
    } cases[] = {
        {"caf\xc3\xa9", 1},              /* U+00E9 */
        {"\xf0\x9f\x98\x80", 1},         /* U+1F600 */
        {"\xc2\x85", 0},                 /* NEL: a line break to libyaml */
        {"\xe2\x80\xa8", 0},             /* U+2028, the same */
        {"\xe2\x80\x94", 1},             /* U+2014 */
        {"\xc2\x80", 0},                 /* C1 control */
        {"\xef\xbf\xbe", 0},             /* U+FFFE */
        {"\xed\xa0\x80", 0},             /* surrogate */
        {"\xe0\x80\xaf", 0},             /* overlong '/' */
        {"\xf4\x90\x80\x80", 0},         /* past U+10FFFF */
        {"\xf6\x9b\x96\xadu", 0},        /* the fuzzer's: lead byte 0xf6 */
        {"\xc3", 0},                     /* cut short */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        Config c;
        cfg_init(&c);
        Err e = {{0}};
        char arg[64];
        snprintf(arg, sizeof arg, "+extra.key=%s", cases[i].value);
        int rc = cfg_override(&c, arg, 1, &e);
        assert_int_equal(rc, cases[i].ok ? 0 : 1);
        if (cases[i].ok) {   /* and it survives the trip through YAML */
            char *yaml = cfg_to_yaml(&c);
            Config back;
            cfg_init(&back);
            if (cfg_load_string(&back, yaml, "roundtrip", &e)) fail_msg("case %zu: %s", i, e.msg);
            assert_string_equal(cfg_get(&back, "extra.key"), cases[i].value);
            cfg_free(&back);
            free(yaml);
        } else {
            assert_non_null(strstr(e.msg, "not valid UTF-8 text"));
        }
        cfg_free(&c);
    }
}

static void test_parse_args_and_help(void **st) {
    (void)st;
    static const CfgSpec spec[] = {
        {"optim.lr", CFG_FLOAT, "1e-3", "peak learning rate"},
        {"train.batch", CFG_INT, "8", "images per step"},
    };
    char path[] = "/tmp/versa-cfg-XXXXXX.yaml";
    int fd = mkstemps(path, 5);
    close(fd);
    write_file(path, "train:\n  batch: 16\n");
    Config cfg;
    Err e = {0};
    cfg_init(&cfg);
    cfg_declare(&cfg, spec, 2, &e);
    char *argv[] = {"optim.lr=2e-4", path};   /* overrides apply after the file wherever they are */
    if (cfg_parse_args(&cfg, 2, argv, &e)) fail_msg("%s", e.msg);
    assert_float_equal(cfg_get_float(&cfg, "optim.lr", 0, &e), 2e-4, 0);
    assert_int_equal(cfg_get_int(&cfg, "train.batch", 0, &e), 16);
    char *bad[] = {"--frobnicate"};
    assert_int_equal(cfg_parse_args(&cfg, 1, bad, &e), 1);
    assert_non_null(strstr(e.msg, "unexpected argument '--frobnicate'"));
    cfg_free(&cfg);
    unlink(path);

    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    cfg_print_help(spec, 2, f);
    fclose(f);
    assert_non_null(strstr(buf, "optim.lr"));
    assert_non_null(strstr(buf, "float 1e-3"));
    assert_non_null(strstr(buf, "images per step"));
    free(buf);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nested_yaml), cmocka_unit_test(test_overrides),
        cmocka_unit_test(test_unknown_key), cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_round_trip),  cmocka_unit_test(test_parse_args_and_help),
        cmocka_unit_test(test_edit_distance_within),
        cmocka_unit_test(test_override_text_yaml_can_hold),
    };
    return RUN_GROUP(tests);
}
