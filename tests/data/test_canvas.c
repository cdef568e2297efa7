/* test_canvas.c — data/canvas.h: exact pixels of fill / rect / disc / segment / mask outlines
 * (clipping at the image edges included), text extents, the PNG round trip through stb_image
 * and the errors naming the file. */
#include "tests/common/testutil.h"
#include "data/data.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wsign-compare"
#include <stb_image.h>   /* implementation in data/stb_impl.c (libversa) */
#pragma GCC diagnostic pop

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const uint8_t BG[3] = {10, 20, 30}, INK[3] = {200, 100, 50};

static void init_ok(RgbImage *c, int w, int h) {
    Err e = {{0}};
    if (rgb_init(c, w, h, BG, &e)) fail_msg("%s", e.msg);
}

static int is_ink(const RgbImage *c, int x, int y) { return !memcmp(c->px + ((size_t)y * c->w + x) * 3, INK, 3); }
static int is_bg(const RgbImage *c, int x, int y) { return !memcmp(c->px + ((size_t)y * c->w + x) * 3, BG, 3); }

/* every pixel is ink exactly where want(x, y) says, and background elsewhere */
static void expect_ink(const RgbImage *c, int (*want)(int x, int y)) {
    for (int y = 0; y < c->h; y++)
        for (int x = 0; x < c->w; x++) {
            if (want(x, y) && !is_ink(c, x, y)) fail_msg("pixel (%d, %d) should be ink", x, y);
            if (!want(x, y) && !is_bg(c, x, y)) fail_msg("pixel (%d, %d) should be background", x, y);
        }
}

static long count_ink(const RgbImage *c) {
    long n = 0;
    for (int y = 0; y < c->h; y++)
        for (int x = 0; x < c->w; x++) n += is_ink(c, x, y);
    return n;
}

static void test_init_and_errors(void **st) {
    (void)st;
    RgbImage c;
    init_ok(&c, 3, 2);
    assert_int_equal(c.w, 3);
    assert_int_equal(c.h, 2);
    for (int i = 0; i < 6; i++) assert_memory_equal(c.px + 3 * i, BG, 3);   /* a non-gray background */
    rgb_free(&c);
    assert_null(c.px);
    assert_int_equal(c.w, 0);
    Err e = {{0}};
    assert_int_not_equal(rgb_init(&c, 0, 5, NULL, &e), 0);
    assert_non_null(strstr(e.msg, "0x5"));
    assert_null(c.px);
    assert_int_not_equal(rgb_init(&c, 70000, 1, NULL, &e), 0);
    init_ok(&c, 2, 2);
    rgb_free(&c);
    assert_int_equal(rgb_init(&c, 2, 1, NULL, &e), 0);   /* NULL background: black */
    for (int i = 0; i < 6; i++) assert_int_equal(c.px[i], 0);
    rgb_free(&c);
}

/* fill: half-open [x0, x1) x [y0, y1), clipped at all four edges of a 7 x 5 image */
static int want_fill(int x, int y) {
    return (x < 2 && y < 1)                       /* (-3, -2) .. (2, 1): top left corner */
           || (x >= 5 && y >= 3)                  /* (5, 3) .. (99, 99): bottom right */
           || (x == 3 && y >= 1 && y < 4);        /* (3, 1) .. (4, 4): one column */
}

static void test_fill_clips(void **st) {
    (void)st;
    RgbImage c;
    init_ok(&c, 7, 5);
    rgb_fill(&c, -3, -2, 2, 1, INK);
    rgb_fill(&c, 5, 3, 99, 99, INK);
    rgb_fill(&c, 3, 1, 4, 4, INK);
    rgb_fill(&c, 4, 1, 4, 4, INK);       /* empty: x1 == x0 */
    rgb_fill(&c, 6, 4, 1, 0, INK);       /* empty: reversed */
    rgb_fill(&c, -9, -9, -1, 99, INK);   /* entirely left of the image */
    rgb_fill(&c, 7, 0, 20, 5, INK);      /* entirely right of it */
    expect_ink(&c, want_fill);
    assert_int_equal(count_ink(&c), 2 + 4 + 3);
    rgb_put(&c, -1, 0, INK);             /* clipped, no write out of bounds */
    rgb_put(&c, 7, 4, INK);
    rgb_put(&c, 6, 0, INK);
    assert_true(is_ink(&c, 6, 0));
    assert_int_equal(count_ink(&c), 10);
    rgb_free(&c);
}

/* rect: inclusive corners (2, 1) and (7, 5) in a 10 x 8 image, band inside the edges */
static int want_rect1(int x, int y) {
    return x >= 2 && x <= 7 && y >= 1 && y <= 5 && (x == 2 || x == 7 || y == 1 || y == 5);
}
static int want_rect2(int x, int y) {
    return x >= 2 && x <= 7 && y >= 1 && y <= 5 && !(x >= 4 && x <= 5 && y == 3);
}
static int want_rect_clipped(int x, int y) { return (x == 3 && y <= 3) || (y == 3 && x <= 3); }

