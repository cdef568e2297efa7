/* image.c — gray images: load (stb_image for PNG/BMP/TGA/PPM, libjpeg-turbo for JPEG in jpeg.c, own PGM), save (own PNG writer with zlib, PGM),
 * conversions, crop / flip / resize and box geometry.  Preprocessing lives in preprocess.c. */
#include "data/image.h"
#include "data/dicom.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

/* stb_image's implementation is compiled once, in data/stb_impl.c. */
#include <stb_image.h>

#define IMAGE_MAX_DIM 65535
#define IMAGE_MAX_PIXELS ((size_t)1 << 28)   /* 256 Mpx: far above any mammogram (~30 Mpx) */
#define IMAGE_MAX_FILE ((size_t)1 << 31)     /* 2 GiB */

/* ------------------------------------------------------------------------------------------ */
/* allocation */

int image_alloc(Image *im, int w, int h, int bits, Err *e) {
    memset(im, 0, sizeof *im);
    if (w < 1 || h < 1 || w > IMAGE_MAX_DIM || h > IMAGE_MAX_DIM || (size_t)w * (size_t)h > IMAGE_MAX_PIXELS)
        return err_set(e, "image_alloc: bad size %dx%d", w, h);
    if (bits < 1 || bits > 16) return err_set(e, "image_alloc: bad bit depth %d", bits);
    im->px = calloc((size_t)w * (size_t)h, sizeof(uint16_t));
    if (!im->px) return err_set(e, "image_alloc: out of memory for %dx%d pixels", w, h);
    im->w = w;
    im->h = h;
    im->bits = bits;
    return 0;
}

void image_free(Image *im) {
    if (!im) return;
    free(im->px);
    memset(im, 0, sizeof *im);
}

int image_copy(const Image *src, Image *dst, Err *e) {
    Image t;
    if (image_alloc(&t, src->w, src->h, src->bits, e)) return 1;
    memcpy(t.px, src->px, (size_t)src->w * (size_t)src->h * sizeof(uint16_t));
    *dst = t;
    return 0;
}

int fimage_alloc(FImage *f, int w, int h, Err *e) {
    memset(f, 0, sizeof *f);
    if (w < 1 || h < 1 || w > IMAGE_MAX_DIM || h > IMAGE_MAX_DIM || (size_t)w * (size_t)h > IMAGE_MAX_PIXELS)
        return err_set(e, "fimage_alloc: bad size %dx%d", w, h);
    f->px = calloc((size_t)w * (size_t)h, sizeof(float));
    if (!f->px) return err_set(e, "fimage_alloc: out of memory for %dx%d pixels", w, h);
    f->w = w;
    f->h = h;
    return 0;
}

void fimage_free(FImage *f) {
    if (!f) return;
    free(f->px);
    memset(f, 0, sizeof *f);
}

/* ------------------------------------------------------------------------------------------ */
/* reading files */

/* Whole file into a malloc'd buffer, with an Err naming the file on any failure. */
static int read_file(const char *path, uint8_t **out, size_t *n, Err *e) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errno == ENOENT) return err_set(e, "%s: no such file", path);
        return err_set(e, "%s: cannot open (%s)", path, strerror(errno));
    }
    if (fseek(f, 0, SEEK_END) != 0) { fclose(f); return err_set(e, "%s: cannot seek (not a regular file?)", path); }
    long sz = ftell(f);
    if (sz < 0 || fseek(f, 0, SEEK_SET) != 0) { fclose(f); return err_set(e, "%s: cannot determine file size", path); }
    if (sz == 0) { fclose(f); return err_set(e, "%s: empty file", path); }
    if ((size_t)sz > IMAGE_MAX_FILE) { fclose(f); return err_set(e, "%s: file too large (%ld bytes)", path, sz); }
    uint8_t *buf = malloc((size_t)sz);
    if (!buf) { fclose(f); return err_set(e, "%s: out of memory reading %ld bytes", path, sz); }
    size_t got = fread(buf, 1, (size_t)sz, f);
    int rerr = ferror(f);
    fclose(f);
    if (got != (size_t)sz || rerr) { free(buf); return err_set(e, "%s: read error", path); }
    *out = buf;
    *n = (size_t)sz;
    return 0;
}

/* Rec.601 luma, rounded: exact for gray inputs (r = g = b gives r). */
static inline uint32_t luma(uint32_t r, uint32_t g, uint32_t b) {
    return (299u * r + 587u * g + 114u * b + 500u) / 1000u;
}

/* ---- PGM (P2 ascii, P5 binary), any maxval ---- */

