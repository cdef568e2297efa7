/*
 * fuzz_features.c — the stage-2 teacher features reader (distill/train.c teacher_features_load:
 * `/cls` or `/gap`, `/dino_bottleneck`, `/ibot_bottleneck` and `/sample`, as `versa extract`
 * writes them), for each of the three feature choices.
 * Input: a description of an HDF5 file (tests/fuzz/h5_harness.h).
 * Properties: a failure has a message; a success has n rows of dim finite values, dim > 0; no
 * HDF5 object stays open.
 * Seeds: descriptions of a valid 4-sample file and of near-valid ones (tests/fuzz/corpus/features).
 */
#include "tests/fuzz/h5_harness.h"
#include "distill/distill.h"
#include <math.h>

int fuzz_features(const uint8_t *data, size_t n) {
    char path[1024];
    fuzz_join(path, sizeof path, fuzz_tmpdir(), "features.h5");
    if (!h5f_build(data, n, path)) return 0;
    const int which[3] = {TFEAT_GAP, TFEAT_CLS, TFEAT_CONCAT};
    for (int k = 0; k < 3; k++) {
        TeacherFeatures tf;
        Err e = {{0}};
        if (teacher_features_load(path, which[k], 4, &tf, &e) == 0) {
            if (tf.n != 4 || tf.dim == 0) fuzz_fail("teacher_features_load: n %zu dim %zu", tf.n, tf.dim);
            for (size_t i = 0; i < tf.n * tf.dim; i++)
                if (!isfinite(tf.x[i])) fuzz_fail("teacher_features_load: non-finite value %zu", i);
            teacher_features_free(&tf);
        } else if (!e.msg[0]) {
            fuzz_fail("teacher_features_load failed without a message");
        }
        h5f_check_closed("teacher_features_load");
    }
    return 0;
}

FUZZ_TARGET(fuzz_features)