static void test_rect_outline(void **st) {
    (void)st;
    RgbImage c;
    init_ok(&c, 10, 8);
    rgb_rect(&c, 2, 1, 7, 5, 1, INK);
    expect_ink(&c, want_rect1);
    assert_int_equal(count_ink(&c), 2 * 6 + 2 * 3);
    rgb_rect(&c, 2, 1, 7, 5, 2, INK);   /* 2 px band: only (4..5, 3) stays inside */
    expect_ink(&c, want_rect2);
    assert_int_equal(count_ink(&c), 6 * 5 - 2);
    rgb_free(&c);

    init_ok(&c, 10, 8);
    rgb_rect(&c, -2, -2, 3, 3, 1, INK);   /* hangs over the top left corner */
    rgb_rect(&c, 5, 5, 4, 7, 1, INK);     /* x1 < x0: nothing */
    rgb_rect(&c, 5, 5, 6, 6, 0, INK);     /* thickness 0: nothing */
    expect_ink(&c, want_rect_clipped);
    assert_int_equal(count_ink(&c), 7);
    rgb_free(&c);

    init_ok(&c, 10, 8);
    rgb_rect(&c, 4, 2, 4, 6, 2, INK);     /* one pixel wide, band 2: the column, nothing beside it */
    assert_int_equal(count_ink(&c), 5);
    for (int y = 2; y <= 6; y++) assert_true(is_ink(&c, 4, y));
    rgb_free(&c);
}

static void test_disc_segment(void **st) {
    (void)st;
    RgbImage c;
    init_ok(&c, 12, 12);
    rgb_disc(&c, 5.0f, 5.0f, 2.0f, INK);   /* integer points within distance 2: 13 */
    assert_int_equal(count_ink(&c), 13);
    assert_true(is_ink(&c, 5, 3) && is_ink(&c, 7, 5) && is_ink(&c, 6, 6));
    assert_false(is_ink(&c, 7, 6));
    rgb_disc(&c, 0.0f, 0.0f, 1.0f, INK);   /* clipped: (0,0), (1,0), (0,1) */
    assert_int_equal(count_ink(&c), 16);
    rgb_free(&c);

    init_ok(&c, 12, 12);
    rgb_segment(&c, 1.0, 9.0, 6.0, 9.0, 1, INK);   /* horizontal, 1 px: x 1..6 */
    assert_int_equal(count_ink(&c), 6);
    for (int x = 1; x <= 6; x++) assert_true(is_ink(&c, x, 9));
    rgb_segment(&c, 0.0, 0.0, 3.0, 3.0, 2, INK);   /* diagonal, 2 px: 2x2 squares at (k, k) */
    assert_int_equal(count_ink(&c), 6 + 4 * 4 - 3);   /* four squares, neighbours share one pixel */
    assert_true(is_ink(&c, 0, 0) && is_ink(&c, 4, 4) && is_ink(&c, 1, 0) && is_ink(&c, 0, 1));
    assert_false(is_ink(&c, 2, 0));
    rgb_free(&c);
}

static void test_mask_outline(void **st) {
    (void)st;
    /* a 5 x 4 mask with a 4 x 3 block at (1, 0): edge = the block minus its interior (2, 1) */
    uint8_t m[4 * 5] = {0};
    for (int y = 0; y < 3; y++)
        for (int x = 1; x < 5; x++) m[y * 5 + x] = 1;
    int n_edge = 0;
    for (int y = 0; y < 4; y++)
        for (int x = 0; x < 5; x++) n_edge += rgb_mask_edge(m, 5, 4, x, y);
    assert_int_equal(n_edge, 12 - 2);   /* interior: (2, 1) and (3, 1) */
    assert_false(rgb_mask_edge(m, 5, 4, 2, 1));
    assert_true(rgb_mask_edge(m, 5, 4, 4, 1));   /* on the mask's border */
    assert_false(rgb_mask_edge(m, 5, 4, 0, 0));  /* not set */
    RgbImage c;
    init_ok(&c, 20, 20);
    rgb_mask_outline(&c, m, 5, 4, 3, 2, 3, INK);   /* scaled 3x at (3, 2): 3x3 blocks */
    assert_int_equal(count_ink(&c), 10 * 9);
    assert_true(is_ink(&c, 3 + 1 * 3, 2) && is_ink(&c, 3 + 1 * 3 + 2, 2 + 2));
    assert_false(is_ink(&c, 3 + 2 * 3 + 1, 2 + 1 * 3 + 1));   /* the interior block (2, 1) */
    rgb_free(&c);
}

