/* tests/common/spawn.h — running a program (usually this test binary as a worker) under
 * `timeout`, optionally under `mpirun -np N`, with a clean MPI environment, and capturing its
 * output.  One place for what every multi-rank test needs on this machine: shared memory only
 * (pml ob1, btl self,vader: nothing touches the network), run-as-root allowed, one OpenMP thread
 * per rank (2 ranks on 2 cores), LeakSanitizer off for MPI's allocations that live until exit,
 * and inherited OMPI_ / PMIX_ / PMI_ / VERSA_MPI variables dropped so a run without mpirun is
 * really without it. */
#ifndef VERSA_TESTS_COMMON_SPAWN_H
#define VERSA_TESTS_COMMON_SPAWN_H

#include <stddef.h>

typedef struct SpawnResult {
    int status;     /* exit code; 128 + signal when killed; 124 when `timeout` fired; 127 exec failed */
    double secs;    /* wall time */
} SpawnResult;

/* 1 when `prog` is an executable in $PATH */
int spawn_in_path(const char *prog);

/* Runs `timeout <timeout_s> [mpirun -np <ranks> --oversubscribe] argv...` (ranks 0: no mpirun)
 * with the environment above plus `extra_env` (NULL-terminated NAME=VALUE list; an inherited
 * variable of the same name is replaced).  stdout and stderr go to `out` (NUL-terminated,
 * truncated to `cap` - 1 bytes; the rest is read and dropped so the child never blocks). */
SpawnResult spawn_capture(char *const *argv, int ranks, int timeout_s, const char *const *extra_env, char *out,
                          size_t cap);

#endif
