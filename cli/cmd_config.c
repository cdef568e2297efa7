/* cmd_config.c — `versa config`: load a YAML config, apply key=value overrides, print the result.
 * The quickest way to see what a run will use, and to check a config for typos: an override of a
 * key the file does not have is an error, with the closest key suggested. */
#include "cli/cli.h"
#include <stdio.h>
#include <stdlib.h>

int cmd_config(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        printf("usage: versa config [CONFIG.yaml] [key=value ...]\n\n"
               "Prints CONFIG.yaml as the program reads it (nested keys, lists), with the overrides\n"
               "applied.  key=value must name a key of the file (`+key=value` adds one); lists are\n"
               "written key=[a,b].  Exit 1 with one line on stderr on a bad file or key.\n");
        return 0;
    }
    Config cfg;
    if (cli_load_config(&cfg, NULL, 0, argc, argv)) return 1;
    char *yaml = cfg_to_yaml(&cfg);
    fputs(yaml, stdout);
    free(yaml);
    cfg_free(&cfg);
    return 0;
}
