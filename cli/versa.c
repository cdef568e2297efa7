/* versa.c — the versa program: subcommand dispatch, nothing else.
 *
 * Each subcommand lives in cli/cmd_<name>.c as `int cmd_<name>(int argc, char **argv)`.  The
 * references below are weak: a subcommand whose file does not exist yet links as NULL, and
 * `versa <name>` then names the issue that will implement it.  Adding the file is all it takes. */
#include "cli/cli.h"
#include <stdio.h>
#include <string.h>

typedef int (*CmdFn)(int argc, char **argv);

#define WEAK_CMD(name) int cmd_##name(int argc, char **argv) __attribute__((weak));
WEAK_CMD(synth)
WEAK_CMD(prepare)
WEAK_CMD(pretrain)
WEAK_CMD(extract)
WEAK_CMD(distill)
WEAK_CMD(bench)
WEAK_CMD(embed)
WEAK_CMD(plot)
WEAK_CMD(info)
WEAK_CMD(config)

typedef struct Command {
    const char *name;
    CmdFn fn;             /* NULL until cli/cmd_<name>.c exists */
    int issue;            /* where it is specified */
    const char *summary;
} Command;

static const Command COMMANDS[] = {
    {"synth", cmd_synth, 4, "generate synthetic mammograms in VinDr-Mammo / CBIS-DDSM layouts"},
    {"prepare", cmd_prepare, 4, "convert a dataset (public layout or synthetic) into a prepared HDF5 file"},
    {"pretrain", cmd_pretrain, 5, "stage 1: DINOv2-style self-supervised ViT teacher (MPI-parallel)"},
    {"extract", cmd_extract, 5, "write a teacher's features for a prepared dataset to HDF5"},
    {"distill", cmd_distill, 6, "stage 2: EfficientNet student, supervised + relational distillation"},
    {"bench", cmd_bench, 7, "run the benchmark tasks on frozen backbones and write a report"},
    {"embed", cmd_embed, 3, "print the embedding of one image from a model config or checkpoint"},
    {"plot", cmd_plot, 9, "draw training curves (losses, LR, images/s) from metrics.jsonl to PNG"},
    {"info", cmd_info, 2, "version, threads, BLAS and library versions"},
    {"config", cmd_config, 2, "print a config file with key=value overrides applied (checks keys)"},
};
#define N_COMMANDS (sizeof COMMANDS / sizeof COMMANDS[0])

static void usage(FILE *out) {
    fprintf(out,
            "usage: versa COMMAND [ARGS...]\n"
            "       versa COMMAND --help      options of one command\n\n"
            "versamammo.c %s: the VersaMammo mammography foundation-model recipe in C.\n\ncommands:\n",
            VERSA_VERSION);
    for (size_t i = 0; i < N_COMMANDS; i++) {
        const Command *c = &COMMANDS[i];
        fprintf(out, "  %-9s %s", c->name, c->summary);
        if (!c->fn) fprintf(out, " [issue %d, not implemented yet]", c->issue);
        fputc('\n', out);
    }
    fprintf(out,
            "\nConfig-driven commands take `versa COMMAND [CONFIG.yaml] [key=value ...]`.\n"
            "Exit status: 0 on success, 1 on a user error (one line on stderr).\n"
            "Threads: VERSA_THREADS, else OMP_NUM_THREADS, else every core.\n");
}

int main(int argc, char **argv) {
    if (argc < 2) return cli_fail("no command given (try 'versa --help')");
    const char *name = argv[1];
    if (!strcmp(name, "--help") || !strcmp(name, "-h") || !strcmp(name, "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(name, "--version")) {
        printf("versa %s\n", VERSA_VERSION);
        return 0;
    }
    for (size_t i = 0; i < N_COMMANDS; i++) {
        const Command *c = &COMMANDS[i];
        if (strcmp(name, c->name)) continue;
        if (c->fn) return c->fn(argc - 1, argv + 1);
        if (cli_wants_help(argc - 1, argv + 1)) {
            printf("usage: versa %s ...\n\n%s\n\nNot implemented yet: see issue %d.\n", c->name, c->summary, c->issue);
            return 0;
        }
        return cli_fail("'%s' is not implemented yet (see issue %d)", c->name, c->issue);
    }
    return cli_fail("unknown command '%s' (try 'versa --help')", name);
}