static int pnm_skip_ws(const uint8_t *b, size_t n, size_t *p) {
    while (*p < n) {
        if (b[*p] == '#') {
            while (*p < n && b[*p] != '\n' && b[*p] != '\r') (*p)++;
        } else if (b[*p] == ' ' || b[*p] == '\t' || b[*p] == '\n' || b[*p] == '\r' || b[*p] == '\v' || b[*p] == '\f') {
            (*p)++;
        } else {
            return 0;
        }
    }
    return 1;   /* hit the end */
}

static int pnm_uint(const uint8_t *b, size_t n, size_t *p, unsigned long *v) {
    if (pnm_skip_ws(b, n, p)) return 1;
    if (b[*p] < '0' || b[*p] > '9') return 1;
    unsigned long x = 0;
    while (*p < n && b[*p] >= '0' && b[*p] <= '9') {
        x = x * 10 + (unsigned long)(b[*p] - '0');
        if (x > 100000000ul) return 1;
        (*p)++;
    }
    *v = x;
    return 0;
}

static int bit_length(uint32_t v) {
    int b = 0;
    while (v) { b++; v >>= 1; }
    return b;
}

static int load_pgm(const uint8_t *buf, size_t n, const char *name, Image *im, Err *e) {
    int ascii = buf[1] == '2';
    size_t p = 2;
    unsigned long w, h, maxval;
    if (pnm_uint(buf, n, &p, &w) || pnm_uint(buf, n, &p, &h) || pnm_uint(buf, n, &p, &maxval))
        return err_set(e, "%s: corrupt PGM header", name);
    if (maxval < 1 || maxval > 65535) return err_set(e, "%s: unsupported PGM maxval %lu", name, maxval);
    if (w < 1 || h < 1 || w > IMAGE_MAX_DIM || h > IMAGE_MAX_DIM || (size_t)w * h > IMAGE_MAX_PIXELS)
        return err_set(e, "%s: absurd PGM size %lux%lu", name, w, h);
    int bits = bit_length((uint32_t)maxval);
    if (image_alloc(im, (int)w, (int)h, bits, e)) return 1;
    size_t npx = (size_t)w * h;
    if (!ascii) {
        if (p >= n) { image_free(im); return err_set(e, "%s: truncated PGM (no pixel data)", name); }
        p++;   /* exactly one whitespace byte after maxval */
        size_t bps = maxval > 255 ? 2 : 1;
        if (n - p < npx * bps) {
            image_free(im);
            return err_set(e, "%s: truncated PGM (%zu pixel bytes, %zu needed)", name, n - p, npx * bps);
        }
        const uint8_t *d = buf + p;
        for (size_t i = 0; i < npx; i++) {
            uint32_t v = bps == 2 ? ((uint32_t)d[2 * i] << 8) | d[2 * i + 1] : d[i];
            im->px[i] = (uint16_t)(v > maxval ? maxval : v);
        }
    } else {
        for (size_t i = 0; i < npx; i++) {
            unsigned long v;
            if (pnm_uint(buf, n, &p, &v)) {
                image_free(im);
                return err_set(e, "%s: truncated or corrupt PGM (pixel %zu of %zu)", name, i, npx);
            }
            im->px[i] = (uint16_t)(v > maxval ? maxval : v);
        }
    }
    return 0;
}

/* Two stb 2.27 PNG flaws, both found by fuzz_image, handled on the chunk list before stb parses:
 *   - a chunk length larger than what is left of the file: stb grows its IDAT buffer to the
 *     declared size first (2 GiB from a 206-byte file) and notices the missing bytes after;
 *   - an empty IDAT before the first non-empty one: stb computes idata + 0 on a NULL buffer
 *     (undefined behaviour).  Empty IDATs add nothing to the zlib stream, so they are dropped
 *     from a copy.
 * Returns -1 (corrupt: a chunk overruns the file), 0 (nothing to change) or 1 (*out: a copy the
 * caller frees, *n_out bytes). */
static int png_sanitize(const uint8_t *buf, size_t n, uint8_t **out, size_t *n_out) {
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    *out = NULL;
    if (n < 8 || memcmp(buf, sig, 8)) return 0;
    /* one walk for both jobs; a chunk is 12 + len bytes, its CRC may be cut off at the very end */
    uint8_t *o = NULL;
    size_t p = 8, q = 8;
    int data_seen = 0;
    while (p + 8 <= n) {
        size_t len = ((size_t)buf[p] << 24) | ((size_t)buf[p + 1] << 16) | ((size_t)buf[p + 2] << 8) | buf[p + 3];
        if (len > n - p - 8) {   /* data beyond the end (a missing CRC is stb's to judge) */
            free(o);
            return -1;
        }
        size_t size = len + 12 <= n - p ? len + 12 : n - p;
        int idat = !memcmp(buf + p + 4, "IDAT", 4), iend = !memcmp(buf + p + 4, "IEND", 4);
        if (idat && len > 0) data_seen = 1;
        if (idat && len == 0 && !data_seen) {   /* dropped: the copy starts here */
            if (!o) {
                if (!(o = malloc(n))) return 0;
                memcpy(o, buf, p);
                q = p;
            }
        } else if (o) {
            memcpy(o + q, buf + p, size);
            q += size;
        }
        p += size;
        if (iend) break;
    }
    if (!o) return 0;
    memcpy(o + q, buf + p, n - p);   /* whatever follows IEND, or a cut-off chunk header */
    *out = o;
    *n_out = q + (n - p);
    return 1;
}

