/* fs.c — folders: `mkdir -p` with a one-line error naming the folder that could not be made. */
#include "engine.h"
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

int make_dirs(const char *path, Err *e) {
    char buf[4096];
    size_t n = strlen(path);
    if (n >= sizeof buf) return err_set(e, "%s: path too long", path);
    memcpy(buf, path, n + 1);
    /* every prefix that ends at a '/' (and the whole path); an existing folder is fine */
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != 0) continue;
        char ch = buf[i];
        buf[i] = 0;
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return err_set(e, "%s: cannot create folder: %s", buf, strerror(errno));
        buf[i] = ch;
    }
    return 0;
}
