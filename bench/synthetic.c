/* synthetic.c — the data of configs/bench/synthetic.yaml: `versa synth` exams written in the
 * VinDr-Mammo and CBIS-DDSM layouts, then the same converters `versa prepare vindr|cbis` runs.
 * Equivalent shell commands:
 *   versa synth DIR/raw --patients 250 --size 256x320 --seed 0 --formats vindr,cbis,vqa
 *   versa prepare vindr DIR/raw/vindr-mammo DIR/synth-vindr.h5 --size 128x128
 *   versa prepare cbis  DIR/raw/cbis-ddsm   DIR/synth-cbis.h5  --size 256x256 */
#include "bench/bench.h"
#include "engine/train.h"
#include <stdlib.h>
#include <string.h>

BenchSynthOpts bench_synth_opts_default(void) {
    return (BenchSynthOpts){.patients = 250, .seed = 0, .width = 256, .height = 320, .vindr_size = 128, .cbis_size = 256,
                            .acq_spread = 1.0f};
}

int bench_make_synthetic(const BenchSynthOpts *o, Err *e) {
    if (!o->dir || !o->dir[0]) return err_set(e, "make-synthetic: no output folder");
    if (o->patients < 4) return err_set(e, "make-synthetic: %ld patients is too few (at least 4)", o->patients);
    SynthConfig sc;
    synth_config_default(&sc);
    sc.n_patients = o->patients;
    sc.seed = o->seed;
    sc.width = o->width;
    sc.height = o->height;
    sc.acq_spread = o->acq_spread;
    sc.quiet = o->quiet;
    if (synth_config_check(&sc, e)) return 1;
    char raw[1024], src[1100], out[1100];
    snprintf(raw, sizeof raw, "%s/raw", o->dir);
    double t0 = wall_seconds();
    /* the VQA tasks read raw/mammovqa (MammoVQA JSON + PNG images) directly */
    if (synth_write_dataset(&sc, raw, SYNTH_FMT_VINDR | SYNTH_FMT_CBIS | SYNTH_FMT_VQA, e)) return 1;
    if (!o->quiet)
        fprintf(stderr, "\n[bench] synthesised %ld images (%dx%d) in %.1f s -> %s\n", 4 * o->patients, o->width, o->height,
                wall_seconds() - t0, raw);
    static const struct {
        const char *sub, *file, *name;
        int (*fn)(const ConvertOpts *, ConvertStats *, Err *);
    } conv[2] = {{"vindr-mammo", "synth-vindr.h5", "vindr", convert_vindr}, {"cbis-ddsm", "synth-cbis.h5", "cbis", convert_cbis}};
    for (int k = 0; k < 2; k++) {
        snprintf(src, sizeof src, "%s/%s", raw, conv[k].sub);
        snprintf(out, sizeof out, "%s/%s", o->dir, conv[k].file);
        ConvertOpts co = convert_opts_default();
        co.raw_root = src;
        co.out_path = out;
        co.width = co.height = k == 0 ? o->vindr_size : o->cbis_size;
        co.split.seed = o->seed;
        ConvertStats st = {0};
        if (conv[k].fn(&co, &st, e)) return 1;
        if (!o->quiet)
            fprintf(stderr, "[bench] prepared %s: %ld images (train %ld, val %ld, test %ld), %ld boxes, %ld masks in %.1f s -> %s\n",
                    conv[k].name, st.n_written, st.n_split[0], st.n_split[1], st.n_split[2], st.n_boxes, st.n_masks,
                    st.seconds, out);
    }
    return 0;
}
