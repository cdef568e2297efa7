/* tests/common/spawn.c — see spawn.h */
#include "tests/common/spawn.h"
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

int spawn_in_path(const char *prog) {
    const char *path = getenv("PATH");
    char buf[4096];
    while (path && *path) {
        size_t len = strcspn(path, ":");
        if (len > 0 && len + strlen(prog) + 2 < sizeof buf) {
            snprintf(buf, sizeof buf, "%.*s/%s", (int)len, path, prog);
            if (access(buf, X_OK) == 0) return 1;
        }
        path += len;
        if (*path == ':') path++;
    }
    return 0;
}

static int has_prefix(const char *s, const char *p) { return strncmp(s, p, strlen(p)) == 0; }

/* `e` (NAME=...) names the same variable as one of `extra` */
static int overridden(const char *e, const char *const *extra) {
    for (size_t i = 0; extra && extra[i]; i++) {
        const char *eq = strchr(extra[i], '=');
        size_t n = eq ? (size_t)(eq - extra[i]) + 1 : strlen(extra[i]);
        if (!strncmp(e, extra[i], n)) return 1;
    }
    return 0;
}

SpawnResult spawn_capture(char *const *argv, int ranks, int timeout_s, const char *const *extra_env, char *out,
                          size_t cap) {
    SpawnResult res = {.status = 127};
    char *args[64], secs[16], np[16];
    int na = 0;
    snprintf(secs, sizeof secs, "%d", timeout_s);
    snprintf(np, sizeof np, "%d", ranks);
    args[na++] = "timeout";
    args[na++] = secs;
    if (ranks > 0) {
        args[na++] = "mpirun";
        args[na++] = "-np";
        args[na++] = np;
        args[na++] = "--oversubscribe";
    }
    for (size_t i = 0; argv[i] && na < 63; i++) args[na++] = argv[i];
    args[na] = NULL;

    size_t ne = 0, nx = 0;
    while (environ[ne]) ne++;
    while (extra_env && extra_env[nx]) nx++;
    char **env = calloc(ne + nx + 16, sizeof(char *));
    if (!env) return res;
    size_t k = 0;
    static const char *const drop[] = {"OMPI_", "PMIX_", "PMI_", "VERSA_MPI=", "OMP_NUM_THREADS=", "ASAN_OPTIONS="};
    for (size_t i = 0; i < ne; i++) {
        int skip = overridden(environ[i], extra_env);
        for (size_t d = 0; d < sizeof drop / sizeof drop[0] && !skip; d++) skip = has_prefix(environ[i], drop[d]);
        if (!skip) env[k++] = environ[i];
    }
    char asan_opt[1024];
    const char *asan = getenv("ASAN_OPTIONS");
    snprintf(asan_opt, sizeof asan_opt, "ASAN_OPTIONS=%s%sdetect_leaks=0", asan ? asan : "", asan && *asan ? ":" : "");
    env[k++] = asan_opt;
    env[k++] = "OMP_NUM_THREADS=1";
    env[k++] = "OMPI_ALLOW_RUN_AS_ROOT=1";
    env[k++] = "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1";
    env[k++] = "OMPI_MCA_btl=self,vader";
    env[k++] = "OMPI_MCA_pml=ob1";
    env[k++] = "OMPI_MCA_btl_vader_single_copy_mechanism=none";
    for (size_t i = 0; i < nx; i++) env[k++] = (char *)extra_env[i];
    env[k] = NULL;

    int fd[2];
    if (pipe(fd) != 0) {
        free(env);
        return res;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        close(fd[0]);
        close(fd[1]);
        free(env);
        return res;
    }
    if (pid == 0) {
        dup2(fd[1], 1);
        dup2(fd[1], 2);
        close(fd[0]);
        close(fd[1]);
        execvpe(args[0], args, env);
        fprintf(stderr, "exec %s failed\n", args[0]);
        _exit(127);
    }
    close(fd[1]);
    size_t len = 0;
    char sink[4096];
    for (;;) {
        int room = cap > 0 && len + 1 < cap;
        ssize_t got = read(fd[0], room ? out + len : sink, room ? cap - 1 - len : sizeof sink);
        if (got <= 0) break;
        if (room) len += (size_t)got;
    }
    if (cap > 0) out[len] = '\0';
    close(fd[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    res.secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    res.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    free(env);
    return res;
}