/* every ink pixel lies in [x0, x1) x [y0, y1) */
static void expect_ink_inside(const RgbImage *c, int x0, int y0, int x1, int y1) {
    for (int y = 0; y < c->h; y++)
        for (int x = 0; x < c->w; x++)
            if (is_ink(c, x, y) && (x < x0 || x >= x1 || y < y0 || y >= y1))
                fail_msg("text pixel (%d, %d) outside its box (%d, %d)..(%d, %d)", x, y, x0, y0, x1, y1);
}

static void test_text(void **st) {
    (void)st;
    int wA = rgb_text_width("A", 1), wB = rgb_text_width("B", 1);
    assert_true(wA > 0 && wB > 0);
    assert_int_equal(rgb_text_width("AB", 1), wA + wB);
    assert_int_equal(rgb_text_width("AB", 2), 2 * (wA + wB));
    assert_int_equal(rgb_text_width("AB\nA", 1), wA + wB);   /* the longest line */
    assert_int_equal(rgb_text_width("", 3), 0);

    RgbImage c;
    init_ok(&c, 80, 40);
    int w = rgb_text(&c, 5, 6, "Hi 42", 1, INK);
    assert_int_equal(w, rgb_text_width("Hi 42", 1));
    long n1 = count_ink(&c);
    assert_true(n1 > 20);
    expect_ink_inside(&c, 5, 6, 5 + w, 6 + 12);
    rgb_free(&c);

    /* scale 2: every font pixel becomes a 2x2 block */
    init_ok(&c, 80, 40);
    w = rgb_text(&c, 5, 6, "Hi 42", 2, INK);
    assert_int_equal(count_ink(&c), 4 * n1);
    expect_ink_inside(&c, 5, 6, 5 + w, 6 + 24);
    rgb_free(&c);

    /* clipped at the left and top edges: fewer pixels, no crash */
    init_ok(&c, 80, 40);
    rgb_text(&c, -3, -2, "Hi 42", 1, INK);
    long nclip = count_ink(&c);
    assert_true(nclip > 0 && nclip < n1);
    rgb_free(&c);

    /* bytes outside printable ASCII draw as '?' (stb_easy_font would index out of its table) */
    RgbImage q;
    init_ok(&c, 20, 16);
    init_ok(&q, 20, 16);
    rgb_text(&c, 2, 2, "\xe9", 1, INK);
    rgb_text(&q, 2, 2, "?", 1, INK);
    assert_memory_equal(c.px, q.px, (size_t)20 * 16 * 3);
    assert_int_equal(rgb_text_width("\t", 1), rgb_text_width("?", 1));
    rgb_free(&c);
    rgb_free(&q);
}

static void test_png_round_trip(void **st) {
    (void)st;
    char p[256];
    snprintf(p, sizeof p, "/tmp/versa_canvas_%d.png", (int)getpid());
    RgbImage c;
    init_ok(&c, 7, 5);
    for (int i = 0; i < 7 * 5 * 3; i++) c.px[i] = (uint8_t)(i * 37 + 11);
    Err e = {{0}};
    if (rgb_write_png(&c, p, &e)) fail_msg("%s", e.msg);
    int w, h, ch;
    uint8_t *back = stbi_load(p, &w, &h, &ch, 3);
    assert_non_null(back);
    assert_int_equal(w, 7);
    assert_int_equal(h, 5);
    assert_int_equal(ch, 3);
    assert_memory_equal(back, c.px, (size_t)7 * 5 * 3);
    free(back);
    unlink(p);
    rgb_free(&c);
}

static void test_png_errors(void **st) {
    (void)st;
    RgbImage c;
    init_ok(&c, 4, 4);
    Err e = {{0}};
    const char *bad = "/nonexistent_versa_dir/sub/out.png";
    assert_int_not_equal(rgb_write_png(&c, bad, &e), 0);
    assert_non_null(strstr(e.msg, bad));
    assert_non_null(strstr(e.msg, "cannot create"));
    assert_null(strchr(e.msg, '\n'));
    if (access("/dev/full", W_OK) == 0) {   /* a full disk: the write fails, not silently truncated */
        memset(&e, 0, sizeof e);
        assert_int_not_equal(rgb_write_png(&c, "/dev/full", &e), 0);
        assert_non_null(strstr(e.msg, "/dev/full: write error"));
    }
    rgb_free(&c);
    memset(&e, 0, sizeof e);
    assert_int_not_equal(rgb_write_png(&c, "/tmp/never_written.png", &e), 0);   /* freed: empty */
    assert_non_null(strstr(e.msg, "empty image"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_and_errors),
        cmocka_unit_test(test_fill_clips),
        cmocka_unit_test(test_rect_outline),
        cmocka_unit_test(test_disc_segment),
        cmocka_unit_test(test_mask_outline),
        cmocka_unit_test(test_text),
        cmocka_unit_test(test_png_round_trip),
        cmocka_unit_test(test_png_errors),
    };
    return RUN_GROUP(tests);
}