/* stb's failure reason, printable: "PNG chunk not known" messages carry the file's chunk type bytes */
static const char *stb_reason(char *out, size_t n) {
    const char *why = stbi_failure_reason();
    if (!why) why = "?";
    size_t k = 0;
    for (; why[k] && k + 1 < n; k++) out[k] = why[k] >= 0x20 && why[k] < 0x7F ? why[k] : '?';
    out[k] = 0;
    return out;
}

static int stb_load(const uint8_t *buf, size_t n, const char *name, Image *im, Err *e);

int image_load_mem(const uint8_t *buf, size_t n, const char *name, Image *im, Err *e) {
    memset(im, 0, sizeof *im);
    if (n == 0) return err_set(e, "%s: empty file", name);
    if (n >= 2 && buf[0] == 'P' && (buf[1] == '2' || buf[1] == '5')) return load_pgm(buf, n, name, im, e);
    if (n > INT32_MAX) return err_set(e, "%s: file too large", name);
    /* JPEG goes to libjpeg-turbo (data/jpeg.c: stb 2.27's decoder is not safe on corrupt files
     * and is compiled out); a run of 0xFF fill bytes before D8 is how stb recognised a JPEG */
    size_t soi = 0;
    while (soi < n && buf[soi] == 0xFF) soi++;
    if (soi >= 1 && soi < n && buf[soi] == 0xD8) return jpeg_load_mem(buf, n, name, IMAGE_MAX_DIM, IMAGE_MAX_PIXELS, im, e);
    /* stb's PPM header reader overflows an int on long numbers: check the header here first */
    if (n >= 2 && buf[0] == 'P' && buf[1] == '6') {
        size_t p = 2;
        unsigned long w, h, maxval;
        if (pnm_uint(buf, n, &p, &w) || pnm_uint(buf, n, &p, &h) || pnm_uint(buf, n, &p, &maxval) || maxval < 1 ||
            maxval > 65535)
            return err_set(e, "%s: corrupt PPM header", name);
    }
    size_t n_fixed = 0;
    uint8_t *fixed = NULL;
    int png = png_sanitize(buf, n, &fixed, &n_fixed);
    if (png < 0) return err_set(e, "%s: corrupt or truncated image (a PNG chunk runs past the end of the file)", name);
    if (png > 0) {
        int rc = stb_load(fixed, n_fixed, name, im, e);
        free(fixed);
        return rc;
    }
    return stb_load(buf, n, name, im, e);
}

/* PNG / BMP / TGA / PPM through stb, after the checks above */
static int stb_load(const uint8_t *buf, size_t n, const char *name, Image *im, Err *e) {
    int w, h, ch;
    if (!stbi_info_from_memory(buf, (int)n, &w, &h, &ch)) {
        char why[64];
        stb_reason(why, sizeof why);
        if (strcmp(why, "unknown image type") == 0) return err_set(e, "%s: unsupported or unrecognised image format", name);
        return err_set(e, "%s: corrupt or truncated image header (%s)", name, why);
    }
    if (w < 1 || h < 1 || w > IMAGE_MAX_DIM || h > IMAGE_MAX_DIM || (size_t)w * (size_t)h > IMAGE_MAX_PIXELS)
        return err_set(e, "%s: absurd image size %dx%d", name, w, h);
    /* No PNG (deflate <= 1032:1) or JPEG (>= 1 bit per 8x8 block) packs more than 2048 pixels
     * per byte: a header claiming more is corrupt, and is refused before stb allocates for it. */
    if ((size_t)w * (size_t)h > 2048 * n + ((size_t)1 << 20))
        return err_set(e, "%s: corrupt or truncated image (%dx%d pixels in %zu bytes)", name, w, h, n);
    int is16 = stbi_is_16_bit_from_memory(buf, (int)n);
    void *data = is16 ? (void *)stbi_load_16_from_memory(buf, (int)n, &w, &h, &ch, 0)
                      : (void *)stbi_load_from_memory(buf, (int)n, &w, &h, &ch, 0);
    if (!data) {
        char why[64];
        return err_set(e, "%s: corrupt or truncated image (%s)", name, stb_reason(why, sizeof why));
    }
    if (image_alloc(im, w, h, is16 ? 16 : 8, e)) { stbi_image_free(data); return 1; }
    size_t npx = (size_t)w * (size_t)h;
    for (size_t i = 0; i < npx; i++) {
        uint32_t r, g, b;
        if (is16) {
            const uint16_t *s = (const uint16_t *)data + i * (size_t)ch;
            r = s[0]; g = ch >= 3 ? s[1] : r; b = ch >= 3 ? s[2] : r;
        } else {
            const uint8_t *s = (const uint8_t *)data + i * (size_t)ch;
            r = s[0]; g = ch >= 3 ? s[1] : r; b = ch >= 3 ? s[2] : r;
        }
        im->px[i] = (uint16_t)(ch >= 3 ? luma(r, g, b) : r);
    }
    stbi_image_free(data);
    return 0;
}

