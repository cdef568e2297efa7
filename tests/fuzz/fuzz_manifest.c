/*
 * fuzz_manifest.c — the generic manifest converter (data/convert_manifest.c): manifest.csv with
 * path / patient_id / split / view / laterality / mask and free label columns (class discovery,
 * numeric ordering).
 * Input: the label files cut at "=====" lines, in the order of .files below (see
 * tests/fuzz/convert_harness.h).  Seeds: the fixture's own files (tests/data/fixtures/manifest).
 */
#include "tests/fuzz/convert_harness.h"

int fuzz_manifest(const uint8_t *data, size_t n) {
    static const ConvTarget t = {
        .name = "manifest",
        .fixture = "manifest",
        .files = {"manifest.csv"},
        .remove = {NULL},
        .convert = convert_manifest,
        .manifest = 1,
    };
    return fuzz_convert(&t, data, n);
}

FUZZ_TARGET(fuzz_manifest)
