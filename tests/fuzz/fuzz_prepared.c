/*
 * fuzz_prepared.c — the prepared-HDF5 reader (data/prepared.c: prep_open's validation of the
 * root attributes, /images and /masks shapes, types and chunking, label / finding / box tables,
 * string ids; then prep_read_image / _f32 / prep_read_mask through raw-chunk and hyperslab reads).
 * Input: an HDF5 file or a description of one (tests/fuzz/h5_harness.h).
 * Properties after a successful open: sample pixels read as floats lie in [0, 1]; every id is a
 * terminated string; labels lie in [-1, n_classes); box offsets are monotone and end at n_boxes;
 * no HDF5 object stays open.
 * Seeds: prepared files written by the converters from tests/data/fixtures (raw bytes) and
 * descriptions of valid and near-valid files (tests/fuzz/make_seeds.c).
 */
#include "tests/fuzz/h5_harness.h"
#include "data/prepared.h"

static void fuzz_prepared_samples(const Prepared *p) {
    for (size_t i = 0; i < p->n; i++) {
        if (!memchr(prep_patient(p, i), 0, PREP_PATIENT_LEN)) fuzz_fail("patient_id %zu is not terminated", i);
        if (!memchr(prep_image_id(p, i), 0, PREP_IMAGE_ID_LEN)) fuzz_fail("image_id %zu is not terminated", i);
        for (int k = 0; k < p->n_labels; k++) {
            int32_t v = prep_label(p, i, k);
            if (v < -1 || v >= p->n_classes[k]) fuzz_fail("label %d of sample %zu = %d outside [-1, %d)", k, i, v, p->n_classes[k]);
        }
        if (p->box_offset[i + 1] < p->box_offset[i]) fuzz_fail("box offsets decrease at %zu", i);
    }
    if ((size_t)p->box_offset[p->n] != p->n_boxes) fuzz_fail("box offsets end at %" PRId64 " of %zu boxes", p->box_offset[p->n], p->n_boxes);
    const size_t npx = (size_t)p->h * (size_t)p->w;
    if (p->n == 0 || npx > ((size_t)1 << 20)) return;   /* keep an iteration fast */
    float *f = malloc(npx * sizeof *f);
    uint8_t *m = malloc(npx);
    if (!f || !m) abort();
    size_t which[2] = {0, p->n - 1};
    for (int k = 0; k < 2; k++) {
        Err e = {{0}};
        if (prep_read_image_f32(p, which[k], f, &e) == 0) {
            for (size_t j = 0; j < npx; j++)
                if (!(f[j] >= 0.0f && f[j] <= 1.0f)) fuzz_fail("sample %zu pixel %zu = %g outside [0, 1]", which[k], j, f[j]);
        } else if (!e.msg[0]) {
            fuzz_fail("prep_read_image_f32 failed without a message");
        }
        e.msg[0] = 0;
        if (prep_read_mask(p, which[k], m, &e) && !e.msg[0]) fuzz_fail("prep_read_mask failed without a message");
    }
    Err e = {{0}};
    if (prep_read_image(p, p->n, f, &e) == 0) fuzz_fail("reading sample n = %zu succeeded", p->n);
    free(f);
    free(m);
}

int fuzz_prepared(const uint8_t *data, size_t n) {
    char path[1024];
    fuzz_join(path, sizeof path, fuzz_tmpdir(), "prepared.h5");
    if (!h5f_build(data, n, path)) return 0;
    Prepared p;
    Err e = {{0}};
    if (prep_open(&p, path, &e) == 0) {
        h5f_quiet();
        fuzz_prepared_samples(&p);
        prep_close(&p);
    } else if (!e.msg[0]) {
        fuzz_fail("prep_open failed without a message");
    }
    h5f_check_closed("prep_open/prep_close");
    return 0;
}

FUZZ_TARGET(fuzz_prepared)
