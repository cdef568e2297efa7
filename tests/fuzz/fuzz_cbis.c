/*
 * fuzz_cbis.c — CBIS-DDSM (data/convert_cbis.c): the four case-description CSVs (mass/calc x
 * train/test), messy headers, image / ROI paths with newlines, ROI mask search; the same input
 * also through cbis-roi (one sample per row, the cropped image found by size).
 * Input: the label files cut at "=====" lines, in the order of .files below (see
 * tests/fuzz/convert_harness.h).  Seeds: the fixture's own files (tests/data/fixtures/cbis-ddsm).
 */
#include "tests/fuzz/convert_harness.h"

int fuzz_cbis(const uint8_t *data, size_t n) {
    static const ConvTarget t = {
        .name = "cbis",
        .fixture = "cbis-ddsm",
        .files = {"mass_case_description_train_set.csv",
                  "mass_case_description_test_set.csv",
                  "calc_case_description_train_set.csv",
                  "calc_case_description_test_set.csv"},
        .remove = {NULL},
        .convert = convert_cbis,
        .manifest = 0,
    };
    ConvTarget roi = t;
    roi.name = "cbis_roi";
    roi.convert = convert_cbis_roi;
    fuzz_convert(&t, data, n);
    return fuzz_convert(&roi, data, n);
}

FUZZ_TARGET(fuzz_cbis)
