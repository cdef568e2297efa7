/* cmd_prepare.c — `versa prepare DATASET RAW_ROOT OUT.h5 [options]`: a public dataset's raw
 * layout (or a synthetic one written in that layout) -> one prepared HDF5 file. */
#include "cli/cli.h"
#include "data/data.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int (*ConvertFn)(const ConvertOpts *o, ConvertStats *st, Err *e);
static const struct {
    const char *name;
    ConvertFn fn;
} CONVERTERS[] = {
    {"vindr", convert_vindr},   {"cbis", convert_cbis},   {"cbis-roi", convert_cbis_roi}, {"inbreast", convert_inbreast},
    {"cmmd", convert_cmmd},     {"rsna", convert_rsna},   {"embed", convert_embed},       {"mias", convert_mias},
    {"manifest", convert_manifest},
};
#define N_CONVERTERS (sizeof CONVERTERS / sizeof CONVERTERS[0])

static void usage(void) {
    printf("usage: versa prepare DATASET RAW_ROOT OUT.h5 [--size WxH] [--bits 8|16] [--limit N]\n"
           "                     [--no-crop] [--seed S] [--skip-missing] [--manifest FILE.csv]\n"
           "                     [--labels a,b,...]\n\n"
           "Converts a dataset from the layout it is distributed in into one prepared HDF5 file:\n"
           "images cropped to the breast, flipped to a common side and resized; labels, boxes,\n"
           "masks, view, laterality, patient id and a patient-disjoint train/val/test split.\n\n"
           "DATASET: vindr, cbis, cbis-roi, inbreast, cmmd, rsna, embed, mias, or manifest (a generic\n"
           "CSV of image paths and label columns, for any other or private cohort: --manifest\n"
           "FILE.csv, columns 'path' and 'patient_id', optional 'split', labels chosen with --labels).\n"
           "cbis-roi reads the same CBIS-DDSM release as cbis but makes one sample per abnormality\n"
           "from its cropped image (lesion patches for ROI classification or pretraining; each\n"
           "labelled with its own row; not breast-cropped, padded to keep the lesion's shape).\n\n"
           "options:\n"
           "  --size WxH        output size (default 224x224)\n"
           "  --bits 8|16       stored bit depth (16)\n"
           "  --limit N         convert at most N images\n"
           "  --no-crop         keep the whole image (no breast-region crop)\n"
           "  --seed S          seed of the patient split (0)\n"
           "  --skip-missing    skip missing/unreadable images (counted) instead of failing\n");
}

int cmd_prepare(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        usage();
        return 0;
    }
    const char *pos[3] = {0};
    int npos = 0;
    ConvertOpts o = convert_opts_default();
    o.width = o.height = 224;
    const char *labels_arg = NULL;
    const char *labels[64] = {0};
    char labels_buf[1024];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-') {
            if (npos == 3) return cli_fail("prepare: unexpected argument '%s'", a);
            pos[npos++] = a;
            continue;
        }
        if (!strcmp(a, "--no-crop")) {
            o.prep.crop = 0;
            continue;
        }
        if (!strcmp(a, "--skip-missing")) {
            o.on_missing = CONVERT_SKIP;
            continue;
        }
        const char *v = i + 1 < argc ? argv[++i] : NULL;
        if (!v) return cli_fail("prepare: %s needs a value", a);
        char *end = NULL;
        if (!strcmp(a, "--size")) {
            if (sscanf(v, "%dx%d", &o.width, &o.height) != 2 || o.width < 8 || o.height < 8)
                return cli_fail("prepare: --size: '%s' is not WxH (at least 8x8)", v);
        } else if (!strcmp(a, "--bits")) {
            o.bits = (int)strtol(v, &end, 10);
            if (*end || (o.bits != 8 && o.bits != 16)) return cli_fail("prepare: --bits: '%s' is not 8 or 16", v);
        } else if (!strcmp(a, "--limit")) {
            o.limit = strtol(v, &end, 10);
            if (*end || o.limit < 0) return cli_fail("prepare: --limit: '%s' is not a count", v);
        } else if (!strcmp(a, "--seed")) {
            o.split.seed = strtoull(v, &end, 10);
            if (*end) return cli_fail("prepare: --seed: '%s' is not an integer", v);
        } else if (!strcmp(a, "--manifest")) {
            o.manifest = v;
        } else if (!strcmp(a, "--labels")) {
            labels_arg = v;
        } else {
            return cli_fail("prepare: unknown option '%s' (try 'versa prepare --help')", a);
        }
    }
    if (npos != 3) return cli_fail("prepare: expected DATASET RAW_ROOT OUT.h5 (try 'versa prepare --help')");
    ConvertFn fn = NULL;
    for (size_t i = 0; i < N_CONVERTERS; i++)
        if (!strcmp(pos[0], CONVERTERS[i].name)) fn = CONVERTERS[i].fn;
    if (!fn) return cli_fail("prepare: unknown dataset '%s' (vindr, cbis, cbis-roi, inbreast, cmmd, rsna, embed, mias, manifest)", pos[0]);
    if (labels_arg) {
        snprintf(labels_buf, sizeof labels_buf, "%s", labels_arg);
        int n = 0;
        for (char *save = NULL, *t = strtok_r(labels_buf, ",", &save); t && n < 63; t = strtok_r(NULL, ",", &save))
            labels[n++] = t;
        o.manifest_labels = labels;
    }
    o.raw_root = pos[1];
    o.out_path = pos[2];
    engine_threads_init();
    ConvertStats st = {0};
    Err e = {0};
    if (fn(&o, &st, &e)) return cli_fail("%s", e.msg);
    fprintf(stderr, "[prepare] %s: %ld images (train %ld, val %ld, test %ld), %ld boxes, %ld masks, %ld skipped in %.1f s -> %s\n",
            pos[0], st.n_written, st.n_split[0], st.n_split[1], st.n_split[2], st.n_boxes, st.n_masks, st.n_skipped,
            st.seconds, o.out_path);
    if (st.n_skipped) fprintf(stderr, "[prepare] first skipped: %s\n", st.first_skip);
    return 0;
}
