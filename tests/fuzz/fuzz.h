/*
 * tests/fuzz/fuzz.h — what the libFuzzer targets (tests/fuzz/fuzz_<name>.c) share.
 *
 * Each target file defines one function `int fuzz_<name>(const uint8_t *data, size_t n)` and ends
 * with FUZZ_TARGET(fuzz_<name>).  Built by `make fuzz` (clang, -DFUZZ_LIBFUZZER) the macro
 * becomes LLVMFuzzerTestOneInput; built into the cmocka replay test
 * (tests/e2e/test_fuzz_regressions.c, which #includes every target) it is empty, so the same
 * code replays tests/fuzz/regressions/ and tests/fuzz/corpus/ under `make test` / `make asan`.
 *
 * Conventions:
 *   - A target returns 0; a violated property (a round trip that does not round-trip, a value
 *     outside its documented range) calls fuzz_fail, which aborts: libFuzzer records the input.
 *   - Multi-file inputs (a converter's CSVs, an xlsx's XML parts) are one buffer cut at lines
 *     "=====" (FUZZ_SEP): part k is written to the target's k-th file name.
 *   - Scratch files live in one folder per process under /dev/shm (tmpfs: no disk traffic per
 *     iteration), removed at exit (and by the next fuzz process when a crash skipped that).
 *   - Static functions here are `static inline` so a target that does not use one compiles
 *     cleanly with -Wall -Werror.
 */
#ifndef VERSA_TESTS_FUZZ_H
#define VERSA_TESTS_FUZZ_H

#include <dirent.h>
#include <errno.h>
#include <hdf5.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Every HDF5 input creates or opens a file, and each open callocs libhdf5's metadata cache (about
 * 1 MB).  Past the default per-list limit (64 KB) libhdf5 frees such a block at once, so under
 * ASan every open was a fresh mmap, page faults and a munmap — most of an execution's time
 * (features 272 -> 1500 inputs/s, checkpoint 125 -> 300, prepared 333 -> 500 with this).
 * Unlimited free lists reuse the block; called before the first HDF5 file of a process. */
static inline void fuzz_h5_reuse_free_lists(void) {
    static int done;
    if (!done) {
        H5set_free_list_limits(-1, -1, -1, -1, -1, -1);
        done = 1;
    }
}

#define FUZZ_SEP "\n=====\n"
#define FUZZ_MAX_PARTS 8

#ifdef FUZZ_LIBFUZZER
#define FUZZ_TARGET(fn)                                                   \
    int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n);            \
    int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {           \
        return fn(data, n);                                               \
    }
#else
#define FUZZ_TARGET(fn)
#endif

/* A property violation: one line, then abort (libFuzzer saves the input as a crash). */
#define fuzz_fail(...)                                                    \
    do {                                                                  \
        fprintf(stderr, "fuzz property violated: " __VA_ARGS__);          \
        fputc('\n', stderr);                                              \
        abort();                                                          \
    } while (0)

typedef struct FuzzParts {
    const uint8_t *p[FUZZ_MAX_PARTS];
    size_t n[FUZZ_MAX_PARTS];
    int count;
} FuzzParts;

/* Cuts data at FUZZ_SEP into at most FUZZ_MAX_PARTS parts (the last part keeps the rest). */
static inline void fuzz_split(const uint8_t *data, size_t n, FuzzParts *fp) {
    const size_t ls = sizeof FUZZ_SEP - 1;
    memset(fp, 0, sizeof *fp);
    size_t start = 0;
    for (size_t i = 0; i + ls <= n && fp->count < FUZZ_MAX_PARTS - 1; i++) {
        if (memcmp(data + i, FUZZ_SEP, ls) != 0) continue;
        fp->p[fp->count] = data + start;
        fp->n[fp->count++] = i - start;
        start = i + ls;
        i = start - 1;
    }
    fp->p[fp->count] = data + start;
    fp->n[fp->count++] = n - start;
}

/* A NUL-terminated malloc'd copy (embedded NULs simply end the string early). */
static inline char *fuzz_strndup(const uint8_t *d, size_t n) {
    char *s = malloc(n + 1);
    if (!s) abort();
    if (n) memcpy(s, d, n);
    s[n] = 0;
    return s;
}

