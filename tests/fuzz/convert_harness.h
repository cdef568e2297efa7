/*
 * tests/fuzz/convert_harness.h — one harness for every dataset converter target
 * (fuzz_vindr.c, fuzz_cbis.c, ...).  The fuzz input is the converter's label files cut at
 * FUZZ_SEP lines; part k is written to files[k] under a raw root that holds a copy of the
 * converter's fixture folder (tests/data/fixtures/<fixture>: small real DICOM / PGM / PNG
 * images), so rows naming a fixture image go all the way through convert_one: image decode,
 * crop / flip / resize, boxes, polygons, circles and masks, and the prepared-HDF5 writer.
 * Missing parts remove the file (the converter's "no such file" path).  Images the rows name but
 * that do not exist are skipped (CONVERT_SKIP), so mutated ids stay cheap.
 *
 * Property: when a converter succeeds, prep_open accepts what it wrote, with as many samples as
 * it reports written, every label inside its classes (prep_open checks) and every box inside the
 * image.
 */
#ifndef VERSA_TESTS_FUZZ_CONVERT_HARNESS_H
#define VERSA_TESTS_FUZZ_CONVERT_HARNESS_H

#include "tests/fuzz/fuzz.h"
#include "data/prepared.h"

typedef struct ConvTarget {
    const char *name;                          /* scratch sub-folder */
    const char *fixture;                       /* copied once under the raw root, or NULL */
    const char *files[FUZZ_MAX_PARTS];         /* part k -> <raw root>/files[k]; NULL ends */
    const char *remove[4];                     /* fixture files deleted after the copy */
    int (*convert)(const ConvertOpts *o, ConvertStats *st, Err *e);
    int manifest;                              /* files[0] is opts.manifest */
} ConvTarget;

static inline void fuzz_convert_check_output(const char *path, const ConvertStats *st) {
    Prepared p;
    Err e = {{0}};
    if (prep_open(&p, path, &e)) fuzz_fail("the converter wrote a file prep_open rejects: %s", e.msg);
    if ((long)p.n != st->n_written) fuzz_fail("%zu samples in the file, %ld reported written", p.n, st->n_written);
    for (size_t i = 0; i < p.n_boxes; i++) {
        const PrepBox *b = &p.boxes[i];
        if (!(b->x0 >= 0 && b->y0 >= 0 && b->x1 <= (float)p.w && b->y1 <= (float)p.h && b->x0 < b->x1 && b->y0 < b->y1))
            fuzz_fail("box %zu (%g, %g, %g, %g) outside the %dx%d image", i, b->x0, b->y0, b->x1, b->y1, p.w, p.h);
    }
    for (size_t i = 0; i < p.n; i++)
        if (strlen(prep_patient(&p, i)) >= PREP_PATIENT_LEN || strlen(prep_image_id(&p, i)) >= PREP_IMAGE_ID_LEN)
            fuzz_fail("unterminated id of sample %zu", i);
    prep_close(&p);
}

static inline int fuzz_convert(const ConvTarget *t, const uint8_t *data, size_t n) {
    char root[1024], out[1100], path[2048];
    fuzz_join(root, sizeof root, fuzz_tmpdir(), t->name);
    if ((size_t)snprintf(out, sizeof out, "%s/%s.out.h5", fuzz_tmpdir(), t->name) >= sizeof out) abort();
    struct stat st;
    if (stat(root, &st) != 0) {   /* first call in this process: the fixture images */
        fuzz_h5_reuse_free_lists();
        fuzz_mkdir_p(root);
        if (t->fixture) {
            char src[1024];
            fuzz_join(src, sizeof src, fuzz_fixtures(), t->fixture);
            fuzz_copy_tree(src, root);
        }
        for (int k = 0; k < 4 && t->remove[k]; k++) {
            fuzz_join(path, sizeof path, root, t->remove[k]);
            unlink(path);
        }
    }
    FuzzParts fp;
    fuzz_split(data, n, &fp);
    for (int k = 0; k < FUZZ_MAX_PARTS && t->files[k]; k++) {
        if (k < fp.count) {
            fuzz_write_file(root, t->files[k], fp.p[k], fp.n[k]);
        } else {
            fuzz_join(path, sizeof path, root, t->files[k]);
            unlink(path);
        }
    }
    ConvertOpts o = convert_opts_default();
    o.raw_root = root;
    o.out_path = out;
    o.width = 16;
    o.height = 12;
    o.bits = 8;
    o.gzip = 0;
    o.on_missing = CONVERT_SKIP;
    if (t->manifest) {
        fuzz_join(path, sizeof path, root, t->files[0]);
        o.manifest = path;
    }
    ConvertStats cs;
    Err e = {{0}};
    if (t->convert(&o, &cs, &e) == 0) {
        fuzz_convert_check_output(out, &cs);
        unlink(out);
    } else if (!e.msg[0]) {
        fuzz_fail("%s: the converter failed without a message", t->name);
    }
    return 0;
}

#endif
