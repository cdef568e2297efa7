/*
 * fuzz_mias.c — MIAS (data/convert_mias.c): Info.txt lines "REFNUM BG CLASS [SEVERITY [X Y
 * RADIUS]]" (bottom-left origin, circles into masks).
 * Input: the label files cut at "=====" lines, in the order of .files below (see
 * tests/fuzz/convert_harness.h).  Seeds: the fixture's own files (tests/data/fixtures/mias).
 */
#include "tests/fuzz/convert_harness.h"

int fuzz_mias(const uint8_t *data, size_t n) {
    static const ConvTarget t = {
        .name = "mias",
        .fixture = "mias",
        .files = {"Info.txt"},
        .remove = {NULL},
        .convert = convert_mias,
        .manifest = 0,
    };
    return fuzz_convert(&t, data, n);
}

FUZZ_TARGET(fuzz_mias)
