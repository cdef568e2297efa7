/* cmd_synth.c — `versa synth OUT_DIR [options]`: synthetic four-view exams written in the real
 * datasets' on-disk layouts (VinDr-Mammo, CBIS-DDSM, MammoVQA), optionally a contact sheet. */
#include "cli/cli.h"
#include "data/data.h"
#include "engine/train.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(void) {
    printf("usage: versa synth OUT_DIR [--patients N] [--size WxH] [--seed S] [--bits B]\n"
           "                   [--formats vindr,cbis,vqa|all] [--contrast X] [--acquisition X]\n"
           "                   [--preview FILE.png]\n\n"
           "Generates N synthetic patients (four views each: L/R x CC/MLO) and writes them under\n"
           "OUT_DIR in the real datasets' layouts, so `versa prepare` reads them with the same\n"
           "converters as the public data:\n"
           "  vindr  OUT_DIR/vindr-mammo/images/<study_id>/<image_id>.dicom\n"
           "         + breast-level_annotations.csv + finding_annotations.csv\n"
           "         (versa prepare vindr OUT_DIR/vindr-mammo ...)\n"
           "  cbis   OUT_DIR/cbis-ddsm/CBIS-DDSM/<case>/<study>/<series>/*.dcm (images, ROI masks,\n"
           "         crops) + {mass,calc}_case_description_{train,test}_set.csv\n"
           "         (versa prepare cbis OUT_DIR/cbis-ddsm ...)\n"
           "  vqa    OUT_DIR/mammovqa/images/<image_id>.png\n"
           "         + MammoVQA-Image-{Train,Eval,Bench}.json\n\n"
           "options:\n"
           "  --patients N     patients (images = 4N), default 50\n"
           "  --size WxH       image size in pixels, 64..8192 each, default 416x512\n"
           "  --seed S         seed; the same seed gives the same images on any thread count\n"
           "                   (1234; versa bench --make-synthetic uses 0)\n"
           "  --bits B         bits stored, 12..16 (12)\n"
           "  --formats LIST   comma-separated vindr, cbis, vqa or all (all)\n"
           "  --contrast X     lesion contrast factor 0..10: the difficulty knob (1.0)\n"
           "  --acquisition X  spread of the display processing between images, 0..8 (1.0): X widens\n"
           "                   the VOI gain and offset X-fold and adds a display gamma, as between\n"
           "                   vendors (brightness then says less about density)\n"
           "  --preview F.png  also write a contact sheet of the first 16 images (4 x 4 tiles) with\n"
           "                   lesion boxes (red malignant, green benign) and mask outlines (yellow)\n");
}

int cmd_synth(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        usage();
        return 0;
    }
    SynthConfig cfg;
    synth_config_default(&cfg);
    cfg.n_patients = 50;
    const char *out = NULL, *preview = NULL;
    int formats = SYNTH_FMT_ALL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (a[0] != '-') {
            if (out) return cli_fail("synth: more than one output folder ('%s' and '%s')", out, a);
            out = a;
            continue;
        }
        if (!v) return cli_fail("synth: %s needs a value", a);
        char *end = NULL;
        if (!strcmp(a, "--patients")) {
            cfg.n_patients = strtol(v, &end, 10);
            if (*end || cfg.n_patients < 1) return cli_fail("synth: --patients: '%s' is not a positive integer", v);
        } else if (!strcmp(a, "--size")) {
            int w = 0, h = 0, n = 0;
            if (sscanf(v, "%dx%d%n", &w, &h, &n) != 2 || v[n])
                return cli_fail("synth: --size: '%s' is not WxH (e.g. 416x512)", v);
            if (w < 64 || h < 64 || w > 8192 || h > 8192)
                return cli_fail("synth: --size: %dx%d is outside 64..8192 pixels per side", w, h);
            cfg.width = w;
            cfg.height = h;
        } else if (!strcmp(a, "--seed")) {
            cfg.seed = strtoull(v, &end, 10);
            if (end == v || *end) return cli_fail("synth: --seed: '%s' is not an integer", v);
        } else if (!strcmp(a, "--bits")) {
            cfg.bits = (int)strtol(v, &end, 10);
            if (end == v || *end) return cli_fail("synth: --bits: '%s' is not an integer", v);
        } else if (!strcmp(a, "--formats")) {
            Err fe = {0};
            if (synth_parse_formats(v, &formats, &fe)) return cli_fail("%s (in --formats '%s')", fe.msg, v);
        } else if (!strcmp(a, "--contrast")) {
            cfg.lesion_contrast = strtof(v, &end);
            if (end == v || *end) return cli_fail("synth: --contrast: '%s' is not a number", v);
        } else if (!strcmp(a, "--acquisition")) {
            cfg.acq_spread = strtof(v, &end);
            if (end == v || *end) return cli_fail("synth: --acquisition: '%s' is not a number", v);
        } else if (!strcmp(a, "--preview")) {
            preview = v;
        } else {
            return cli_fail("synth: unknown option '%s' (try 'versa synth --help')", a);
        }
        i++;
    }
    if (!out) return cli_fail("synth: no output folder given (try 'versa synth --help')");
    engine_threads_init();
    Err e = {0};
    if (synth_config_check(&cfg, &e)) return cli_fail("synth: %s", e.msg);
    double t0 = wall_seconds();
    if (synth_write_dataset(&cfg, out, formats, &e)) return cli_fail("%s", e.msg);
    double dt = wall_seconds() - t0;
    fprintf(stderr, "[synth] %ld images (%dx%d, %d-bit) in %.1f s (%.1f img/s) -> %s\n", 4 * cfg.n_patients,
            cfg.width, cfg.height, cfg.bits, dt, dt > 0 ? 4.0 * cfg.n_patients / dt : 0, out);
    if (preview) {
        if (synth_contact_sheet(&cfg, 16, 4, 256, preview, &e)) return cli_fail("%s", e.msg);
        fprintf(stderr, "[synth] preview -> %s\n", preview);
    }
    return 0;
}
