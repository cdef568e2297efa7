/*
 * fuzz_image.c — the image loader (data/image.c: PNG, JPEG, PGM/PPM, BMP, TGA through stb plus
 * the project's own size and bit-depth checks) on arbitrary bytes, then what the converters do
 * with a loaded image: the breast-region crop / flip / resize plan and its application at a small
 * output size, and the PNG encoder, whose output must decode back to the same pixels.
 * Seeds: the PNG / PGM / JPEG files of tests/data/fixtures and the manifest / MIAS fixture images.
 */
#include "tests/fuzz/fuzz.h"
#include "data/image.h"

static void fuzz_image_preprocess(const Image *im) {
    PrepOpts po = prep_opts_default();
    po.out_w = 12;
    po.out_h = 16;
    for (int lat = 0; lat < 2; lat++) {
        PrepTransform t;
        prep_plan(im, lat ? 'R' : 0, &po, &t);
        if (t.crop.x0 < 0 || t.crop.y0 < 0 || t.crop.x1 > im->w || t.crop.y1 > im->h || t.crop.x1 <= t.crop.x0 ||
            t.crop.y1 <= t.crop.y0)
            fuzz_fail("crop [%d,%d)x[%d,%d) outside the %dx%d image", t.crop.x0, t.crop.x1, t.crop.y0, t.crop.y1, im->w, im->h);
        Image out = {0};
        Err e;
        if (prep_apply_image(&t, im, &out, &e)) fuzz_fail("prep_apply_image on a valid image: %s", e.msg);
        if (out.w != po.out_w || out.h != po.out_h) fuzz_fail("preprocessing gave %dx%d", out.w, out.h);
        image_free(&out);
        po.keep_aspect = 1;
        po.mode = RESIZE_BILINEAR;
    }
}

static void fuzz_image_png_roundtrip(const Image *im) {
    uint8_t *png = NULL;
    size_t n = 0;
    Err e;
    if (image_encode_png(im, &png, &n, &e)) fuzz_fail("encoding a loaded %dx%d %d-bit image: %s", im->w, im->h, im->bits, e.msg);
    Image back = {0};
    if (image_load_mem(png, n, "roundtrip.png", &back, &e)) fuzz_fail("decoding our own PNG: %s", e.msg);
    if (back.w != im->w || back.h != im->h) fuzz_fail("PNG round trip %dx%d -> %dx%d", im->w, im->h, back.w, back.h);
    for (size_t i = 0; i < (size_t)im->w * (size_t)im->h; i++)
        if (back.px[i] != im->px[i]) fuzz_fail("PNG round trip: pixel %zu %u -> %u", i, im->px[i], back.px[i]);
    image_free(&back);
    free(png);
}

int fuzz_image(const uint8_t *data, size_t n) {
    Image im = {0};
    Err e;
    if (image_load_mem(data, n, "fuzz.img", &im, &e) == 0) {
        if (!im.px || im.w < 1 || im.h < 1 || im.bits < 1 || im.bits > 16)
            fuzz_fail("loaded image %dx%d bits %d", im.w, im.h, im.bits);
        const uint32_t mx = image_maxval(&im);
        for (size_t i = 0; i < (size_t)im.w * (size_t)im.h; i++)
            if (im.px[i] > mx) fuzz_fail("pixel %zu = %u above 2^%d - 1", i, im.px[i], im.bits);
        /* the per-image work is linear in the pixels; keep an iteration fast */
        if ((size_t)im.w * (size_t)im.h <= ((size_t)1 << 18)) {
            fuzz_image_preprocess(&im);
            fuzz_image_png_roundtrip(&im);
        }
        image_free(&im);
    } else if (!e.msg[0]) {
        fuzz_fail("image_load_mem failed without a message");
    }
    return 0;
}

FUZZ_TARGET(fuzz_image)