/* out = "a/b"; a path longer than the buffer is a harness bug */
static inline void fuzz_join(char *out, size_t n, const char *a, const char *b) {
    if ((size_t)snprintf(out, n, "%s/%s", a, b) >= n) {
        fprintf(stderr, "fuzz: path too long: %s/%s\n", a, b);
        abort();
    }
}

static inline int fuzz_mkdir_p(const char *dir) {
    char tmp[2048];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s", dir) >= sizeof tmp) return 1;
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST) return 1;
        *p = '/';
    }
    return mkdir(tmp, 0755) != 0 && errno != EEXIST;
}

static inline void fuzz_rm_rf(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0) return;
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        struct dirent *de;
        while (d && (de = readdir(d))) {
            if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
            char sub[2048];
            fuzz_join(sub, sizeof sub, path, de->d_name);
            fuzz_rm_rf(sub);
        }
        if (d) closedir(d);
        rmdir(path);
    } else {
        unlink(path);
    }
}

static char fuzz_tmp_root[512];

static inline void fuzz_tmp_cleanup(void) {
    if (fuzz_tmp_root[0]) fuzz_rm_rf(fuzz_tmp_root);
}

/* This process's scratch folder: /dev/shm/versa-fuzz-<pid> (or $TMPDIR / /tmp without tmpfs),
 * created on first use and removed at exit. */
static inline const char *fuzz_tmpdir(void) {
    if (!fuzz_tmp_root[0]) {
        struct stat st;
        const char *base = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) && access("/dev/shm", W_OK) == 0
                               ? "/dev/shm"
                               : (getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
        /* folders of fuzz processes that died (a crash skips atexit) */
        DIR *d = opendir(base);
        struct dirent *de;
        while (d && (de = readdir(d))) {
            int pid;
            if (sscanf(de->d_name, "versa-fuzz-%d", &pid) != 1 || pid == (int)getpid()) continue;
            if (kill(pid, 0) == 0 || errno != ESRCH) continue;
            char stale[1024];
            fuzz_join(stale, sizeof stale, base, de->d_name);
            fuzz_rm_rf(stale);
        }
        if (d) closedir(d);
        snprintf(fuzz_tmp_root, sizeof fuzz_tmp_root, "%s/versa-fuzz-%d", base, (int)getpid());
        fuzz_rm_rf(fuzz_tmp_root);
        if (fuzz_mkdir_p(fuzz_tmp_root)) {
            fprintf(stderr, "fuzz: cannot create %s\n", fuzz_tmp_root);
            abort();
        }
        atexit(fuzz_tmp_cleanup);
    }
    return fuzz_tmp_root;
}

/* Writes n bytes to dir/rel, creating the folders of rel. */
static inline void fuzz_write_file(const char *dir, const char *rel, const uint8_t *d, size_t n) {
    char path[2048];
    fuzz_join(path, sizeof path, dir, rel);
    char *slash = strrchr(path, '/');
    *slash = 0;
    fuzz_mkdir_p(path);
    *slash = '/';
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(d, 1, n, f) != n) || fclose(f) != 0) {
        fprintf(stderr, "fuzz: cannot write %s\n", path);
        abort();
    }
}

/* Copies the tree src into dst (regular files and folders). */
static inline void fuzz_copy_tree(const char *src, const char *dst) {
    struct stat st;
    if (stat(src, &st) != 0) return;
    if (S_ISDIR(st.st_mode)) {
        fuzz_mkdir_p(dst);
        DIR *d = opendir(src);
        struct dirent *de;
        while (d && (de = readdir(d))) {
            if (de->d_name[0] == '.') continue;
            char a[2048], b[2048];
            fuzz_join(a, sizeof a, src, de->d_name);
            fuzz_join(b, sizeof b, dst, de->d_name);
            fuzz_copy_tree(a, b);
        }
        if (d) closedir(d);
        return;
    }
    FILE *in = fopen(src, "rb"), *out = in ? fopen(dst, "wb") : NULL;
    char buf[1 << 14];
    size_t k;
    while (out && (k = fread(buf, 1, sizeof buf, in)) > 0) fwrite(buf, 1, k, out);
    if (out) fclose(out);
    if (in) fclose(in);
}

/* The project's fixtures (tests/data/fixtures, relative to the repository root, where
 * `make fuzz` and `make test` run); VERSA_FIXTURES overrides. */
static inline const char *fuzz_fixtures(void) {
    const char *f = getenv("VERSA_FIXTURES");
    return f && *f ? f : "tests/data/fixtures";
}

#endif
