/* test_cli.c — the versa program as a user meets it: help, exit statuses, one-line errors.
 * Runs the binary named by VERSA_BIN (scripts/run-tests.sh sets it to the build being tested),
 * else build/versa. */
#include "tests/common/testutil.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct Run {
    int status;        /* exit status, or -1 when the program did not exit normally (crash) */
    char out[16384];
    char err[4096];
    int err_lines;
} Run;

static const char *versa_bin(void) {
    const char *b = getenv("VERSA_BIN");
    return b && b[0] ? b : "build/versa";
}

static void slurp(const char *path, char *buf, size_t n) {
    FILE *f = fopen(path, "r");
    size_t k = f ? fread(buf, 1, n - 1, f) : 0;
    buf[k] = 0;
    if (f) fclose(f);
}

/* runs "versa ARGS" through the shell, capturing stdout and stderr */
static Run *run(const char *args) {
    static Run r;
    char out[] = "/tmp/versa-cli-out-XXXXXX", err[] = "/tmp/versa-cli-err-XXXXXX";
    close(mkstemp(out));
    close(mkstemp(err));
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s %s >%s 2>%s", versa_bin(), args, out, err);
    int st = system(cmd);
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    slurp(out, r.out, sizeof r.out);
    slurp(err, r.err, sizeof r.err);
    unlink(out);
    unlink(err);
    r.err_lines = 0;
    for (const char *p = r.err; *p; p++) r.err_lines += *p == '\n';
    return &r;
}

/* a user error: exit 1, exactly one line on stderr, "versa: ..." */
static void assert_user_error(const Run *r, const char *args, const char *needle) {
    if (r->status != 1 || r->err_lines != 1 || strncmp(r->err, "versa: ", 7) || !strstr(r->err, needle))
        fail_msg("versa %s: status %d, stderr (%d lines): %s (wanted '%s')", args, r->status, r->err_lines, r->err,
                 needle);
}

static int setup(void **st) {
    (void)st;
    if (access(versa_bin(), X_OK) != 0) {
        fprintf(stderr, "%s not found: build it first (make) or set VERSA_BIN\n", versa_bin());
        return -1;
    }
    return 0;
}

static const char *COMMANDS[] = {"synth", "prepare", "pretrain", "extract", "distill", "bench",
                                 "embed", "plot", "info", "config"};

static void test_help(void **st) {
    (void)st;
    Run *r = run("--help");
    assert_int_equal(r->status, 0);
    assert_string_equal(r->err, "");
    for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++) {
        char line[32];
        snprintf(line, sizeof line, "\n  %s ", COMMANDS[i]);
        if (!strstr(r->out, line)) fail_msg("versa --help does not list '%s'", COMMANDS[i]);
    }
    /* every subcommand, implemented or not, answers --help with exit 0 */
    for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++) {
        char args[64];
        snprintf(args, sizeof args, "%s --help", COMMANDS[i]);
        r = run(args);
        if (r->status != 0 || !strstr(r->out, "usage: versa"))
            fail_msg("versa %s: status %d, stdout: %.200s, stderr: %.200s", args, r->status, r->out, r->err);
    }
    r = run("--version");
    assert_int_equal(r->status, 0);
    assert_non_null(strstr(r->out, "versa "));
}

static void test_user_errors(void **st) {
    (void)st;
    assert_user_error(run("frobnicate"), "frobnicate", "unknown command 'frobnicate'");
    assert_user_error(run(""), "", "no command given");
    assert_user_error(run("info --bogus"), "info --bogus", "unexpected argument '--bogus'");
    assert_user_error(run("config /nonexistent/x.yaml"), "config /nonexistent/x.yaml", "No such file");
}

static void test_config_keys(void **st) {
    (void)st;
    char path[] = "/tmp/versa-cli-XXXXXX.yaml";
    int fd = mkstemps(path, 5);
    assert_true(fd >= 0);
    const char *yaml = "optim:\n  lr: 5.0e-4\n  weight_decay: 0.04\nstudent:\n  arch: vit_small\n";
    assert_int_equal(write(fd, yaml, strlen(yaml)), (ssize_t)strlen(yaml));
    close(fd);
    char args[256], want[256];

    snprintf(args, sizeof args, "config %s optim.lrr=1e-3", path);
    snprintf(want, sizeof want, "%s: unknown key 'optim.lrr' (did you mean 'optim.lr'?)", path);
    assert_user_error(run(args), args, want);

    snprintf(args, sizeof args, "config %s optim.lr=2e-4 student.arch=vit_base", path);
    Run *r = run(args);
    assert_int_equal(r->status, 0);
    assert_non_null(strstr(r->out, "optim:\n  lr: 2e-4\n  weight_decay: 0.04\n"));
    assert_non_null(strstr(r->out, "arch: vit_base"));

    snprintf(args, sizeof args, "config %s stray", path);
    assert_user_error(run(args), args, "unexpected argument 'stray'");

    FILE *f = fopen(path, "w");
    fputs("optim:\n  lr: [1, 2\n", f);
    fclose(f);
    snprintf(args, sizeof args, "config %s", path);
    assert_user_error(run(args), args, "line ");
    unlink(path);
}

static void test_info(void **st) {
    (void)st;
    Run *r = run("info");
    assert_int_equal(r->status, 0);
    assert_non_null(strstr(r->out, "BLAS"));
    assert_non_null(strstr(r->out, "OpenBLAS"));
    /* VERSA_THREADS wins over everything */
    char args[64];
    snprintf(args, sizeof args, "info");
    setenv("VERSA_THREADS", "1", 1);
    r = run(args);
    unsetenv("VERSA_THREADS");
    assert_non_null(strstr(r->out, "threads  1\n"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_help),
        cmocka_unit_test(test_user_errors),
        cmocka_unit_test(test_config_keys),
        cmocka_unit_test(test_info),
    };
    return cmocka_run_group_tests_name(__FILE__, tests, setup, NULL);
}
