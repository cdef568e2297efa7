/*
 * fuzz_rsna.c — RSNA screening (data/convert_rsna.c): train.csv (density, BIRADS, 0/1/True/False
 * flags).
 * Input: the label files cut at "=====" lines, in the order of .files below (see
 * tests/fuzz/convert_harness.h).  Seeds: the fixture's own files (tests/data/fixtures/rsna).
 */
#include "tests/fuzz/convert_harness.h"

int fuzz_rsna(const uint8_t *data, size_t n) {
    static const ConvTarget t = {
        .name = "rsna",
        .fixture = "rsna",
        .files = {"train.csv"},
        .remove = {NULL},
        .convert = convert_rsna,
        .manifest = 0,
    };
    return fuzz_convert(&t, data, n);
}

FUZZ_TARGET(fuzz_rsna)
