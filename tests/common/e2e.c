/* e2e.c — see e2e.h */
#include "tests/common/e2e.h"
#include "tests/common/testutil.h"
#include "data/data.h"
#include <stdio.h>

void e2e_synth_vindr(const char *dir, int n_patients, int size, char *prepared, size_t prepared_len) {
    SynthConfig sc;
    synth_config_default(&sc);
    sc.n_patients = n_patients;
    sc.width = 96;
    sc.height = 120;
    sc.quiet = 1;
    Err e = {0};
    char raw[1024], vindr[1100];
    snprintf(raw, sizeof raw, "%s/raw", dir);
    if (synth_write_dataset(&sc, raw, SYNTH_FMT_VINDR, &e)) fail_msg("synth: %s", e.msg);
    snprintf(vindr, sizeof vindr, "%s/vindr-mammo", raw);
    snprintf(prepared, prepared_len, "%s/vindr.h5", dir);
    ConvertOpts o = convert_opts_default();
    o.raw_root = vindr;
    o.out_path = prepared;
    o.width = o.height = size;
    ConvertStats cs = {0};
    if (convert_vindr(&o, &cs, &e)) fail_msg("convert: %s", e.msg);
}
