/*
 * fuzz_embed.c — EMBED (data/convert_embed.c): tables/EMBED_OpenData_metadata.csv (anon_dicom_path
 * resolution, ROI_coords lists) and tables/EMBED_OpenData_clinical.csv (asses, side,
 * path_severity).
 * Input: the label files cut at "=====" lines, in the order of .files below (see
 * tests/fuzz/convert_harness.h).  Seeds: the fixture's own files (tests/data/fixtures/embed).
 */
#include "tests/fuzz/convert_harness.h"

int fuzz_embed(const uint8_t *data, size_t n) {
    static const ConvTarget t = {
        .name = "embed",
        .fixture = "embed",
        .files = {"tables/EMBED_OpenData_metadata.csv", "tables/EMBED_OpenData_clinical.csv"},
        .remove = {NULL},
        .convert = convert_embed,
        .manifest = 0,
    };
    return fuzz_convert(&t, data, n);
}

FUZZ_TARGET(fuzz_embed)
