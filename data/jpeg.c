/* jpeg.c — JPEG decoding with libjpeg-turbo (Debian libjpeg62-turbo), for image_load_mem.
 *
 * Why not stb_image: Debian 12 ships stb_image 2.27, whose JPEG decoder has known memory and
 * undefined-behaviour bugs on corrupt input that were fixed upstream only later (our fuzzer hit
 * two: a Huffman table with more than 256 codes written out of bounds, and a bit-buffer shift by
 * 33 on corrupt entropy-coded data, stb issue #1293).  libjpeg-turbo is the decoder PyTorch /
 * torchvision and most of the ecosystem use, SIMD-accelerated and fuzzed continuously (OSS-Fuzz).
 *
 * What a caller can rely on: 8-bit gray output (colour JPEGs give their luma Y, which is
 * Rec.601's 0.299 R + 0.587 G + 0.114 B); any libjpeg error or warning (corrupt data, premature
 * end of file, unsupported CMYK or 12-bit precision) is a one-line error naming the file; sizes
 * are checked against the file's length before the decoder allocates for them; libjpeg's own
 * memory is capped and progressive files with absurd scan counts are refused (both are
 * libjpeg-turbo's advice for untrusted input). */
#include "data/image.h"

#include <setjmp.h>
#include <stdio.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>

#define JPEG_MAX_SCANS 1000                           /* real progressive files use ~10 */
#define JPEG_MAX_MEMORY ((long)1 << 30)               /* libjpeg's working memory, bytes */

typedef struct JpegErr {
    struct jpeg_error_mgr mgr;   /* first: libjpeg sees a jpeg_error_mgr */
    jmp_buf jump;
    char msg[JMSG_LENGTH_MAX];
} JpegErr;

static void on_error(j_common_ptr ci) {
    JpegErr *je = (JpegErr *)ci->err;
    ci->err->format_message(ci, je->msg);
    longjmp(je->jump, 1);
}

/* level < 0: a warning — corrupt data the decoder would paper over (a premature end of file
 * is filled with gray): an error for us.  Extraneous bytes before a marker are the exception:
 * many encoders write them, and the image decodes correctly. */
static void on_message(j_common_ptr ci, int level) {
    if (level < 0 && ci->err->msg_code != JWRN_EXTRANEOUS_DATA) on_error(ci);
}

static void on_progress(j_common_ptr ci) {
    j_decompress_ptr d = (j_decompress_ptr)ci;
    if (d->is_decompressor && d->input_scan_number > JPEG_MAX_SCANS) {
        JpegErr *je = (JpegErr *)ci->err;
        snprintf(je->msg, sizeof je->msg, "more than %d progressive scans", JPEG_MAX_SCANS);
        longjmp(je->jump, 1);
    }
}

int jpeg_load_mem(const uint8_t *buf, size_t n, const char *name, int max_dim, size_t max_pixels, Image *im,
                  Err *e) {
    memset(im, 0, sizeof *im);
    if (n > (size_t)0xFFFFFFFFu) return err_set(e, "%s: file too large", name);
    struct jpeg_decompress_struct ci;
    struct jpeg_progress_mgr progress = {.progress_monitor = on_progress};
    JpegErr je;
    memset(&ci, 0, sizeof ci);
    memset(&je, 0, sizeof je);
    ci.err = jpeg_std_error(&je.mgr);
    je.mgr.error_exit = on_error;
    je.mgr.emit_message = on_message;
    Image *volatile out = im;   /* what longjmp must see: the image to free */
    if (setjmp(je.jump)) {
        jpeg_destroy_decompress(&ci);
        image_free(out);
        return err_set(e, "%s: corrupt or truncated image (JPEG: %s)", name, je.msg);
    }
    jpeg_create_decompress(&ci);
    ci.mem->max_memory_to_use = JPEG_MAX_MEMORY;
    ci.progress = &progress;
    jpeg_mem_src(&ci, buf, (unsigned long)n);
    jpeg_read_header(&ci, TRUE);
    const size_t w = ci.image_width, h = ci.image_height;
    /* >= 1 bit per 8x8 block: no JPEG holds more than 2048 pixels per byte (as for PNG) */
    if (w < 1 || h < 1 || w > (size_t)max_dim || h > (size_t)max_dim || w * h > max_pixels ||
        w * h > 2048 * n + ((size_t)1 << 20)) {
        jpeg_destroy_decompress(&ci);
        return err_set(e, "%s: corrupt or truncated image (JPEG header claims %zux%zu pixels in %zu bytes)", name, w,
                       h, n);
    }
    if (ci.jpeg_color_space == JCS_CMYK || ci.jpeg_color_space == JCS_YCCK) {
        jpeg_destroy_decompress(&ci);
        return err_set(e, "%s: unsupported JPEG colour space (CMYK)", name);
    }
    ci.out_color_space = JCS_GRAYSCALE;
    jpeg_start_decompress(&ci);
    if (ci.output_components != 1) {
        snprintf(je.msg, sizeof je.msg, "%d output components for gray", ci.output_components);
        longjmp(je.jump, 1);
    }
    if (image_alloc(im, (int)ci.output_width, (int)ci.output_height, 8, e)) {
        jpeg_destroy_decompress(&ci);
        return 1;
    }
    JSAMPARRAY row = (*ci.mem->alloc_sarray)((j_common_ptr)&ci, JPOOL_IMAGE, ci.output_width, 1);
    while (ci.output_scanline < ci.output_height) {
        uint16_t *dst = im->px + (size_t)ci.output_scanline * ci.output_width;
        jpeg_read_scanlines(&ci, row, 1);
        for (JDIMENSION x = 0; x < ci.output_width; x++) dst[x] = row[0][x];
    }
    jpeg_finish_decompress(&ci);
    jpeg_destroy_decompress(&ci);
    return 0;
}
