/* test_csv.c — RFC 4180 reading (BOM, CRLF, quotes, embedded newlines), header validation,
 * typed access errors naming file / line / column, the writer round trip, and malformed input. */
#include "tests/common/testutil.h"
#include "data/data.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FIX "tests/data/fixtures/"

static void read_ok(const char *path, Csv *c) {
    Err e = {{0}};
    if (csv_read(path, c, &e)) fail_msg("%s", e.msg);
}

static void test_vindr_like(void **s) {
    (void)s;
    Csv c;
    read_ok(FIX "vindr_like.csv", &c);   /* BOM + CRLF */
    assert_int_equal(c.ncols, 11);
    assert_int_equal(c.nrows, 3);
    assert_string_equal(c.header[0], "image_id");        /* BOM stripped */
    assert_string_equal(c.header[10], "breast_density"); /* no CR left */
    int cat = csv_col(&c, "finding_categories");
    assert_int_equal(cat, 5);
    assert_string_equal(csv_get(&c, 0, cat), "['Mass', 'Suspicious Calcification']");
    assert_string_equal(csv_get(&c, 2, cat), "note with \"quotes\"\nand a newline");
    assert_string_equal(csv_get_by(&c, 1, "laterality"), "R");
    assert_string_equal(csv_get_by(&c, 0, "breast_density"), "DENSITY C");
    assert_null(csv_get_by(&c, 0, "no_such_column"));
    /* row start lines: the header is line 1; the a3 record starts on line 4 and spans two */
    assert_int_equal(c.line[0], 2);
    assert_int_equal(c.line[2], 4);

    Err e;
    const char *need[] = {"image_id", "breast_density", "xmin", NULL};
    assert_int_equal(csv_require_columns(&c, need, &e), 0);
    long h;
    assert_int_equal(csv_get_long(&c, 0, csv_col(&c, "height"), &h, &e), 0);
    assert_int_equal(h, 3518);
    double x0, x1;
    assert_int_equal(csv_get_double(&c, 0, csv_col(&c, "xmin"), &x0, &e), 0);
    assert_int_equal(csv_get_double(&c, 0, csv_col(&c, "xmax"), &x1, &e), 0);
    assert_true(x0 == 10.5 && x1 == 110.25);
    /* "No Finding" row: empty box fields */
    assert_true(csv_is_empty(&c, 1, csv_col(&c, "xmin")));
    assert_int_equal(csv_get_double_or(&c, 1, csv_col(&c, "xmin"), -1.0, &x0, &e), 0);
    assert_true(x0 == -1.0);
    assert_int_not_equal(csv_get_double(&c, 1, csv_col(&c, "xmin"), &x0, &e), 0);
    assert_string_equal(e.msg, FIX "vindr_like.csv:3: column 'xmin': expected a number, got ''");
    csv_free(&c);
}

static void test_missing_column(void **s) {
    (void)s;
    Csv c;
    Err e;
    read_ok(FIX "bad_header.csv", &c);
    const char *need[] = {"image_id", "breast_density", NULL};
    assert_int_not_equal(csv_require_columns(&c, need, &e), 0);
    assert_string_equal(e.msg, FIX "bad_header.csv: missing column 'breast_density'");
    csv_free(&c);
}

static void test_unterminated_quote(void **s) {
    (void)s;
    Csv c;
    Err e;
    assert_int_not_equal(csv_read(FIX "unterminated.csv", &c, &e), 0);
    assert_string_equal(e.msg, FIX "unterminated.csv:3: unterminated quoted field (no closing quote before the end of the file)");
    assert_null(c.cells);
}

static void test_bad_number(void **s) {
    (void)s;
    Csv c;
    Err e;
    read_ok(FIX "bad_number.csv", &c);
    long v;
    assert_int_equal(csv_get_long(&c, 0, 1, &v, &e), 0);
    assert_int_equal(v, 3518);
    assert_int_not_equal(csv_get_long(&c, 1, 1, &v, &e), 0);
    assert_string_equal(e.msg, FIX "bad_number.csv:3: column 'height': expected an integer, got '35l8'");
    assert_int_not_equal(csv_get_long(&c, 5, 1, &v, &e), 0);   /* row out of range */
    assert_non_null(strstr(e.msg, "out of range"));
    csv_free(&c);
    assert_int_not_equal(csv_read(FIX "nope.csv", &c, &e), 0);
    assert_string_equal(e.msg, FIX "nope.csv: no such file");
}

