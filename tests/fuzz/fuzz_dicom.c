/*
 * fuzz_dicom.c — the DICOM reader (data/dicom.c) on arbitrary bytes: the header-only pass, the
 * full read (VRs, nested sequences of defined and undefined length, implicit / explicit /
 * deflated transfer syntaxes, native and JPEG 2000 pixel data and their lengths), then every
 * consumer of a successful read: the renderers (auto / min-max / full window, 8 and 16 bits,
 * padding zeroed), the stored-pixel image and the writer, whose output must read back to the same
 * stored pixels.
 * Seeds: the DICOMs of tests/data/fixtures and the converter fixtures' DICOMs.
 */
#include "tests/fuzz/fuzz.h"
#include "data/dicom.h"

static void fuzz_dicom_render(const Dicom *d) {
    static const DicomRenderOpts opts[] = {
        {.window = DICOM_WINDOW_AUTO, .out_bits = 16},
        {.window = DICOM_WINDOW_MINMAX, .no_invert = 1, .out_bits = 8},
        {.window = DICOM_WINDOW_FULL, .zero_padding = 1, .out_bits = 16},
    };
    Err e;
    for (size_t k = 0; k < sizeof opts / sizeof opts[0]; k++) {
        Image im = {0};
        if (dicom_render(d, &opts[k], &im, &e) == 0) {
            const uint32_t mx = image_maxval(&im);
            const size_t npx = (size_t)im.w * (size_t)im.h;
            if (im.w != d->info.cols || im.h != d->info.rows) fuzz_fail("render gave %dx%d for a %dx%d DICOM", im.w, im.h, d->info.cols, d->info.rows);
            for (size_t i = 0; i < npx; i++)
                if (im.px[i] > mx) fuzz_fail("rendered pixel %u above %u", im.px[i], mx);
        }
        image_free(&im);
    }
}

/* stored pixels -> dicom_write_mem -> dicom_read_mem: the same pixels come back */
static void fuzz_dicom_roundtrip(const Dicom *d) {
    Image st = {0};
    Err e;
    if (dicom_stored_image(d, &st, &e)) return;
    DicomInfo info;
    dicom_info_init(&info);
    info.bits_stored = st.bits;
    uint8_t *buf = NULL;
    size_t n = 0;
    if (dicom_write_mem(&info, &st, &buf, &n, &e) == 0) {
        Dicom back;
        if (dicom_read_mem(buf, n, "roundtrip.dcm", &back, 0, &e)) fuzz_fail("re-reading a written DICOM: %s", e.msg);
        if (back.info.rows != st.h || back.info.cols != st.w) fuzz_fail("written %dx%d read back as %dx%d", st.w, st.h, back.info.cols, back.info.rows);
        for (size_t i = 0; i < (size_t)st.w * (size_t)st.h; i++)
            if (back.pixels[i] != (int32_t)st.px[i]) fuzz_fail("pixel %zu written %u read back %d", i, st.px[i], back.pixels[i]);
        dicom_free(&back);
    }
    free(buf);
    image_free(&st);
}

int fuzz_dicom(const uint8_t *data, size_t n) {
    Dicom d;
    Err e;
    (void)dicom_sniff(data, n);
    if (dicom_read_mem(data, n, "fuzz.dcm", &d, 1, &e) == 0) {
        if (d.pixels) fuzz_fail("header-only read returned pixels");
        dicom_free(&d);
    }
    if (dicom_read_mem(data, n, "fuzz.dcm", &d, 0, &e) == 0) {
        if (!d.pixels || d.info.rows < 1 || d.info.cols < 1) fuzz_fail("a successful read without pixels (%dx%d)", d.info.cols, d.info.rows);
        fuzz_dicom_render(&d);
        fuzz_dicom_roundtrip(&d);
        dicom_free(&d);
    } else if (!e.msg[0]) {
        fuzz_fail("dicom_read_mem failed without a message");
    }
    return 0;
}

FUZZ_TARGET(fuzz_dicom)
