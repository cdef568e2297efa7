/*
 * fuzz_csv.c — the CSV reader (data/csv.c, used by every converter) on arbitrary bytes with ','
 * and ';' (INbreast.csv) delimiters, then every accessor on every cell: column lookup by each
 * header name (exact and whitespace-trimmed), the typed getters and the emptiness test.
 * Properties: the shape is consistent (every row has ncols cells, line numbers increase), and a
 * column found by name has that name.
 * Seeds: the CSVs of tests/data/fixtures and the converter fixtures' CSVs.
 */
#include "tests/fuzz/fuzz.h"
#include "data/csv.h"

static void fuzz_csv_walk(const Csv *c) {
    Err e;
    if (c->ncols < 1) fuzz_fail("a parsed CSV with %d columns", c->ncols);
    for (int k = 0; k < c->ncols; k++) {
        int col = csv_col(c, c->header[k]);
        if (col < 0 || col > k) fuzz_fail("csv_col('%s') = %d for column %d", c->header[k], col, k);
    }
    for (size_t r = 0; r < c->nrows; r++) {
        if (r > 0 && c->line[r] <= c->line[r - 1]) fuzz_fail("row %zu starts on line %zu after line %zu", r, c->line[r], c->line[r - 1]);
        for (int k = 0; k < c->ncols; k++) {
            const char *v = csv_get(c, r, k);
            if (!v) fuzz_fail("cell (%zu, %d) is NULL", r, k);
            long l;
            double d;
            (void)csv_get_long(c, r, k, &l, &e);
            (void)csv_get_double_or(c, r, k, 0.0, &d, &e);
            (void)csv_is_empty(c, r, k);
            if (csv_get_by(c, r, c->header[k]) == NULL) fuzz_fail("csv_get_by('%s') is NULL", c->header[k]);
        }
    }
    static const char *const need[] = {"image_id", "patient_id", " laterality", NULL};
    (void)csv_require_columns(c, need, &e);
}

int fuzz_csv(const uint8_t *data, size_t n) {
    static const char delims[] = {',', ';'};
    for (size_t k = 0; k < sizeof delims; k++) {
        Csv c;
        Err e = {{0}};
        if (csv_parse((const char *)data, n, "fuzz.csv", delims[k], &c, &e) == 0) {
            fuzz_csv_walk(&c);
            csv_free(&c);
        } else if (!e.msg[0]) {
            fuzz_fail("csv_parse failed without a message");
        }
    }
    return 0;
}

FUZZ_TARGET(fuzz_csv)