static void parse_ok(const char *text, char delim, Csv *c) {
    Err e = {{0}};
    if (csv_parse(text, strlen(text), "mem.csv", delim, c, &e)) fail_msg("%s", e.msg);
}

static void test_parse_details(void **s) {
    (void)s;
    Csv c;
    Err e;
    /* INbreast-style ';', trimmed header lookup, blank lines, missing trailing fields padded */
    parse_ok("Patient age ;Laterality;ACR\n\n removed ;L;2\nremoved;R\n\r\n", ';', &c);
    assert_int_equal(c.nrows, 2);
    assert_int_equal(csv_col(&c, "Patient age"), 0);
    assert_string_equal(csv_get(&c, 0, 0), " removed ");   /* fields are not trimmed */
    assert_string_equal(csv_get(&c, 1, 2), "");           /* padded */
    assert_int_equal(c.line[0], 3);
    long v;
    assert_int_equal(csv_get_long(&c, 0, 2, &v, &e), 0);
    assert_int_equal(v, 2);
    csv_free(&c);
    /* quoted empty fields, a delimiter inside quotes, trailing empty field at EOF without newline */
    parse_ok("a,b,c\n\"\",\"x,y\",", ',', &c);
    assert_int_equal(c.nrows, 1);
    assert_string_equal(csv_get(&c, 0, 0), "");
    assert_string_equal(csv_get(&c, 0, 1), "x,y");
    assert_string_equal(csv_get(&c, 0, 2), "");
    csv_free(&c);
    /* extra empty fields are tolerated, extra values are not */
    parse_ok("a,b\n1,2,,\n", ',', &c);
    csv_free(&c);
    assert_int_not_equal(csv_parse("a,b\n1,2\n3,4,5\n", 14, "mem.csv", ',', &c, &e), 0);
    assert_string_equal(e.msg, "mem.csv:3: row has 3 fields but the header has 2");
    assert_int_not_equal(csv_parse("a,b\n\"x\"y,2\n", 11, "mem.csv", ',', &c, &e), 0);
    assert_string_equal(e.msg, "mem.csv:2: unexpected character 'y' after a closing quote");
    assert_int_not_equal(csv_parse("", 0, "mem.csv", ',', &c, &e), 0);
    assert_string_equal(e.msg, "mem.csv: empty CSV (no header line)");
    assert_int_not_equal(csv_parse("\xef\xbb\xbf\r\n\r\n", 7, "mem.csv", ',', &c, &e), 0);
    /* no final newline */
    parse_ok("x\n1", ',', &c);
    assert_string_equal(csv_get(&c, 0, 0), "1");
    csv_free(&c);
    /* not NUL-terminated input: parse only the first 8 bytes of a longer buffer */
    const char buf[] = "h1,h2\nAB,CD-and-more";
    assert_int_equal(csv_parse(buf, 8, "mem.csv", ',', &c, &e), 0);
    assert_string_equal(csv_get(&c, 0, 0), "AB");
    assert_string_equal(csv_get(&c, 0, 1), "");
    csv_free(&c);
    double d;
    parse_ok("v\n 1e-3 \nnan\n12abc\n", ',', &c);
    assert_int_equal(csv_get_double(&c, 0, 0, &d, &e), 0);
    assert_true(d == 1e-3);
    assert_int_not_equal(csv_get_double(&c, 1, 0, &d, &e), 0);   /* non-finite refused */
    assert_int_not_equal(csv_get_double(&c, 2, 0, &d, &e), 0);
    assert_string_equal(e.msg, "mem.csv:4: column 'v': expected a number, got '12abc'");
    csv_free(&c);
}

