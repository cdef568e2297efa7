/*
 * fuzz_inbreast.c — INbreast (data/convert_inbreast.c): the ';'-separated INbreast.csv and the
 * OsiriX plist XMLs of AllXML/ (the project's own small plist parser: dict / array / string /
 * number, Point_px polygons).
 * Input: the label files cut at "=====" lines, in the order of .files below (see
 * tests/fuzz/convert_harness.h).  Seeds: the fixture's own files (tests/data/fixtures/inbreast).
 */
#include "tests/fuzz/convert_harness.h"

int fuzz_inbreast(const uint8_t *data, size_t n) {
    static const ConvTarget t = {
        .name = "inbreast",
        .fixture = "inbreast",
        .files = {"INbreast.csv",
                  "AllXML/22678622.xml",
                  "AllXML/22678646.xml",
                  "AllXML/53586896.xml"},
        .remove = {NULL},
        .convert = convert_inbreast,
        .manifest = 0,
    };
    return fuzz_convert(&t, data, n);
}

FUZZ_TARGET(fuzz_inbreast)
