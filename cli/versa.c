/* versa.c — the versa program: subcommand dispatch. */
#include <stdio.h>
#include <string.h>
int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help")) {
        printf("usage: versa COMMAND [options]\n");
        return 0;
    }
    fprintf(stderr, "versa: unknown command '%s'\n", argv[1]);
    return 1;
}
