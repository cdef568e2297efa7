/* cli.h — the `versa` program: subcommands and the helpers they share.
 *
 * A subcommand X is the function `int cmd_X(int argc, char **argv)` in cli/cmd_X.c, where argv[0]
 * is "X" and argv[1..] are its arguments.  versa.c lists every subcommand with a weak reference to
 * its function, so a subcommand becomes available by adding its file (the Makefile compiles
 * every .c file in cli/); until then `versa X` says which issue will implement it.
 *
 * Conventions: `versa X --help` prints usage and every option, exit 0; success exits 0; a user
 * error (bad argument, bad file, bad config value) prints one line "versa: ..." on stderr and
 * exits 1, never a crash. */
#ifndef VERSA_CLI_H
#define VERSA_CLI_H

#include "engine/engine.h"

#define VERSA_VERSION "0.1.0"

/* "versa: <message>" on stderr; returns 1 (the exit status of a user error) */
int cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "versa: note: ..." on stderr when OpenBLAS runs weaker kernels than the CPU supports
 * (engine_blas_advice); for the commands whose time goes into matrix products.  `root`: 0 on
 * the other MPI ranks, so the note is printed once. */
void cli_note_blas(int root);
/* 1 when argv[1..] holds "--help" or "-h" */
int cli_wants_help(int argc, char **argv);

/* Config-driven subcommands: `versa X [CONFIG.yaml] [key=value ...]`.  Declares the known keys
 * (defaults + help), loads the file and applies the overrides; unknown keys and bad values are
 * errors.  On failure prints the one-line message and returns 1. */
int cli_load_config(Config *cfg, const CfgSpec *spec, size_t n_spec, int argc, char **argv);
/* usage line, summary, then every key with its type, default and help */
void cli_print_config_help(const char *cmd, const char *summary, const CfgSpec *spec, size_t n_spec);

#endif