static int has_suffix_ci(const char *s, const char *suf) {
    size_t n = strlen(s), m = strlen(suf);
    if (m > n) return 0;
    for (size_t i = 0; i < m; i++) {
        char a = s[n - m + i], b = suf[i];
        if (a >= 'A' && a <= 'Z') a = (char)(a - 'A' + 'a');
        if (a != b) return 0;
    }
    return 1;
}

int image_load(const char *path, Image *im, Err *e) {
    memset(im, 0, sizeof *im);
    uint8_t *buf = NULL;
    size_t n = 0;
    if (read_file(path, &buf, &n, e)) return 1;
    int rc;
    if (dicom_sniff(buf, n) || has_suffix_ci(path, ".dcm") || has_suffix_ci(path, ".dicom")) {
        Dicom d;
        rc = dicom_read_mem(buf, n, path, &d, 0, e);
        if (!rc) {
            rc = dicom_render(&d, NULL, im, e);
            dicom_free(&d);
        }
    } else {
        rc = image_load_mem(buf, n, path, im, e);
    }
    free(buf);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* PNG writer: gray, 8 or 16 bits, one IDAT.  Rows use the Sub filter (a left-neighbour
 * difference), which suits smooth radiographs and keeps the encoder a single pass. */

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

/* Append one chunk (length, type, data, CRC) at *pos. */
static void png_chunk(uint8_t *out, size_t *pos, const char *type, const uint8_t *data, uint32_t len) {
    uint8_t *p = out + *pos;
    put_be32(p, len);
    memcpy(p + 4, type, 4);
    if (len) memcpy(p + 8, data, len);
    uLong crc = crc32(0L, Z_NULL, 0);
    crc = crc32(crc, p + 4, 4 + len);
    put_be32(p + 8 + len, (uint32_t)crc);
    *pos += 12 + (size_t)len;
}

int image_encode_png(const Image *im, uint8_t **out, size_t *n, Err *e) {
    *out = NULL;
    *n = 0;
    if (!im->px || im->w < 1 || im->h < 1) return err_set(e, "image_encode_png: empty image");
    int depth = im->bits > 8 ? 16 : 8;
    size_t bpp = (size_t)depth / 8;
    size_t stride = 1 + (size_t)im->w * bpp;          /* filter byte + samples */
    size_t raw_n = stride * (size_t)im->h;
    uint8_t *raw = malloc(raw_n);                      /* filtered scanlines, (h, 1 + w*bpp) */
    if (!raw) return err_set(e, "image_encode_png: out of memory");
    for (int y = 0; y < im->h; y++) {
        const uint16_t *s = image_row(im, y);
        uint8_t *d = raw + (size_t)y * stride;
        d[0] = 1;   /* Sub */
        if (depth == 8) {
            uint8_t prev = 0;
            for (int x = 0; x < im->w; x++) {
                uint8_t v = (uint8_t)s[x];
                d[1 + x] = (uint8_t)(v - prev);
                prev = v;
            }
        } else {
            uint8_t ph = 0, pl = 0;   /* Sub works bytewise with bpp = 2 */
            for (int x = 0; x < im->w; x++) {
                uint8_t hi = (uint8_t)(s[x] >> 8), lo = (uint8_t)s[x];
                d[1 + 2 * x] = (uint8_t)(hi - ph);
                d[2 + 2 * x] = (uint8_t)(lo - pl);
                ph = hi;
                pl = lo;
            }
        }
    }
    uLongf zn = compressBound((uLong)raw_n);
    size_t cap = 8 + 25 + 12 + (size_t)zn + 12;
    uint8_t *png = malloc(cap);
    if (!png) { free(raw); return err_set(e, "image_encode_png: out of memory"); }
    int zrc = compress2(png + 8 + 25 + 8, &zn, raw, (uLong)raw_n, 3);
    free(raw);
    if (zrc != Z_OK) { free(png); return err_set(e, "image_encode_png: zlib error %d", zrc); }

    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    memcpy(png, sig, 8);
    size_t pos = 8;
    uint8_t ihdr[13];
    put_be32(ihdr, (uint32_t)im->w);
    put_be32(ihdr + 4, (uint32_t)im->h);
    ihdr[8] = (uint8_t)depth;
    ihdr[9] = 0;    /* grayscale */
    ihdr[10] = 0;   /* deflate */
    ihdr[11] = 0;   /* adaptive filtering */
    ihdr[12] = 0;   /* no interlace */
    png_chunk(png, &pos, "IHDR", ihdr, 13);
    /* the compressed data already sits at pos + 8: write the IDAT frame around it in place */
    uint8_t *p = png + pos;
    put_be32(p, (uint32_t)zn);
    memcpy(p + 4, "IDAT", 4);
    uLong crc = crc32(0L, Z_NULL, 0);
    crc = crc32(crc, p + 4, 4 + (uInt)zn);
    put_be32(p + 8 + zn, (uint32_t)crc);
    pos += 12 + (size_t)zn;
    png_chunk(png, &pos, "IEND", NULL, 0);
    *out = png;
    *n = pos;
    return 0;
}

static int write_file(const char *path, const uint8_t *buf, size_t n, Err *e) {
    FILE *f = fopen(path, "wb");
    if (!f) return err_set(e, "%s: cannot create (%s)", path, strerror(errno));
    size_t put = fwrite(buf, 1, n, f);
    int cerr = fclose(f);
    if (put != n || cerr != 0) return err_set(e, "%s: write error", path);
    return 0;
}

int image_save_png(const char *path, const Image *im, Err *e) {
    uint8_t *png;
    size_t n;
    Err ee;
    if (image_encode_png(im, &png, &n, &ee)) return err_set(e, "%s: %s", path, ee.msg);
    int rc = write_file(path, png, n, e);
    free(png);
    return rc;
}

int image_save_pgm(const char *path, const Image *im, Err *e) {
    if (!im->px) return err_set(e, "%s: empty image", path);
    uint32_t maxval = image_maxval(im);
    size_t bps = maxval > 255 ? 2 : 1;
    size_t npx = (size_t)im->w * (size_t)im->h;
    char hdr[64];
    int hn = snprintf(hdr, sizeof hdr, "P5\n%d %d\n%u\n", im->w, im->h, maxval);
    uint8_t *buf = malloc((size_t)hn + npx * bps);
    if (!buf) return err_set(e, "%s: out of memory", path);
    memcpy(buf, hdr, (size_t)hn);
    uint8_t *d = buf + hn;
    for (size_t i = 0; i < npx; i++) {
        uint16_t v = im->px[i] > maxval ? (uint16_t)maxval : im->px[i];
        if (bps == 2) { d[2 * i] = (uint8_t)(v >> 8); d[2 * i + 1] = (uint8_t)v; }
        else d[i] = (uint8_t)v;
    }
    int rc = write_file(path, buf, (size_t)hn + npx * bps, e);
    free(buf);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* conversions */

void image_minmax(const Image *im, uint16_t *mn, uint16_t *mx) {
    size_t npx = (size_t)im->w * (size_t)im->h;
    uint16_t lo = 0xffff, hi = 0;
    for (size_t i = 0; i < npx; i++) {
        uint16_t v = im->px[i];
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
    }
    if (npx == 0) lo = 0;
    *mn = lo;
    *mx = hi;
}

void image_to_float(const Image *im, float *out) {
    size_t npx = (size_t)im->w * (size_t)im->h;
    float s = 1.0f / (float)image_maxval(im);
    for (size_t i = 0; i < npx; i++) out[i] = (float)im->px[i] * s;
}

void image_to_float_window(const Image *im, float lo, float hi, float *out) {
    size_t npx = (size_t)im->w * (size_t)im->h;
    float s = hi > lo ? 1.0f / (hi - lo) : 0.0f;
    for (size_t i = 0; i < npx; i++) {
        float v = ((float)im->px[i] - lo) * s;
        out[i] = v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
    }
}

int image_from_float(const float *x, int w, int h, int bits, Image *out, Err *e) {
    Image t;
    if (image_alloc(&t, w, h, bits, e)) return 1;
    float m = (float)image_maxval(&t);
    size_t npx = (size_t)w * (size_t)h;
    for (size_t i = 0; i < npx; i++) {
        float v = x[i];
        v = v > 0.0f ? (v < 1.0f ? v : 1.0f) : 0.0f;   /* NaN -> 0 */
        t.px[i] = (uint16_t)(v * m + 0.5f);
    }
    *out = t;
    return 0;
}

int image_rescale_minmax(const Image *in, int bits, Image *out, Err *e) {
    if (bits < 1 || bits > 16) return err_set(e, "image_rescale_minmax: bad bit depth %d", bits);
    uint16_t lo, hi;
    image_minmax(in, &lo, &hi);
    Image t;
    if (in == out) {
        t = *out;
    } else if (image_alloc(&t, in->w, in->h, bits, e)) {
        return 1;
    }
    size_t npx = (size_t)in->w * (size_t)in->h;
    double m = (double)((1u << bits) - 1u);
    double s = hi > lo ? m / (double)(hi - lo) : 0.0;
    for (size_t i = 0; i < npx; i++) t.px[i] = (uint16_t)(((double)in->px[i] - lo) * s + 0.5);
    t.bits = bits;
    *out = t;
    return 0;
}

void float_normalize(float *x, size_t n, float mean, float std) {
    float inv = 1.0f / std;
    for (size_t i = 0; i < n; i++) x[i] = (x[i] - mean) * inv;
}

void float_mean_std(const float *x, size_t n, double *mean, double *std) {
    double s = 0.0, ss = 0.0;
    for (size_t i = 0; i < n; i++) s += x[i];
    double m = n ? s / (double)n : 0.0;
    for (size_t i = 0; i < n; i++) ss += ((double)x[i] - m) * ((double)x[i] - m);
    *mean = m;
    *std = n ? sqrt(ss / (double)n) : 0.0;
}

/* ------------------------------------------------------------------------------------------ */
/* geometry */

static Rect rect_clip(Rect r, int w, int h) {
    if (r.x0 < 0) r.x0 = 0;
    if (r.y0 < 0) r.y0 = 0;
    if (r.x1 > w) r.x1 = w;
    if (r.y1 > h) r.y1 = h;
    if (r.x1 < r.x0) r.x1 = r.x0;
    if (r.y1 < r.y0) r.y1 = r.y0;
    return r;
}

int image_crop(const Image *in, Rect r, Image *out, Err *e) {
    r = rect_clip(r, in->w, in->h);
    if (r.x1 <= r.x0 || r.y1 <= r.y0)
        return err_set(e, "image_crop: empty rectangle [%d,%d)x[%d,%d) in a %dx%d image",
                       r.x0, r.x1, r.y0, r.y1, in->w, in->h);
    Image t;
    if (image_alloc(&t, r.x1 - r.x0, r.y1 - r.y0, in->bits, e)) return 1;
    for (int y = r.y0; y < r.y1; y++)
        memcpy(image_row(&t, y - r.y0), image_row(in, y) + r.x0, (size_t)t.w * sizeof(uint16_t));
    *out = t;
    return 0;
}

void image_flip_h(Image *im) {
    for (int y = 0; y < im->h; y++) {
        uint16_t *row = image_row(im, y);
        for (int a = 0, b = im->w - 1; a < b; a++, b--) {
            uint16_t t = row[a];
            row[a] = row[b];
            row[b] = t;
        }
    }
}

/* Resampling as a separable filter: for each output index along one axis, a run of taps
 * (first source index, count, weights).  Bilinear and area only differ in how the taps are
 * made, so one routine serves both.
 *
 * Rows are streamed: each source row of the (cropped, optionally mirrored) region is resampled
 * horizontally once, into a ring of max_taps rows, and each output row is the weighted sum of
 * its ring rows.  No full-size temporary is allocated — on this kind of VM, first-touching a
 * fresh multi-MB buffer costs more than the arithmetic. */
typedef struct Taps {
    int *first;     /* (n_out) */
    int *count;     /* (n_out) */
    float *w;       /* (n_out, max_taps) */
    int max_taps;
} Taps;

static void taps_free(Taps *t) {
    free(t->first);
    free(t->count);
    free(t->w);
}

static int taps_make(Taps *t, int n_in, int n_out, ResizeMode mode) {
    double scale = (double)n_in / (double)n_out;
    int area = mode == RESIZE_AREA && n_in > n_out;
    t->max_taps = mode == RESIZE_NEAREST ? 1 : area ? (int)ceil(scale) + 1 : 2;
    t->first = malloc((size_t)n_out * sizeof(int));
    t->count = malloc((size_t)n_out * sizeof(int));
    t->w = calloc((size_t)n_out * (size_t)t->max_taps, sizeof(float));
    if (!t->first || !t->count || !t->w) { taps_free(t); return 1; }
    for (int o = 0; o < n_out; o++) {
        float *w = t->w + (size_t)o * (size_t)t->max_taps;
        if (mode == RESIZE_NEAREST) {
            int s = (int)floor((double)o * scale);
            t->first[o] = s < n_in - 1 ? s : n_in - 1;
            t->count[o] = 1;
            w[0] = 1.0f;
        } else if (area) {
            /* output pixel o covers source interval [o*scale, (o+1)*scale) */
            double a = (double)o * scale, b = a + scale;
            int s0 = (int)floor(a), s1 = (int)ceil(b);
            if (s1 > n_in) s1 = n_in;
            int c = 0;
            for (int s = s0; s < s1 && c < t->max_taps; s++) {
                double lo = s > a ? s : a, hi = s + 1 < b ? s + 1 : b;
                if (hi - lo <= 1e-12) continue;   /* a sliver from rounding */
                if (c == 0) t->first[o] = s;
                w[c++] = (float)((hi - lo) / scale);
            }
            if (c == 0) { t->first[o] = s0 < n_in - 1 ? s0 : n_in - 1; w[c++] = 1.0f; }
            t->count[o] = c;
        } else {
            /* half-pixel centres, edge-clamped (cv2 INTER_LINEAR, torch align_corners=False) */
            double src = ((double)o + 0.5) * scale - 0.5;
            if (src < 0) src = 0;
            int s0 = (int)floor(src);
            if (s0 > n_in - 1) s0 = n_in - 1;
            double f = src - s0;
            if (s0 + 1 > n_in - 1) f = 0;
            t->first[o] = s0;
            t->count[o] = f > 0 ? 2 : 1;
            w[0] = (float)(1.0 - f);
            w[1] = (float)f;
        }
    }
    return 0;
}

/* A source region: rows y0.., columns [x0, x0 + w), mirrored when flip; uint16 or float. */
typedef struct RowSrc {
    const uint16_t *u16;
    const float *f32;
    size_t stride;      /* elements per source row */
    int x0, y0, w;
    int flip;
} RowSrc;

static void fetch_row(const RowSrc *s, int y, float *dst) {
    size_t off = (size_t)(s->y0 + y) * s->stride + (size_t)s->x0;
    if (s->u16) {
        const uint16_t *r = s->u16 + off;
        if (s->flip) for (int x = 0; x < s->w; x++) dst[x] = (float)r[s->w - 1 - x];
        else for (int x = 0; x < s->w; x++) dst[x] = (float)r[x];
    } else {
        const float *r = s->f32 + off;
        if (s->flip) for (int x = 0; x < s->w; x++) dst[x] = r[s->w - 1 - x];
        else memcpy(dst, r, (size_t)s->w * sizeof(float));
    }
}

/* Output row sink: float rows or quantised uint16 rows. */
typedef struct RowSink {
    float *f32;         /* (oh, ow) */
    uint16_t *u16;      /* (oh, ow) */
    float maxval;
} RowSink;

static int resize_stream(const RowSrc *src, int ih, int ow, int oh, ResizeMode mode, RowSink *sink) {
    int iw = src->w;
    Taps tx = {0}, ty = {0};
    if (taps_make(&tx, iw, ow, mode)) return 1;
    if (taps_make(&ty, ih, oh, mode)) { taps_free(&tx); return 1; }
    int cap = ty.max_taps;
    float *row = malloc((size_t)iw * sizeof(float));                /* (iw) one source row */
    float *ring = malloc((size_t)cap * (size_t)ow * sizeof(float)); /* (cap, ow) resampled rows */
    int *slot_row = malloc((size_t)cap * sizeof(int));              /* source row held by a slot */
    float *orow = malloc((size_t)ow * sizeof(float));               /* (ow) */
    if (!row || !ring || !slot_row || !orow) {
        free(row); free(ring); free(slot_row); free(orow); taps_free(&tx); taps_free(&ty);
        return 1;
    }
    for (int k = 0; k < cap; k++) slot_row[k] = -1;
    for (int y = 0; y < oh; y++) {
        const float *wy = ty.w + (size_t)y * (size_t)cap;
        for (int x = 0; x < ow; x++) orow[x] = 0.0f;
        for (int k = 0; k < ty.count[y]; k++) {
            int sr = ty.first[y] + k;
            float *t = ring + (size_t)(sr % cap) * (size_t)ow;
            if (slot_row[sr % cap] != sr) {   /* first use of this source row: resample it */
                fetch_row(src, sr, row);
                for (int x = 0; x < ow; x++) {
                    const float *wx = tx.w + (size_t)x * (size_t)tx.max_taps;
                    const float *s = row + tx.first[x];
                    float acc = 0.0f;
                    for (int j = 0; j < tx.count[x]; j++) acc += wx[j] * s[j];
                    t[x] = acc;
                }
                slot_row[sr % cap] = sr;
            }
            float wk = wy[k];
            for (int x = 0; x < ow; x++) orow[x] += wk * t[x];
        }
        if (sink->f32) {
            memcpy(sink->f32 + (size_t)y * (size_t)ow, orow, (size_t)ow * sizeof(float));
        } else {
            uint16_t *d = sink->u16 + (size_t)y * (size_t)ow;
            float m = sink->maxval;
            for (int x = 0; x < ow; x++) {
                float v = orow[x] + 0.5f;
                d[x] = (uint16_t)(v < 0.0f ? 0.0f : v > m ? m : v);
            }
        }
    }
    free(row); free(ring); free(slot_row); free(orow); taps_free(&tx); taps_free(&ty);
    return 0;
}

void resize_f32(const float *in, int iw, int ih, float *out, int ow, int oh, ResizeMode mode) {
    RowSrc src = {.f32 = in, .stride = (size_t)iw, .w = iw};
    RowSink sink = {.f32 = out};
    if (resize_stream(&src, ih, ow, oh, mode, &sink)) {
        /* out of memory for the small temporaries: nearest without any */
        for (int y = 0; y < oh; y++)
            for (int x = 0; x < ow; x++) {
                int sx = (int)((double)x * iw / ow), sy = (int)((double)y * ih / oh);
                out[(size_t)y * ow + x] = in[(size_t)sy * iw + sx];
            }
    }
}

int image_crop_resize(const Image *in, Rect r, int flip, int w, int h, ResizeMode mode, Image *out, Err *e) {
    memset(out, 0, sizeof *out);
    r = rect_clip(r, in->w, in->h);
    int cw = r.x1 - r.x0, ch = r.y1 - r.y0;
    if (cw < 1 || ch < 1)
        return err_set(e, "image_crop_resize: empty rectangle [%d,%d)x[%d,%d) in a %dx%d image", r.x0, r.x1, r.y0, r.y1, in->w, in->h);
    Image t;
    if (image_alloc(&t, w, h, in->bits, e)) return 1;
    if (mode == RESIZE_NEAREST || (cw == w && ch == h)) {
        /* exact copies, no float round trip (label maps; also a plain crop / flip) */
        int *sx = malloc((size_t)w * sizeof(int));
        if (!sx) { image_free(&t); return err_set(e, "image_crop_resize: out of memory"); }
        for (int x = 0; x < w; x++) {
            int s = (int)floor((double)x * cw / w);
            s = s < cw - 1 ? s : cw - 1;
            sx[x] = r.x0 + (flip ? cw - 1 - s : s);
        }
        for (int y = 0; y < h; y++) {
            int sy = (int)floor((double)y * ch / h);
            if (sy > ch - 1) sy = ch - 1;
            const uint16_t *s = image_row(in, r.y0 + sy);
            uint16_t *d = image_row(&t, y);
            for (int x = 0; x < w; x++) d[x] = s[sx[x]];
        }
        free(sx);
        *out = t;
        return 0;
    }
    RowSrc src = {.u16 = in->px, .stride = (size_t)in->w, .x0 = r.x0, .y0 = r.y0, .w = cw, .flip = flip};
    RowSink sink = {.u16 = t.px, .maxval = (float)image_maxval(&t)};
    if (resize_stream(&src, ch, w, h, mode, &sink)) {
        image_free(&t);
        return err_set(e, "image_crop_resize: out of memory");
    }
    *out = t;
    return 0;
}

int image_resize(const Image *in, int w, int h, ResizeMode mode, Image *out, Err *e) {
    return image_crop_resize(in, (Rect){0, 0, in->w, in->h}, 0, w, h, mode, out, e);
}

static float clampf(float v, float lo, float hi) { return v < lo ? lo : v > hi ? hi : v; }

BoxF box_crop(BoxF b, Rect r) {
    float w = (float)(r.x1 - r.x0), h = (float)(r.y1 - r.y0);
    BoxF o = {clampf(b.x0 - (float)r.x0, 0, w), clampf(b.y0 - (float)r.y0, 0, h),
              clampf(b.x1 - (float)r.x0, 0, w), clampf(b.y1 - (float)r.y0, 0, h)};
    return o;
}

BoxF box_flip_h(BoxF b, int w) {
    BoxF o = {(float)w - b.x1, b.y0, (float)w - b.x0, b.y1};
    return o;
}

BoxF box_scale(BoxF b, float sx, float sy) {
    BoxF o = {b.x0 * sx, b.y0 * sy, b.x1 * sx, b.y1 * sy};
    return o;
}
