/*
 * fuzz_vindr.c — VinDr-Mammo (data/convert_vindr.c): breast-level_annotations.csv and
 * finding_annotations.csv (finding_categories list literals, box coordinates).
 * Input: the label files cut at "=====" lines, in the order of .files below (see
 * tests/fuzz/convert_harness.h).  Seeds: the fixture's own files (tests/data/fixtures/vindr).
 */
#include "tests/fuzz/convert_harness.h"

int fuzz_vindr(const uint8_t *data, size_t n) {
    static const ConvTarget t = {
        .name = "vindr",
        .fixture = "vindr",
        .files = {"breast-level_annotations.csv", "finding_annotations.csv"},
        .remove = {NULL},
        .convert = convert_vindr,
        .manifest = 0,
    };
    return fuzz_convert(&t, data, n);
}

FUZZ_TARGET(fuzz_vindr)