static void test_writer_roundtrip(void **s) {
    (void)s;
    char path[256];
    snprintf(path, sizeof path, "/tmp/versa_test_csv_%d.csv", (int)getpid());
    CsvWriter w;
    Err e;
    const char *hdr[] = {"image_id", "finding_categories", "xmin", "note", NULL};
    assert_int_equal(csv_writer_open(&w, path, hdr, &e), 0);
    csv_put(&w, "img-1");
    csv_put(&w, "['Mass', 'Suspicious Calcification']");
    csv_put_double(&w, 0.1);
    csv_put(&w, "say \"hi\"\nsecond line");
    csv_end_row(&w);
    csv_put(&w, " padded ");
    csv_putf(&w, "n=%d", 7);
    csv_put_double(&w, 1.0 / 3.0);
    csv_put_long(&w, -42);
    csv_end_row(&w);
    assert_int_equal(csv_writer_close(&w, &e), 0);

    Csv c;
    read_ok(path, &c);
    assert_int_equal(c.nrows, 2);
    assert_string_equal(csv_get(&c, 0, 1), "['Mass', 'Suspicious Calcification']");
    assert_string_equal(csv_get(&c, 0, 3), "say \"hi\"\nsecond line");
    assert_string_equal(csv_get(&c, 1, 0), " padded ");
    assert_string_equal(csv_get(&c, 1, 1), "n=7");
    double d;
    assert_int_equal(csv_get_double(&c, 0, 2, &d, &e), 0);
    assert_true(d == 0.1);
    assert_int_equal(csv_get_double(&c, 1, 2, &d, &e), 0);
    assert_true(d == 1.0 / 3.0);   /* shortest round-tripping text */
    long v;
    assert_int_equal(csv_get_long(&c, 1, 3, &v, &e), 0);
    assert_int_equal(v, -42);
    assert_int_equal(c.line[1], 4);   /* row 0 spans lines 2-3 */
    csv_free(&c);

    /* a short row is reported at close */
    assert_int_equal(csv_writer_open(&w, path, hdr, &e), 0);
    csv_put(&w, "only one");
    csv_end_row(&w);
    assert_int_not_equal(csv_writer_close(&w, &e), 0);
    assert_non_null(strstr(e.msg, "a row has 1 fields but the header has 4"));
    unlink(path);
    assert_int_not_equal(csv_writer_open(&w, "/nonexistent-dir/x.csv", hdr, &e), 0);
    assert_non_null(strstr(e.msg, "/nonexistent-dir/x.csv: cannot create"));
}

/* Every prefix and random byte mutations of a fixture parse or fail cleanly. */
static void test_malformed_never_crash(void **s) {
    (void)s;
    FILE *f = fopen(FIX "vindr_like.csv", "rb");
    assert_non_null(f);
    char full[1024];
    size_t n = fread(full, 1, sizeof full, f);
    fclose(f);
    int failed = 0;
    for (size_t cut = 0; cut <= n; cut++) {
        char *b = malloc(cut ? cut : 1);
        memcpy(b, full, cut);
        Csv c;
        Err e = {{0}};
        if (csv_parse(b, cut, "cut.csv", ',', &c, &e) == 0) {
            for (size_t r = 0; r < c.nrows; r++)
                for (int k = 0; k < c.ncols; k++) assert_non_null(csv_get(&c, r, k));
            csv_free(&c);
        } else {
            assert_true(strncmp(e.msg, "cut.csv", 7) == 0);
            failed++;
        }
        free(b);
    }
    assert_true(failed > 0);   /* cuts inside the quoted fields */
    Rng r;
    rng_init(&r, 5);
    const char pool[] = ",\"\r\n;a ";
    for (int t = 0; t < 2000; t++) {
        char *b = malloc(n);
        memcpy(b, full, n);
        for (int k = 0; k < 3; k++) b[rng_below(&r, (uint32_t)n)] = pool[rng_below(&r, sizeof pool - 1)];
        Csv c;
        Err e;
        if (csv_parse(b, n, "mut.csv", ',', &c, &e) == 0) csv_free(&c);
        free(b);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vindr_like),
        cmocka_unit_test(test_missing_column),
        cmocka_unit_test(test_unterminated_quote),
        cmocka_unit_test(test_bad_number),
        cmocka_unit_test(test_parse_details),
        cmocka_unit_test(test_writer_roundtrip),
        cmocka_unit_test(test_malformed_never_crash),
    };
    return RUN_GROUP(tests);
}
