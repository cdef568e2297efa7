/* cli.c — helpers shared by the subcommands (see cli.h). */
#include "cli/cli.h"
#include <stdarg.h>
#include <string.h>

int cli_fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("versa: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

int cli_wants_help(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return 1;
    return 0;
}

void cli_note_blas(int root) {
    const char *advice = engine_blas_advice();
    if (root && advice) fprintf(stderr, "versa: note: %s\n", advice);
}

int cli_load_config(Config *cfg, const CfgSpec *spec, size_t n_spec, int argc, char **argv) {
    Err e = {0};
    cfg_init(cfg);
    if ((spec && cfg_declare(cfg, spec, n_spec, &e)) || cfg_parse_args(cfg, argc - 1, argv + 1, &e)) {
        cfg_free(cfg);
        return cli_fail("%s", e.msg);
    }
    return 0;
}

void cli_print_config_help(const char *cmd, const char *summary, const CfgSpec *spec, size_t n_spec) {
    printf("usage: versa %s [CONFIG.yaml] [key=value ...]\n\n%s\n\n", cmd, summary);
    printf("Every key below can be set in CONFIG.yaml (nested: `optim: {lr: 1e-4}`) or on the\n"
           "command line (`optim.lr=1e-4`; lists as `key=[a,b]`); the command line wins.\n\n");
    printf("keys (type, default):\n");
    cfg_print_help(spec, n_spec, stdout);
}
