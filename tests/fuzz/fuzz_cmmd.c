/*
 * fuzz_cmmd.c — CMMD (data/convert_cmmd.c) through its CSV export CMMD_clinicaldata_revision.csv
 * (the .xlsx is fuzzed by fuzz_xlsx): ID1 / LeftRight / classification / subtype rows joined with
 * the DICOM folders.
 * Input: the label files cut at "=====" lines, in the order of .files below (see
 * tests/fuzz/convert_harness.h).  Seeds: the fixture's own files (tests/data/fixtures/cmmd).
 */
#include "tests/fuzz/convert_harness.h"

int fuzz_cmmd(const uint8_t *data, size_t n) {
    static const ConvTarget t = {
        .name = "cmmd",
        .fixture = "cmmd",
        .files = {"CMMD_clinicaldata_revision.csv"},
        .remove = {"CMMD_clinicaldata_revision.xlsx"},
        .convert = convert_cmmd,
        .manifest = 0,
    };
    return fuzz_convert(&t, data, n);
}

FUZZ_TARGET(fuzz_cmmd)
