/* dicom.c — a small, defensive DICOM Part-10 reader (explicit/implicit/deflated VR little
 * endian, native or JPEG 2000 pixel data), the VOI/Modality rendering pipeline, and a writer
 * (explicit VR little endian, uncompressed).
 *
 * Safety rule: every length that comes from the file is compared with the bytes that are left
 * before it is used, and allocations are bounded by the image-size limits below, so a corrupt
 * or hostile file gives an Err, never an out-of-bounds read or a huge allocation. */
#include "data/dicom.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <openjpeg-2.5/openjpeg.h>

#define DCM_MAX_DIM 65535
#define DCM_MAX_PIXELS ((size_t)1 << 26)       /* 67 Mpx; the largest mammograms are ~30 Mpx */
#define DCM_MAX_FILE ((size_t)1 << 31)
#define DCM_MAX_INFLATED ((size_t)1 << 28)      /* a deflated dataset beyond 256 MB exceeds the pixel limit anyway */
#define DCM_MAX_DEPTH 24                       /* nested sequences */
#define DCM_MAX_FRAGMENTS 100000
#define DCM_UNDEF 0xFFFFFFFFu

#define TAG(g, e) (((uint32_t)(g) << 16) | (uint32_t)(e))
#define TAG_ITEM TAG(0xFFFE, 0xE000)
#define TAG_ITEM_DELIM TAG(0xFFFE, 0xE00D)
#define TAG_SEQ_DELIM TAG(0xFFFE, 0xE0DD)
#define TAG_PIXEL_DATA TAG(0x7FE0, 0x0010)
#define TAG_VOI_LUT_SEQ TAG(0x0028, 0x3010)

#define UID_EXPLICIT_LE "1.2.840.10008.1.2.1"
#define UID_IMPLICIT_LE "1.2.840.10008.1.2"
#define UID_DEFLATED_LE "1.2.840.10008.1.2.1.99"
#define UID_J2K_LOSSLESS "1.2.840.10008.1.2.4.90"
#define UID_J2K "1.2.840.10008.1.2.4.91"
#define UID_DM_PRESENTATION "1.2.840.10008.5.1.4.1.1.1.2"
#define UID_IMPLEMENTATION "1.2.826.0.1.3680043.10.1389.1"   /* versamammo.c implementation class */

/* ------------------------------------------------------------------------------------------ */
/* transfer syntaxes */

static const struct { const char *uid, *name; } TS_NAMES[] = {
    {"1.2.840.10008.1.2", "Implicit VR Little Endian"},
    {"1.2.840.10008.1.2.1", "Explicit VR Little Endian"},
    {"1.2.840.10008.1.2.1.99", "Deflated Explicit VR Little Endian"},
    {"1.2.840.10008.1.2.2", "Explicit VR Big Endian (retired)"},
    {"1.2.840.10008.1.2.4.50", "JPEG Baseline (Process 1)"},
    {"1.2.840.10008.1.2.4.51", "JPEG Extended (Process 2 & 4)"},
    {"1.2.840.10008.1.2.4.57", "JPEG Lossless, Non-Hierarchical (Process 14)"},
    {"1.2.840.10008.1.2.4.70", "JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14, SV1)"},
    {"1.2.840.10008.1.2.4.80", "JPEG-LS Lossless Image Compression"},
    {"1.2.840.10008.1.2.4.81", "JPEG-LS Lossy (Near-Lossless) Image Compression"},
    {"1.2.840.10008.1.2.4.90", "JPEG 2000 Image Compression (Lossless Only)"},
    {"1.2.840.10008.1.2.4.91", "JPEG 2000 Image Compression"},
    {"1.2.840.10008.1.2.4.92", "JPEG 2000 Part 2 Multi-component Image Compression (Lossless Only)"},
    {"1.2.840.10008.1.2.4.93", "JPEG 2000 Part 2 Multi-component Image Compression"},
    {"1.2.840.10008.1.2.4.100", "MPEG2 Main Profile / Main Level"},
    {"1.2.840.10008.1.2.4.101", "MPEG2 Main Profile / High Level"},
    {"1.2.840.10008.1.2.4.102", "MPEG-4 AVC/H.264 High Profile / Level 4.1"},
    {"1.2.840.10008.1.2.4.103", "MPEG-4 AVC/H.264 BD-compatible High Profile / Level 4.1"},
    {"1.2.840.10008.1.2.4.201", "High-Throughput JPEG 2000 (Lossless Only)"},
    {"1.2.840.10008.1.2.4.202", "High-Throughput JPEG 2000 with RPCL Options (Lossless Only)"},
    {"1.2.840.10008.1.2.4.203", "High-Throughput JPEG 2000"},
    {"1.2.840.10008.1.2.5", "RLE Lossless"},
};

const char *dicom_transfer_syntax_name(const char *uid) {
    for (size_t i = 0; i < sizeof TS_NAMES / sizeof TS_NAMES[0]; i++)
        if (strcmp(uid, TS_NAMES[i].uid) == 0) return TS_NAMES[i].name;
    return "unknown transfer syntax";
}

/* ------------------------------------------------------------------------------------------ */
/* the parser state */

typedef struct Fragment {
    size_t off, len;      /* in the parse buffer */
} Fragment;

typedef struct PixelRef {
    int found;
    int encapsulated;
    size_t off, len;      /* native: value bytes in the parse buffer */
    Fragment *frags;      /* encapsulated: fragments after the Basic Offset Table */
    size_t nfrags;
    size_t bot_off, bot_len;   /* Basic Offset Table item value */
} PixelRef;

typedef struct Rd {
    const uint8_t *b;     /* buffer being parsed (the file, or the inflated dataset) */
    size_t n;
    size_t pos;
    int explicit_vr;
    int depth;
    int truncated;        /* the failure was running out of bytes (header-only retry) */
    const char *name;
    Err *e;
    Dicom *d;
    PixelRef px;
    int header_only;
    int partial;          /* the buffer is a prefix of the file (dicom_read_header) */
    /* raw laterality tags, resolved at the end (ImageLaterality wins) */
    char image_laterality, series_laterality;
    int have_pixel_spacing;
} Rd;

enum { MODE_TOP, MODE_VOI_ITEM, MODE_SKIP };
enum { PARSE_OK = 0, PARSE_ERR = 1, PARSE_STOP = 2, PARSE_ITEM_END = 3, PARSE_SEQ_END = 4 };

static int fail(Rd *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(Rd *r, const char *fmt, ...) {
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    err_set(r->e, "%s: %s", r->name, msg);
    return PARSE_ERR;
}

static int fail_trunc(Rd *r, uint32_t tag, size_t need) {
    r->truncated = 1;
    return fail(r, "truncated DICOM: element (%04X,%04X) at offset %zu needs %zu bytes, %zu left",
                tag >> 16, tag & 0xFFFF, r->pos, need, r->n - r->pos);
}

static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* The explicit VRs; those in LONG_VRS have 2 reserved bytes and a 32-bit length. */
static int vr_valid(const uint8_t *v) {
    static const char *const VRS[] = {"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FL", "FD", "IS", "LO",
                                      "LT", "OB", "OD", "OF", "OL", "OV", "OW", "PN", "SH", "SL", "SQ",
                                      "SS", "ST", "SV", "TM", "UC", "UI", "UL", "UN", "UR", "US", "UT", "UV"};
    for (size_t i = 0; i < sizeof VRS / sizeof VRS[0]; i++)
        if (v[0] == VRS[i][0] && v[1] == VRS[i][1]) return 1;
    return 0;
}

static int vr_long(const char *vr) {
    static const char *const LONG_VRS[] = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"};
    for (size_t i = 0; i < sizeof LONG_VRS / sizeof LONG_VRS[0]; i++)
        if (vr[0] == LONG_VRS[i][0] && vr[1] == LONG_VRS[i][1]) return 1;
    return 0;
}

/* Reads one element header at r->pos: tag, VR ("" in implicit mode and for item tags), length.
 * Leaves r->pos at the value. */
static int read_elem_header(Rd *r, uint32_t *tag, char vr[3], uint32_t *len) {
    if (r->n - r->pos < 8) return fail_trunc(r, 0, 8);
    const uint8_t *p = r->b + r->pos;
    *tag = TAG(rd16(p), rd16(p + 2));
    vr[0] = vr[1] = vr[2] = 0;
    if ((*tag >> 16) == 0xFFFE || !r->explicit_vr) {   /* items and delimiters: never a VR */
        *len = rd32(p + 4);
        r->pos += 8;
        return PARSE_OK;
    }
    if (!vr_valid(p + 4))
        return fail(r, "corrupt DICOM: invalid VR bytes 0x%02X 0x%02X at offset %zu (element (%04X,%04X))",
                    p[4], p[5], r->pos + 4, *tag >> 16, *tag & 0xFFFF);
    vr[0] = (char)p[4];
    vr[1] = (char)p[5];
    if (vr_long(vr)) {
        if (r->n - r->pos < 12) return fail_trunc(r, *tag, 12);
        *len = rd32(p + 8);
        r->pos += 12;
    } else {
        *len = rd16(p + 6);
        r->pos += 8;
    }
    return PARSE_OK;
}

/* ---- value decoding ---- */

/* Copy a text value: leading spaces and trailing spaces/NULs removed, cut to the buffer. */
static void copy_str(char *dst, size_t cap, const uint8_t *v, size_t len) {
    while (len && (v[0] == ' ')) { v++; len--; }
    while (len && (v[len - 1] == ' ' || v[len - 1] == '\0')) len--;
    if (len >= cap) len = cap - 1;
    for (size_t i = 0; i < len; i++) dst[i] = (v[i] >= 32 && v[i] < 127) ? (char)v[i] : '?';
    dst[len] = '\0';
}

/* First value of a DS/IS (backslash-separated); returns 0 on success. */
static int parse_num(const uint8_t *v, size_t len, double *out) {
    char tmp[72];
    size_t k = 0;
    while (k < len && v[k] != '\\' && k < sizeof tmp - 1) { tmp[k] = (char)v[k]; k++; }
    tmp[k] = '\0';
    char *s = tmp;
    while (*s == ' ') s++;
    if (!*s) return 1;
    char *end;
    double x = strtod(s, &end);
    while (*end == ' ') end++;
    if (end == s || *end != '\0' || !isfinite(x)) return 1;
    *out = x;
    return 0;
}

/* Unsigned/signed short or long integer value (US, SS, UL; length 2 or 4). */
static int parse_int(const uint8_t *v, size_t len, int is_signed, long *out) {
    if (len >= 4 && len != 2) { *out = is_signed ? (long)(int32_t)rd32(v) : (long)rd32(v); return 0; }
    if (len >= 2) { *out = is_signed ? (long)(int16_t)rd16(v) : (long)rd16(v); return 0; }
    return 1;
}

static int int_field(Rd *r, uint32_t tag, const uint8_t *v, size_t len, long lo, long hi, int *dst) {
    long x;
    if (parse_int(v, len, 0, &x) || x < lo || x > hi)
        return fail(r, "bad value for (%04X,%04X): %s", tag >> 16, tag & 0xFFFF, len < 2 ? "too short" : "out of range");
    *dst = (int)x;
    return PARSE_OK;
}

/* Top-level element values we keep. */
static int handle_top(Rd *r, uint32_t tag, const char *vr, const uint8_t *v, size_t len) {
    DicomInfo *in = &r->d->info;
    double x;
    switch (tag) {
    case TAG(0x0002, 0x0010): copy_str(in->transfer_syntax, sizeof in->transfer_syntax, v, len); break;
    case TAG(0x0008, 0x0016): copy_str(in->sop_class_uid, sizeof in->sop_class_uid, v, len); break;
    case TAG(0x0008, 0x0018): copy_str(in->sop_instance_uid, sizeof in->sop_instance_uid, v, len); break;
    case TAG(0x0008, 0x0060): copy_str(in->modality, sizeof in->modality, v, len); break;
    case TAG(0x0008, 0x0068): copy_str(in->presentation_intent, sizeof in->presentation_intent, v, len); break;
    case TAG(0x0008, 0x0070): copy_str(in->manufacturer, sizeof in->manufacturer, v, len); break;
    case TAG(0x0008, 0x103E): copy_str(in->series_description, sizeof in->series_description, v, len); break;
    case TAG(0x0010, 0x0020): copy_str(in->patient_id, sizeof in->patient_id, v, len); break;
    case TAG(0x0018, 0x5101): copy_str(in->view, sizeof in->view, v, len); break;
    case TAG(0x0020, 0x000D): copy_str(in->study_uid, sizeof in->study_uid, v, len); break;
    case TAG(0x0020, 0x000E): copy_str(in->series_uid, sizeof in->series_uid, v, len); break;
    case TAG(0x0020, 0x0020): copy_str(in->patient_orientation, sizeof in->patient_orientation, v, len); break;
    case TAG(0x0020, 0x0060):
    case TAG(0x0020, 0x0062): {
        char s[8];
        copy_str(s, sizeof s, v, len);
        char c = (s[0] == 'L' || s[0] == 'R') ? s[0] : 0;
        if (tag == TAG(0x0020, 0x0062)) r->image_laterality = c; else r->series_laterality = c;
        break;
    }
    case TAG(0x0028, 0x0002): return int_field(r, tag, v, len, 1, 4, &in->samples_per_pixel);
    case TAG(0x0028, 0x0004): copy_str(in->photometric, sizeof in->photometric, v, len); break;
    case TAG(0x0028, 0x0008):
        if (parse_num(v, len, &x) || x < 1 || x > 1e7) return fail(r, "bad NumberOfFrames");
        in->number_of_frames = (int)x;
        break;
    case TAG(0x0028, 0x0010): return int_field(r, tag, v, len, 0, DCM_MAX_DIM, &in->rows);
    case TAG(0x0028, 0x0011): return int_field(r, tag, v, len, 0, DCM_MAX_DIM, &in->cols);
    case TAG(0x0028, 0x0030):
    case TAG(0x0018, 0x1164): {
        if (tag == TAG(0x0018, 0x1164) && r->have_pixel_spacing) break;   /* PixelSpacing wins */
        double a, b;
        const uint8_t *bs = memchr(v, '\\', len);
        if (!parse_num(v, len, &a) && bs && !parse_num(bs + 1, len - (size_t)(bs + 1 - v), &b)) {
            in->pixel_spacing[0] = (float)a;
            in->pixel_spacing[1] = (float)b;
            if (tag == TAG(0x0028, 0x0030)) r->have_pixel_spacing = 1;
        }
        break;
    }
    case TAG(0x0028, 0x0100): return int_field(r, tag, v, len, 1, 64, &in->bits_allocated);
    case TAG(0x0028, 0x0101): return int_field(r, tag, v, len, 1, 64, &in->bits_stored);
    case TAG(0x0028, 0x0102): return int_field(r, tag, v, len, 0, 63, &in->high_bit);
    case TAG(0x0028, 0x0103): return int_field(r, tag, v, len, 0, 1, &in->pixel_representation);
    case TAG(0x0028, 0x0120):
    case TAG(0x0028, 0x0121): {
        long pv;
        /* US or SS: the explicit VR says which; implicit files follow PixelRepresentation */
        int sgn = vr[0] ? (vr[0] == 'S') : in->pixel_representation == 1;
        if (parse_int(v, len, sgn, &pv)) break;
        if (tag == TAG(0x0028, 0x0120)) { in->has_padding = 1; in->padding_value = (int32_t)pv; }
        else { in->has_padding_limit = 1; in->padding_limit = (int32_t)pv; }
        break;
    }
    case TAG(0x0028, 0x1050):
        if (!parse_num(v, len, &x)) { in->window_center = x; in->has_window |= 1; }
        break;
    case TAG(0x0028, 0x1051):
        if (!parse_num(v, len, &x)) { in->window_width = x; in->has_window |= 2; }
        break;
    case TAG(0x0028, 0x1052):
        if (!parse_num(v, len, &x)) in->rescale_intercept = x;
        break;
    case TAG(0x0028, 0x1053):
        if (!parse_num(v, len, &x) && x != 0) in->rescale_slope = x;
        break;
    case TAG(0x0028, 0x1056): {
        char s[20];
        copy_str(s, sizeof s, v, len);
        in->voi_function = strcmp(s, "SIGMOID") == 0 ? VOI_SIGMOID : strcmp(s, "LINEAR_EXACT") == 0 ? VOI_LINEAR_EXACT : VOI_LINEAR;
        break;
    }
    case TAG(0x2050, 0x0020): {
        char s[20];
        copy_str(s, sizeof s, v, len);
        in->presentation_lut_inverse = strcmp(s, "INVERSE") == 0;
        break;
    }
    default: break;
    }
    return PARSE_OK;
}

/* Elements of the first VOI LUT Sequence item: LUT Descriptor and LUT Data. */
static int handle_voi_item(Rd *r, uint32_t tag, const uint8_t *v, size_t len) {
    DicomInfo *in = &r->d->info;
    if (tag == TAG(0x0028, 0x3002) && len >= 6) {
        long n = rd16(v), bits = rd16(v + 4);
        long first = in->pixel_representation == 1 ? (long)(int16_t)rd16(v + 2) : (long)rd16(v + 2);
        in->voi_lut_n = n == 0 ? 65536 : (int)n;
        in->voi_lut_first = (int)first;
        in->voi_lut_bits = (int)(bits >= 1 && bits <= 16 ? bits : 16);
    } else if (tag == TAG(0x0028, 0x3006) && in->voi_lut_n > 0 && !in->voi_lut) {
        size_t n = (size_t)in->voi_lut_n;
        int packed8 = len < 2 * n && len >= n;   /* 8-bit entries packed in an OB/OW value */
        if (len < n) return fail(r, "VOI LUT Data has %zu bytes for %zu entries", len, n);
        in->voi_lut = malloc(n * sizeof(uint16_t));
        if (!in->voi_lut) return fail(r, "out of memory for the VOI LUT");
        for (size_t i = 0; i < n; i++) in->voi_lut[i] = packed8 ? v[i] : rd16(v + 2 * i);
    }
    return PARSE_OK;
}

static int parse_elements(Rd *r, size_t end, int mode);

/* A sequence value: items of defined or undefined length up to `end` (defined) or the
 * Sequence Delimitation Item (undefined).  Only the first item of the VOI LUT Sequence at the
 * top level is interpreted. */
static int parse_sequence(Rd *r, size_t end, int undefined, int voi) {
    if (++r->depth > DCM_MAX_DEPTH) return fail(r, "corrupt DICOM: sequences nested deeper than %d", DCM_MAX_DEPTH);
    int item_no = 0, rc = PARSE_OK;
    while (undefined || r->pos < end) {
        uint32_t tag, len;
        char vr[3];
        if (r->n - r->pos < 8) { rc = fail_trunc(r, TAG_ITEM, 8); break; }
        /* items never carry a VR, whatever the transfer syntax */
        const uint8_t *p = r->b + r->pos;
        tag = TAG(rd16(p), rd16(p + 2));
        len = rd32(p + 4);
        (void)vr;
        r->pos += 8;
        if (tag == TAG_SEQ_DELIM) break;
        if (tag != TAG_ITEM) {
            rc = fail(r, "corrupt DICOM: expected a sequence item at offset %zu, found (%04X,%04X)", r->pos - 8, tag >> 16, tag & 0xFFFF);
            break;
        }
        int mode = voi && item_no == 0 ? MODE_VOI_ITEM : MODE_SKIP;
        if (len == DCM_UNDEF) {
            rc = parse_elements(r, r->n, mode);
            if (rc == PARSE_ITEM_END) rc = PARSE_OK;
            else if (rc == PARSE_OK) rc = fail_trunc(r, TAG_ITEM_DELIM, 8);   /* ran off the end */
            if (rc) break;
        } else {
            if (len > r->n - r->pos || (!undefined && len > end - r->pos)) { rc = fail_trunc(r, TAG_ITEM, len); break; }
            if (mode == MODE_VOI_ITEM) {
                size_t item_end = r->pos + len;
                rc = parse_elements(r, item_end, mode);
                if (rc == PARSE_ITEM_END) rc = PARSE_OK;
                if (rc) break;
                r->pos = item_end;
            } else {
                r->pos += len;   /* a defined-length item is skipped without looking inside */
            }
        }
        item_no++;
    }
    r->depth--;
    return rc;
}

/* Encapsulated pixel data: the Basic Offset Table item, then fragments up to the delimiter. */
static int parse_encapsulated(Rd *r) {
    PixelRef *px = &r->px;
    px->encapsulated = 1;
    size_t cap = 0;
    int first = 1;
    for (;;) {
        if (r->n - r->pos < 8) return fail_trunc(r, TAG_PIXEL_DATA, 8);
        const uint8_t *p = r->b + r->pos;
        uint32_t tag = TAG(rd16(p), rd16(p + 2)), len = rd32(p + 4);
        r->pos += 8;
        if (tag == TAG_SEQ_DELIM) return PARSE_OK;
        if (tag != TAG_ITEM) return fail(r, "corrupt encapsulated pixel data: expected an item at offset %zu", r->pos - 8);
        if (len == DCM_UNDEF || len > r->n - r->pos) return fail_trunc(r, TAG_PIXEL_DATA, len == DCM_UNDEF ? 0 : len);
        if (first) {
            px->bot_off = r->pos;
            px->bot_len = len;
            first = 0;
        } else {
            if (px->nfrags == DCM_MAX_FRAGMENTS) return fail(r, "encapsulated pixel data with more than %d fragments", DCM_MAX_FRAGMENTS);
            if (px->nfrags == cap) {
                cap = cap ? 2 * cap : 16;
                Fragment *f = realloc(px->frags, cap * sizeof *f);
                if (!f) return fail(r, "out of memory");
                px->frags = f;
            }
            px->frags[px->nfrags].off = r->pos;
            px->frags[px->nfrags].len = len;
            px->nfrags++;
        }
        r->pos += len;
    }
}

/* Elements from r->pos up to `end`.  Returns PARSE_STOP at the top-level Pixel Data,
 * PARSE_ITEM_END after an Item Delimitation Item, PARSE_OK at `end`. */
static int parse_elements(Rd *r, size_t end, int mode) {
    while (r->pos < end) {
        uint32_t tag, len;
        char vr[3];
        size_t at = r->pos;
        if (read_elem_header(r, &tag, vr, &len)) return PARSE_ERR;
        if (tag == TAG_ITEM_DELIM) return PARSE_ITEM_END;
        if (tag == TAG_SEQ_DELIM) return fail(r, "corrupt DICOM: unexpected sequence delimiter at offset %zu", at);
        if (tag == TAG_ITEM) return fail(r, "corrupt DICOM: unexpected item tag at offset %zu", at);
        if (mode == MODE_TOP && tag == TAG_PIXEL_DATA) {
            r->px.found = 1;
            if (r->header_only) return PARSE_STOP;
            if (len == DCM_UNDEF) {
                if (parse_encapsulated(r)) return PARSE_ERR;
            } else {
                if (len > r->n - r->pos) return fail_trunc(r, tag, len);
                r->px.off = r->pos;
                r->px.len = len;
                r->pos += len;
            }
            return PARSE_STOP;
        }
        int is_sq = vr[0] == 'S' && vr[1] == 'Q';
        int is_un = vr[0] == 'U' && vr[1] == 'N';
        /* Implicit VR: only a few sequences matter; an undefined length is always a sequence. */
        if (!vr[0] && tag == TAG_VOI_LUT_SEQ) is_sq = 1;
        int voi = mode == MODE_TOP && tag == TAG_VOI_LUT_SEQ;
        if (len == DCM_UNDEF) {
            if (vr[0] && !is_sq && !is_un)
                return fail(r, "corrupt DICOM: undefined length for element (%04X,%04X) with VR %s", tag >> 16, tag & 0xFFFF, vr);
            /* UN of undefined length holds an implicit-VR sequence (PS3.5 6.2.2) */
            int saved = r->explicit_vr;
            if (is_un) r->explicit_vr = 0;
            int rc = parse_sequence(r, r->n, 1, voi);
            r->explicit_vr = saved;
            if (rc) return PARSE_ERR;
            continue;
        }
        if (len > end - r->pos || len > r->n - r->pos) return fail_trunc(r, tag, len);
        if (is_sq) {
            size_t seq_end = r->pos + len;
            if (voi) {
                if (parse_sequence(r, seq_end, 0, 1)) return PARSE_ERR;
            }
            r->pos = seq_end;
            continue;
        }
        const uint8_t *v = r->b + r->pos;
        if (mode == MODE_TOP || (tag >> 16) == 0x0002) {
            if (handle_top(r, tag, vr, v, len)) return PARSE_ERR;
        } else if (mode == MODE_VOI_ITEM) {
            if (handle_voi_item(r, tag, v, len)) return PARSE_ERR;
        }
        r->pos += len;
    }
    return PARSE_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* file structure */

int dicom_sniff(const uint8_t *buf, size_t n) {
    if (n >= 132 && memcmp(buf + 128, "DICM", 4) == 0) return 1;
    if (n >= 4 && memcmp(buf, "DICM", 4) == 0) return 1;
    if (n >= 8) {
        uint16_t g = rd16(buf), el = rd16(buf + 2);
        if ((g == 0x0002 || g == 0x0008) && el <= 0x0020) return vr_valid(buf + 4) || rd32(buf + 4) < 256;
    }
    return 0;
}

void dicom_info_init(DicomInfo *in) {
    memset(in, 0, sizeof *in);
    snprintf(in->transfer_syntax, sizeof in->transfer_syntax, "%s", UID_EXPLICIT_LE);
    snprintf(in->sop_class_uid, sizeof in->sop_class_uid, "%s", UID_DM_PRESENTATION);
    snprintf(in->modality, sizeof in->modality, "MG");
    snprintf(in->presentation_intent, sizeof in->presentation_intent, "FOR PRESENTATION");
    snprintf(in->photometric, sizeof in->photometric, "MONOCHROME2");
    in->samples_per_pixel = 1;
    in->number_of_frames = 1;
    in->bits_allocated = 16;
    in->bits_stored = 12;
    in->high_bit = 11;
    in->rescale_slope = 1.0;
}

void dicom_free(Dicom *d) {
    if (!d) return;
    free(d->info.voi_lut);
    free(d->pixels);
    memset(d, 0, sizeof *d);
}

/* Inflate a raw-deflate stream (Deflated Explicit VR LE) into a malloc'd buffer. */
static int inflate_all(Rd *r, const uint8_t *src, size_t n, uint8_t **out, size_t *out_n) {
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit2(&z, -15) != Z_OK) return fail(r, "zlib init failed");
    size_t cap = n < (DCM_MAX_INFLATED - 4096) / 4 ? n * 4 + 4096 : DCM_MAX_INFLATED, len = 0;
    uint8_t *buf = malloc(cap);
    if (!buf) { inflateEnd(&z); return fail(r, "out of memory inflating the dataset"); }
    z.next_in = (Bytef *)src;
    int zrc = Z_OK;
    size_t left = n;
    for (;;) {
        if (len == cap) {
            if (cap >= DCM_MAX_INFLATED) { free(buf); inflateEnd(&z); return fail(r, "deflated dataset inflates beyond %zu bytes", DCM_MAX_INFLATED); }
            cap = cap < DCM_MAX_INFLATED / 2 ? cap * 2 : DCM_MAX_INFLATED;
            uint8_t *nb = realloc(buf, cap);
            if (!nb) { free(buf); inflateEnd(&z); return fail(r, "out of memory inflating the dataset"); }
            buf = nb;
        }
        uInt chunk_in = left > (1u << 30) ? (1u << 30) : (uInt)left;
        size_t room = cap - len;
        uInt chunk_out = room > (1u << 30) ? (1u << 30) : (uInt)room;
        z.next_in = (Bytef *)src + (n - left);
        z.avail_in = chunk_in;
        z.next_out = buf + len;
        z.avail_out = chunk_out;
        zrc = inflate(&z, Z_NO_FLUSH);
        left -= chunk_in - z.avail_in;
        len += chunk_out - z.avail_out;
        if (zrc == Z_STREAM_END) break;
        if (zrc == Z_BUF_ERROR && left == 0 && z.avail_out > 0) {
            free(buf); inflateEnd(&z);
            r->truncated = 1;
            return fail(r, "truncated deflated dataset");
        }
        if (zrc != Z_OK && zrc != Z_BUF_ERROR) { free(buf); inflateEnd(&z); return fail(r, "corrupt deflated dataset (zlib %d)", zrc); }
    }
    inflateEnd(&z);
    *out = buf;
    *out_n = len;
    return PARSE_OK;
}

/* ---- pixel decoding ---- */

static int decode_native(Rd *r) {
    DicomInfo *in = &r->d->info;
    size_t npx = (size_t)in->rows * (size_t)in->cols;
    size_t bpp = (size_t)in->bits_allocated / 8;
    size_t need = npx * bpp;
    if (r->px.len < need)
        return fail(r, "truncated pixel data: %zu bytes for %dx%d pixels of %d bits (%zu needed)", r->px.len,
                    in->cols, in->rows, in->bits_allocated, need);
    int32_t *out = malloc(npx * sizeof(int32_t));
    if (!out) return fail(r, "out of memory for %zu pixels", npx);
    const uint8_t *s = r->b + r->px.off;
    int shift = in->high_bit + 1 - in->bits_stored;
    uint32_t mask = in->bits_stored >= 32 ? 0xFFFFFFFFu : (1u << in->bits_stored) - 1u;
    uint32_t sign = 1u << (in->bits_stored - 1);
    for (size_t i = 0; i < npx; i++) {
        uint32_t raw = bpp == 2 ? rd16(s + 2 * i) : s[i];
        uint32_t v = (raw >> shift) & mask;
        out[i] = in->pixel_representation == 1 ? (int32_t)((v ^ sign) - sign) : (int32_t)v;
    }
    r->d->pixels = out;
    return PARSE_OK;
}

typedef struct MemStream {
    const uint8_t *data;
    size_t n, pos;
} MemStream;

static OPJ_SIZE_T ms_read(void *buf, OPJ_SIZE_T n, void *ud) {
    MemStream *m = ud;
    if (m->pos >= m->n) return (OPJ_SIZE_T)-1;
    size_t k = m->n - m->pos < n ? m->n - m->pos : n;
    memcpy(buf, m->data + m->pos, k);
    m->pos += k;
    return k;
}

static OPJ_OFF_T ms_skip(OPJ_OFF_T n, void *ud) {
    MemStream *m = ud;
    if (n < 0) {
        if ((size_t)(-n) > m->pos) n = -(OPJ_OFF_T)m->pos;
    } else if ((size_t)n > m->n - m->pos) {
        n = (OPJ_OFF_T)(m->n - m->pos);
    }
    m->pos = (size_t)((OPJ_OFF_T)m->pos + n);
    return n;
}

static OPJ_BOOL ms_seek(OPJ_OFF_T n, void *ud) {
    MemStream *m = ud;
    if (n < 0 || (size_t)n > m->n) return OPJ_FALSE;
    m->pos = (size_t)n;
    return OPJ_TRUE;
}

static void opj_err_cb(const char *msg, void *ud) {
    char *dst = ud;
    if (dst[0]) return;   /* keep the first message */
    snprintf(dst, 160, "%s", msg);
    size_t k = strlen(dst);
    while (k && (dst[k - 1] == '\n' || dst[k - 1] == '\r')) dst[--k] = '\0';
}

static void opj_quiet_cb(const char *msg, void *ud) { (void)msg; (void)ud; }

/* Frame 0 of JPEG 2000 pixel data: its fragments concatenated, decoded by openjpeg. */
static int decode_j2k(Rd *r) {
    DicomInfo *in = &r->d->info;
    PixelRef *px = &r->px;
    if (px->nfrags == 0) return fail(r, "encapsulated pixel data has no fragments");
    /* which fragments make frame 0: all of them for one frame; else up to the second offset of
     * the Basic Offset Table, or just the first fragment */
    size_t nf = px->nfrags;
    if (in->number_of_frames > 1) {
        nf = 1;
        if (px->bot_len >= 8) {
            uint32_t off1 = rd32(r->b + px->bot_off + 4);
            size_t acc = 0;
            nf = 0;
            while (nf < px->nfrags && acc < off1) { acc += 8 + px->frags[nf].len; nf++; }
            if (nf == 0) nf = 1;
        }
    }
    size_t total = 0;
    for (size_t i = 0; i < nf; i++) total += px->frags[i].len;
    uint8_t *cs = malloc(total ? total : 1);
    if (!cs) return fail(r, "out of memory");
    size_t o = 0;
    for (size_t i = 0; i < nf; i++) {
        memcpy(cs + o, r->b + px->frags[i].off, px->frags[i].len);
        o += px->frags[i].len;
    }
    /* a JP2 file box signature means a JP2 container; otherwise a raw codestream (the norm) */
    OPJ_CODEC_FORMAT fmt = total >= 12 && rd32(cs) == 0x0C000000u && memcmp(cs + 4, "jP  ", 4) == 0 ? OPJ_CODEC_JP2 : OPJ_CODEC_J2K;
    MemStream ms = {cs, total, 0};
    char msg[160] = "";
    opj_image_t *img = NULL;
    opj_codec_t *codec = opj_create_decompress(fmt);
    opj_stream_t *st = opj_stream_create(1 << 16, OPJ_TRUE);
    int rc = PARSE_OK;
    if (!codec || !st) { rc = fail(r, "openjpeg: cannot create a decoder"); goto done; }
    opj_set_error_handler(codec, opj_err_cb, msg);
    opj_set_warning_handler(codec, opj_quiet_cb, NULL);
    opj_set_info_handler(codec, opj_quiet_cb, NULL);
    opj_stream_set_read_function(st, ms_read);
    opj_stream_set_skip_function(st, ms_skip);
    opj_stream_set_seek_function(st, ms_seek);
    opj_stream_set_user_data(st, &ms, NULL);
    opj_stream_set_user_data_length(st, total);
    opj_dparameters_t par;
    opj_set_default_decoder_parameters(&par);
    if (!opj_setup_decoder(codec, &par) || !opj_read_header(st, codec, &img) || !img) {
        rc = fail(r, "corrupt JPEG 2000 pixel data (%s)", msg[0] ? msg : "header");
        goto done;
    }
    {
        size_t w = img->x1 - img->x0, h = img->y1 - img->y0;
        if (w != (size_t)in->cols || h != (size_t)in->rows) {
            rc = fail(r, "JPEG 2000 frame is %zux%zu but Rows/Columns say %dx%d", w, h, in->cols, in->rows);
            goto done;
        }
    }
    if (!opj_decode(codec, st, img) || !opj_end_decompress(codec, st)) {
        rc = fail(r, "corrupt JPEG 2000 pixel data (%s)", msg[0] ? msg : "decode failed");
        goto done;
    }
    if (img->numcomps < 1 || !img->comps[0].data || img->comps[0].w != (OPJ_UINT32)in->cols ||
        img->comps[0].h != (OPJ_UINT32)in->rows || img->comps[0].dx != 1 || img->comps[0].dy != 1) {
        rc = fail(r, "JPEG 2000 component 0 does not match %dx%d", in->cols, in->rows);
        goto done;
    }
    if (img->numcomps != 1) { rc = fail(r, "JPEG 2000 pixel data with %u components; only gray is supported", img->numcomps); goto done; }
    {
        size_t npx = (size_t)in->rows * (size_t)in->cols;
        int32_t *out = malloc(npx * sizeof(int32_t));
        if (!out) { rc = fail(r, "out of memory"); goto done; }
        memcpy(out, img->comps[0].data, npx * sizeof(int32_t));
        r->d->pixels = out;
    }
done:
    if (st) opj_stream_destroy(st);
    if (codec) opj_destroy_codec(codec);
    if (img) opj_image_destroy(img);
    free(cs);
    return rc;
}

/* Checks the pixel module for consistency before any pixel allocation. */
static int check_pixel_module(Rd *r) {
    DicomInfo *in = &r->d->info;
    if (in->rows < 1 || in->cols < 1) return fail(r, "missing or zero Rows/Columns (%d x %d)", in->rows, in->cols);
    if ((size_t)in->rows * (size_t)in->cols > DCM_MAX_PIXELS) return fail(r, "image too large: %d x %d", in->cols, in->rows);
    if (in->samples_per_pixel != 1)
        return fail(r, "%d samples per pixel (%s); only monochrome images are supported", in->samples_per_pixel, in->photometric);
    if (in->photometric[0] && strcmp(in->photometric, "MONOCHROME1") != 0 && strcmp(in->photometric, "MONOCHROME2") != 0)
        return fail(r, "photometric interpretation %s is not supported (MONOCHROME1/2 only)", in->photometric);
    if (in->bits_allocated != 8 && in->bits_allocated != 16)
        return fail(r, "BitsAllocated %d is not supported (8 or 16)", in->bits_allocated);
    if (in->bits_stored < 1 || in->bits_stored > in->bits_allocated)
        return fail(r, "BitsStored %d is inconsistent with BitsAllocated %d", in->bits_stored, in->bits_allocated);
    if (in->high_bit >= in->bits_allocated || in->high_bit + 1 < in->bits_stored)
        return fail(r, "HighBit %d is inconsistent with BitsStored %d / BitsAllocated %d", in->high_bit, in->bits_stored, in->bits_allocated);
    return PARSE_OK;
}

static int parse_buffer(Rd *r) {
    DicomInfo *in = &r->d->info;
    /* defaults for absent tags */
    in->samples_per_pixel = 1;
    in->number_of_frames = 1;
    in->rescale_slope = 1.0;
    in->bits_allocated = 16;
    in->bits_stored = -1;
    in->high_bit = -1;

    if (r->n >= 132 && memcmp(r->b + 128, "DICM", 4) == 0) r->pos = 132;
    else if (r->n >= 4 && memcmp(r->b, "DICM", 4) == 0) r->pos = 4;
    else r->pos = 0;
    if (r->n - r->pos < 8) { r->truncated = 1; return fail(r, "not a DICOM file (too short)"); }

    /* File meta group: explicit VR LE by the standard; tolerate implicit from broken writers. */
    size_t meta_start = r->pos;
    while (r->n - r->pos >= 8 && rd16(r->b + r->pos) == 0x0002) {
        r->explicit_vr = vr_valid(r->b + r->pos + 4);
        uint32_t tag, len;
        char vr[3];
        if (read_elem_header(r, &tag, vr, &len)) return PARSE_ERR;
        if (len == DCM_UNDEF || len > r->n - r->pos) return fail_trunc(r, tag, len == DCM_UNDEF ? 0 : len);
        handle_top(r, tag, vr, r->b + r->pos, len);
        r->pos += len;
    }
    int had_meta = r->pos > meta_start;
    if (!had_meta && r->pos == 0 && !dicom_sniff(r->b, r->n)) return fail(r, "not a DICOM file (no DICM marker, no recognisable first element)");

    const char *ts = in->transfer_syntax;
    if (!ts[0]) {
        /* no meta: guess from the first element */
        r->explicit_vr = r->n - r->pos >= 8 && vr_valid(r->b + r->pos + 4);
        snprintf(in->transfer_syntax, sizeof in->transfer_syntax, "%s", r->explicit_vr ? UID_EXPLICIT_LE : UID_IMPLICIT_LE);
    } else if (strcmp(ts, UID_IMPLICIT_LE) == 0) {
        r->explicit_vr = 0;
    } else if (strcmp(ts, "1.2.840.10008.1.2.2") == 0) {
        return fail(r, "unsupported transfer syntax %s (%s)", ts, dicom_transfer_syntax_name(ts));
    } else {
        r->explicit_vr = 1;   /* explicit LE, deflated, and all encapsulated syntaxes */
    }
    int deflated = strcmp(ts, UID_DEFLATED_LE) == 0;
    uint8_t *inflated = NULL;
    const uint8_t *file_b = r->b;
    size_t file_n = r->n;
    if (deflated) {
        size_t n_out = 0;
        if (inflate_all(r, r->b + r->pos, r->n - r->pos, &inflated, &n_out)) return PARSE_ERR;
        r->b = inflated;
        r->n = n_out;
        r->pos = 0;
    }
    /* Some writers declare explicit VR but write implicit (and vice versa): trust the bytes. */
    if (!deflated && r->n - r->pos >= 8) {
        int looks_explicit = vr_valid(r->b + r->pos + 4);
        if (looks_explicit != r->explicit_vr && rd16(r->b + r->pos) != 0xFFFE) r->explicit_vr = looks_explicit;
    }
    int rc = parse_elements(r, r->n, MODE_TOP);
    if (rc == PARSE_OK && r->partial) rc = fail_trunc(r, TAG_PIXEL_DATA, 8);   /* the prefix ended first */
    if (rc == PARSE_STOP) rc = PARSE_OK;
    else if (rc == PARSE_ITEM_END) rc = fail(r, "corrupt DICOM: unexpected item delimiter at top level");
    if (!rc) {
        r->d->info.laterality = r->image_laterality ? r->image_laterality : r->series_laterality;
        if (in->bits_stored < 0) in->bits_stored = in->bits_allocated;
        if (in->high_bit < 0) in->high_bit = in->bits_stored - 1;
        if (in->has_window != 3) in->has_window = 0;
        else in->has_window = 1;
        if (in->has_voi_lut == 0 && in->voi_lut) in->has_voi_lut = 1;
        if (!r->header_only) {
            if (!r->px.found) rc = fail(r, "no Pixel Data element (7FE0,0010)");
            else rc = check_pixel_module(r);
            if (!rc) {
                int encapsulated_ts = strncmp(ts, "1.2.840.10008.1.2.4.", 20) == 0 || strcmp(ts, "1.2.840.10008.1.2.5") == 0;
                int j2k = strcmp(ts, UID_J2K_LOSSLESS) == 0 || strcmp(ts, UID_J2K) == 0;
                if (r->px.encapsulated && j2k) rc = decode_j2k(r);
                else if (r->px.encapsulated || encapsulated_ts)
                    rc = fail(r, "unsupported transfer syntax %s (%s); convert it first with `gdcmconv --raw`", ts,
                              dicom_transfer_syntax_name(ts));
                else rc = decode_native(r);
            }
        }
    }
    free(r->px.frags);
    r->px.frags = NULL;
    free(inflated);
    r->b = file_b;
    r->n = file_n;
    return rc;
}

int dicom_read_mem(const uint8_t *buf, size_t n, const char *name, Dicom *d, int header_only, Err *e) {
    memset(d, 0, sizeof *d);
    Rd r;
    memset(&r, 0, sizeof r);
    r.b = buf;
    r.n = n;
    r.name = name;
    r.e = e;
    r.d = d;
    r.header_only = header_only;
    if (parse_buffer(&r)) {
        dicom_free(d);
        return 1;
    }
    return 0;
}

/* Reads up to `want` bytes from the start of path (all when want == 0). */
static int read_prefix(const char *path, size_t want, uint8_t **out, size_t *n, size_t *file_size, Err *e) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errno == ENOENT) return err_set(e, "%s: no such file", path);
        return err_set(e, "%s: cannot open (%s)", path, strerror(errno));
    }
    if (fseek(f, 0, SEEK_END) != 0) { fclose(f); return err_set(e, "%s: cannot seek (not a regular file?)", path); }
    long sz = ftell(f);
    if (sz < 0 || fseek(f, 0, SEEK_SET) != 0) { fclose(f); return err_set(e, "%s: cannot determine file size", path); }
    if (sz == 0) { fclose(f); return err_set(e, "%s: empty file", path); }
    if ((size_t)sz > DCM_MAX_FILE) { fclose(f); return err_set(e, "%s: file too large (%ld bytes)", path, sz); }
    size_t k = want && want < (size_t)sz ? want : (size_t)sz;
    uint8_t *buf = malloc(k);
    if (!buf) { fclose(f); return err_set(e, "%s: out of memory", path); }
    size_t got = fread(buf, 1, k, f);
    int rerr = ferror(f);
    fclose(f);
    if (got != k || rerr) { free(buf); return err_set(e, "%s: read error", path); }
    *out = buf;
    *n = k;
    *file_size = (size_t)sz;
    return 0;
}

int dicom_read(const char *path, Dicom *d, Err *e) {
    memset(d, 0, sizeof *d);
    uint8_t *buf;
    size_t n, sz;
    if (read_prefix(path, 0, &buf, &n, &sz, e)) return 1;
    int rc = dicom_read_mem(buf, n, path, d, 0, e);
    free(buf);
    return rc;
}

int dicom_read_header(const char *path, Dicom *d, Err *e) {
    memset(d, 0, sizeof *d);
    /* Headers are small: read a prefix and grow it only if the header runs past it. */
    for (size_t want = 1 << 16;; want *= 4) {
        uint8_t *buf;
        size_t n, sz;
        if (read_prefix(path, want, &buf, &n, &sz, e)) return 1;
        Rd r;
        memset(&r, 0, sizeof r);
        r.b = buf;
        r.n = n;
        r.name = path;
        r.e = e;
        r.d = d;
        r.header_only = 1;
        r.partial = n < sz;
        int rc = parse_buffer(&r);
        free(buf);
        if (!rc) return 0;
        dicom_free(d);
        if (!(r.truncated && n < sz)) return 1;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* rendering */

double dicom_voi(double x, double c, double w, VoiFunction f) {
    switch (f) {
    case VOI_SIGMOID:
        return 1.0 / (1.0 + exp(-4.0 * (x - c) / w));
    case VOI_LINEAR_EXACT:
        if (x <= c - w / 2) return 0.0;
        if (x > c + w / 2) return 1.0;
        return (x - c) / w + 0.5;
    case VOI_LINEAR:
    default:
        /* PS3.3 C.11.2.1.2.1: centre shifted by 0.5, width reduced by 1 (w >= 1) */
        if (x <= c - 0.5 - (w - 1) / 2) return 0.0;
        if (x > c - 0.5 + (w - 1) / 2) return 1.0;
        return (x - (c - 0.5)) / (w - 1) + 0.5;
    }
}

static int is_padding(const DicomInfo *in, int32_t s) {
    if (!in->has_padding) return 0;
    if (!in->has_padding_limit) return s == in->padding_value;
    int32_t lo = in->padding_value < in->padding_limit ? in->padding_value : in->padding_limit;
    int32_t hi = in->padding_value < in->padding_limit ? in->padding_limit : in->padding_value;
    return s >= lo && s <= hi;
}

/* Builds lut[s - smin] in [0, 1] for every stored value s in [smin, smax]: the whole pipeline
 * (modality, VOI, inversion, padding) then costs one lookup per pixel. */
static int render_lut(const Dicom *d, const DicomRenderOpts *o, float **lut_out, int32_t *smin_out) {
    const DicomInfo *in = &d->info;
    size_t npx = (size_t)in->rows * (size_t)in->cols;
    int32_t smin = INT32_MAX, smax = INT32_MIN;
    for (size_t i = 0; i < npx; i++) {
        int32_t s = d->pixels[i];
        smin = s < smin ? s : smin;
        smax = s > smax ? s : smax;
    }
    if ((int64_t)smax - smin > (1 << 24)) return 2;   /* only J2K with absurd precision gets here */
    size_t nl = (size_t)((int64_t)smax - smin + 1);
    float *lut = malloc(nl * sizeof(float));
    if (!lut) return 1;
    double slope = in->rescale_slope, icpt = in->rescale_intercept;
    int mode = o->window;
    double lo = 0, hi = 1;   /* modality-value range mapped linearly to [0, 1] */
    int use_lut = 0, use_window = 0;
    if (mode == DICOM_WINDOW_AUTO && in->has_voi_lut && in->voi_lut && in->voi_lut_n > 0) use_lut = 1;
    else if (mode == DICOM_WINDOW_AUTO && in->has_window &&
             (in->voi_function == VOI_LINEAR ? in->window_width >= 1 : in->window_width > 0)) use_window = 1;
    else if (mode == DICOM_WINDOW_FULL) {
        double a = in->pixel_representation ? -(double)(1 << (in->bits_stored - 1)) : 0;
        double b = in->pixel_representation ? (double)((1 << (in->bits_stored - 1)) - 1) : (double)((1u << in->bits_stored) - 1);
        lo = a * slope + icpt;
        hi = b * slope + icpt;
    } else {
        /* min-max over the image, ignoring padding values */
        int32_t a = INT32_MAX, b = INT32_MIN;
        for (size_t i = 0; i < npx; i++) {
            int32_t s = d->pixels[i];
            if (is_padding(in, s)) continue;
            a = s < a ? s : a;
            b = s > b ? s : b;
        }
        if (a > b) a = b = smin;
        lo = a * slope + icpt;
        hi = b * slope + icpt;
    }
    if (lo > hi) { double t = lo; lo = hi; hi = t; }
    int invert = !o->no_invert && (strcmp(in->photometric, "MONOCHROME1") == 0 || in->presentation_lut_inverse);
    double lut_max = (double)((1u << in->voi_lut_bits) - 1u);
    for (size_t k = 0; k < nl; k++) {
        int32_t s = smin + (int32_t)k;
        double x = s * slope + icpt, y;
        if (use_lut) {
            double idx = floor(x) - in->voi_lut_first;
            size_t j = idx <= 0 ? 0 : idx >= in->voi_lut_n - 1 ? (size_t)in->voi_lut_n - 1 : (size_t)idx;
            y = in->voi_lut[j] / lut_max;
            if (y > 1) y = 1;
        } else if (use_window) {
            y = dicom_voi(x, in->window_center, in->window_width, in->voi_function);
        } else {
            y = hi > lo ? (x - lo) / (hi - lo) : 0.0;
            y = y < 0 ? 0 : y > 1 ? 1 : y;
        }
        if (invert) y = 1.0 - y;
        if (o->zero_padding && is_padding(in, s)) y = 0.0;
        lut[k] = (float)y;
    }
    *lut_out = lut;
    *smin_out = smin;
    return 0;
}

static DicomRenderOpts render_defaults(const DicomRenderOpts *o) {
    DicomRenderOpts r = {0};
    if (o) r = *o;
    if (r.out_bits == 0) r.out_bits = 16;
    return r;
}

int dicom_render_f32(const Dicom *d, const DicomRenderOpts *opts, float *out, Err *e) {
    if (!d->pixels) return err_set(e, "dicom_render: no pixels (header-only read?)");
    DicomRenderOpts o = render_defaults(opts);
    float *lut;
    int32_t smin;
    int lr = render_lut(d, &o, &lut, &smin);
    if (lr) return err_set(e, "dicom_render: %s", lr == 2 ? "pixel values span more than 2^24 levels" : "out of memory");
    size_t npx = (size_t)d->info.rows * (size_t)d->info.cols;
    for (size_t i = 0; i < npx; i++) out[i] = lut[d->pixels[i] - smin];
    free(lut);
    return 0;
}

int dicom_render(const Dicom *d, const DicomRenderOpts *opts, Image *out, Err *e) {
    memset(out, 0, sizeof *out);
    if (!d->pixels) return err_set(e, "dicom_render: no pixels (header-only read?)");
    DicomRenderOpts o = render_defaults(opts);
    if (o.out_bits != 8 && o.out_bits != 16) return err_set(e, "dicom_render: out_bits must be 8 or 16, not %d", o.out_bits);
    float *lut;
    int32_t smin;
    int lr = render_lut(d, &o, &lut, &smin);
    if (lr) return err_set(e, "dicom_render: %s", lr == 2 ? "pixel values span more than 2^24 levels" : "out of memory");
    Image im;
    if (image_alloc(&im, d->info.cols, d->info.rows, o.out_bits, e)) { free(lut); return 1; }
    float m = (float)image_maxval(&im);
    size_t npx = (size_t)d->info.rows * (size_t)d->info.cols;
    for (size_t i = 0; i < npx; i++) im.px[i] = (uint16_t)(lut[d->pixels[i] - smin] * m + 0.5f);
    free(lut);
    *out = im;
    return 0;
}

int dicom_load_image(const char *path, const DicomRenderOpts *o, Image *out, DicomInfo *info, Err *e) {
    memset(out, 0, sizeof *out);
    Dicom d;
    if (dicom_read(path, &d, e)) return 1;
    int rc = dicom_render(&d, o, out, e);
    if (!rc && info) {
        *info = d.info;
        info->voi_lut = NULL;
        info->has_voi_lut = 0;
    }
    dicom_free(&d);
    return rc;
}

int dicom_stored_image(const Dicom *d, Image *out, Err *e) {
    memset(out, 0, sizeof *out);
    if (!d->pixels) return err_set(e, "dicom_stored_image: no pixels");
    if (d->info.pixel_representation != 0) return err_set(e, "dicom_stored_image: signed pixel data");
    if (d->info.bits_stored < 1 || d->info.bits_stored > 16) return err_set(e, "dicom_stored_image: BitsStored %d", d->info.bits_stored);
    Image im;
    if (image_alloc(&im, d->info.cols, d->info.rows, d->info.bits_stored, e)) return 1;
    size_t npx = (size_t)d->info.rows * (size_t)d->info.cols;
    uint32_t m = image_maxval(&im);
    for (size_t i = 0; i < npx; i++) {
        int32_t v = d->pixels[i];
        im.px[i] = (uint16_t)(v < 0 ? 0 : (uint32_t)v > m ? m : (uint32_t)v);
    }
    *out = im;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* writer */

typedef struct Buf {
    uint8_t *b;
    size_t n, cap;
    int oom;
} Buf;

static void buf_put(Buf *w, const void *p, size_t n) {
    if (w->oom) return;
    if (w->n + n > w->cap) {
        size_t cap = w->cap ? w->cap : 4096;
        while (cap < w->n + n) cap *= 2;
        uint8_t *nb = realloc(w->b, cap);
        if (!nb) { w->oom = 1; return; }
        w->b = nb;
        w->cap = cap;
    }
    memcpy(w->b + w->n, p, n);
    w->n += n;
}

static void put16(Buf *w, uint16_t v) { uint8_t b[2] = {(uint8_t)v, (uint8_t)(v >> 8)}; buf_put(w, b, 2); }
static void put32(Buf *w, uint32_t v) {
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    buf_put(w, b, 4);
}

/* Explicit VR LE element header. */
static void put_header(Buf *w, uint32_t tag, const char *vr, uint32_t len) {
    put16(w, (uint16_t)(tag >> 16));
    put16(w, (uint16_t)tag);
    buf_put(w, vr, 2);
    if (vr_long(vr)) { put16(w, 0); put32(w, len); }
    else put16(w, (uint16_t)len);
}

/* Text element, padded to even length (UI with NUL, others with a space). */
static void put_str(Buf *w, uint32_t tag, const char *vr, const char *s) {
    size_t n = strlen(s);
    size_t len = n + (n & 1);
    put_header(w, tag, vr, (uint32_t)len);
    buf_put(w, s, n);
    if (n & 1) buf_put(w, vr[0] == 'U' && vr[1] == 'I' ? "\0" : " ", 1);
}

static void put_us(Buf *w, uint32_t tag, uint16_t v) { put_header(w, tag, "US", 2); put16(w, v); }

/* A DS value of at most 16 characters that reads back as the closest decimal. */
static void format_ds(char out[24], double v) {
    for (int prec = 15; prec >= 1; prec--) {
        snprintf(out, 24, "%.*g", prec, v);
        if (strlen(out) <= 16) return;
    }
    snprintf(out, 24, "0");
}

/* Shortest DS text that reads back as the same float (pixel spacing is stored as float). */
static void format_ds_float(char out[24], float v) {
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(out, 24, "%.*g", prec, (double)v);
        if ((float)strtod(out, NULL) == v && strlen(out) <= 16) return;
    }
    format_ds(out, v);
}

static void put_spacing(Buf *w, uint32_t tag, const float sp[2]) {
    char a[24], b[24], s[56];
    format_ds_float(a, sp[0]);
    format_ds_float(b, sp[1]);
    snprintf(s, sizeof s, "%s\\%s", a, b);
    put_str(w, tag, "DS", s);
}

static void put_ds(Buf *w, uint32_t tag, double v) {
    char s[24];
    format_ds(s, v);
    put_str(w, tag, "DS", s);
}

static uint64_t fnv1a(uint64_t h, const void *p, size_t n) {
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) { h ^= b[i]; h *= 0x100000001b3ull; }
    return h;
}

void dicom_make_uid(char out[DICOM_UID_LEN], const char *root, uint64_t a, uint64_t b) {
    if (root && root[0]) {
        snprintf(out, DICOM_UID_LEN, "%s.%llu.%llu", root, (unsigned long long)a, (unsigned long long)b);
        return;
    }
    /* decimal of the 128-bit integer a:b by repeated division by 10 */
    unsigned __int128 x = ((unsigned __int128)a << 64) | b;
    char digits[48];
    int k = 0;
    do { digits[k++] = (char)('0' + (int)(x % 10)); x /= 10; } while (x);
    int o = snprintf(out, DICOM_UID_LEN, "2.25.");
    while (k && o < DICOM_UID_LEN - 1) out[o++] = digits[--k];
    out[o] = '\0';
}

int dicom_write_mem(const DicomInfo *info, const Image *im, uint8_t **out, size_t *n, Err *e) {
    *out = NULL;
    *n = 0;
    if (!im->px || im->w < 1 || im->h < 1) return err_set(e, "dicom_write: empty image");
    int bs = info->bits_stored;
    if (bs < 1 || bs > 16) return err_set(e, "dicom_write: BitsStored %d out of range 1..16", bs);
    int mono1 = strcmp(info->photometric, "MONOCHROME1") == 0;
    if (!mono1 && info->photometric[0] && strcmp(info->photometric, "MONOCHROME2") != 0)
        return err_set(e, "dicom_write: photometric '%s' (MONOCHROME1 or MONOCHROME2 only)", info->photometric);
    size_t npx = (size_t)im->w * (size_t)im->h;
    uint32_t maxv = (1u << bs) - 1u;
    for (size_t i = 0; i < npx; i++)
        if (im->px[i] > maxv) return err_set(e, "dicom_write: pixel value %u exceeds BitsStored %d", im->px[i], bs);
    int ba = bs <= 8 ? 8 : 16;

    /* UIDs: given, or derived from the patient id and the pixels (deterministic) */
    uint64_t hp = fnv1a(0xcbf29ce484222325ull, info->patient_id, strlen(info->patient_id));
    uint64_t hx = fnv1a(hp, im->px, npx * sizeof(uint16_t));
    hx = fnv1a(hx, info->view, strlen(info->view));
    hx = fnv1a(hx, &info->laterality, 1);
    char study[DICOM_UID_LEN], series[DICOM_UID_LEN], sop[DICOM_UID_LEN];
    if (info->study_uid[0]) snprintf(study, sizeof study, "%s", info->study_uid);
    else dicom_make_uid(study, NULL, hp, 1);
    if (info->series_uid[0]) snprintf(series, sizeof series, "%s", info->series_uid);
    else dicom_make_uid(series, NULL, hx, 2);
    if (info->sop_instance_uid[0]) snprintf(sop, sizeof sop, "%s", info->sop_instance_uid);
    else dicom_make_uid(sop, NULL, hx, 3);
    const char *sop_class = info->sop_class_uid[0] ? info->sop_class_uid : UID_DM_PRESENTATION;

    Buf w = {0};
    uint8_t pre[128] = {0};
    buf_put(&w, pre, 128);
    buf_put(&w, "DICM", 4);
    /* meta group, its length patched once known */
    put_header(&w, TAG(0x0002, 0x0000), "UL", 4);
    size_t glen_at = w.n;
    put32(&w, 0);
    size_t meta0 = w.n;
    put_header(&w, TAG(0x0002, 0x0001), "OB", 2);
    buf_put(&w, "\0\1", 2);
    put_str(&w, TAG(0x0002, 0x0002), "UI", sop_class);
    put_str(&w, TAG(0x0002, 0x0003), "UI", sop);
    put_str(&w, TAG(0x0002, 0x0010), "UI", UID_EXPLICIT_LE);
    put_str(&w, TAG(0x0002, 0x0012), "UI", UID_IMPLEMENTATION);
    put_str(&w, TAG(0x0002, 0x0013), "SH", "VERSAMAMMO_1");
    uint32_t glen = (uint32_t)(w.n - meta0);
    if (!w.oom) memcpy(w.b + glen_at, (uint8_t[4]){(uint8_t)glen, (uint8_t)(glen >> 8), (uint8_t)(glen >> 16), (uint8_t)(glen >> 24)}, 4);

    /* dataset, ascending tags */
    char lat[2] = {info->laterality == 'L' || info->laterality == 'R' ? info->laterality : 0, 0};
    put_str(&w, TAG(0x0008, 0x0008), "CS", "DERIVED\\PRIMARY");
    put_str(&w, TAG(0x0008, 0x0016), "UI", sop_class);
    put_str(&w, TAG(0x0008, 0x0018), "UI", sop);
    put_str(&w, TAG(0x0008, 0x0020), "DA", "");   /* type-2 attributes, present but empty */
    put_str(&w, TAG(0x0008, 0x0030), "TM", "");
    put_str(&w, TAG(0x0008, 0x0050), "SH", "");
    put_str(&w, TAG(0x0008, 0x0060), "CS", info->modality[0] ? info->modality : "MG");
    put_str(&w, TAG(0x0008, 0x0068), "CS", info->presentation_intent[0] ? info->presentation_intent : "FOR PRESENTATION");
    put_str(&w, TAG(0x0008, 0x0070), "LO", info->manufacturer);
    put_str(&w, TAG(0x0008, 0x0090), "PN", "");
    if (info->series_description[0]) put_str(&w, TAG(0x0008, 0x103E), "LO", info->series_description);
    put_str(&w, TAG(0x0010, 0x0010), "PN", info->patient_id);
    put_str(&w, TAG(0x0010, 0x0020), "LO", info->patient_id);
    put_str(&w, TAG(0x0010, 0x0030), "DA", "");
    put_str(&w, TAG(0x0010, 0x0040), "CS", "F");
    if (info->pixel_spacing[0] > 0 && info->pixel_spacing[1] > 0) put_spacing(&w, TAG(0x0018, 0x1164), info->pixel_spacing);
    if (info->view[0]) put_str(&w, TAG(0x0018, 0x5101), "CS", info->view);
    put_str(&w, TAG(0x0020, 0x000D), "UI", study);
    put_str(&w, TAG(0x0020, 0x000E), "UI", series);
    put_str(&w, TAG(0x0020, 0x0010), "SH", "");
    put_str(&w, TAG(0x0020, 0x0011), "IS", "1");
    put_str(&w, TAG(0x0020, 0x0013), "IS", "1");
    put_str(&w, TAG(0x0020, 0x0020), "CS", info->patient_orientation);
    if (lat[0]) put_str(&w, TAG(0x0020, 0x0060), "CS", lat);
    put_str(&w, TAG(0x0020, 0x0062), "CS", lat);
    put_us(&w, TAG(0x0028, 0x0002), 1);
    put_str(&w, TAG(0x0028, 0x0004), "CS", mono1 ? "MONOCHROME1" : "MONOCHROME2");
    put_us(&w, TAG(0x0028, 0x0010), (uint16_t)im->h);
    put_us(&w, TAG(0x0028, 0x0011), (uint16_t)im->w);
    if (info->pixel_spacing[0] > 0 && info->pixel_spacing[1] > 0) put_spacing(&w, TAG(0x0028, 0x0030), info->pixel_spacing);
    put_us(&w, TAG(0x0028, 0x0100), (uint16_t)ba);
    put_us(&w, TAG(0x0028, 0x0101), (uint16_t)bs);
    put_us(&w, TAG(0x0028, 0x0102), (uint16_t)(bs - 1));
    put_us(&w, TAG(0x0028, 0x0103), 0);
    if (info->has_padding) put_us(&w, TAG(0x0028, 0x0120), (uint16_t)info->padding_value);
    if (info->has_window) {
        put_ds(&w, TAG(0x0028, 0x1050), info->window_center);
        put_ds(&w, TAG(0x0028, 0x1051), info->window_width);
    }
    double slope = info->rescale_slope != 0 ? info->rescale_slope : 1.0;
    put_ds(&w, TAG(0x0028, 0x1052), info->rescale_intercept);
    put_ds(&w, TAG(0x0028, 0x1053), slope);
    put_str(&w, TAG(0x0028, 0x1054), "LO", "US");
    if (info->has_window)
        put_str(&w, TAG(0x0028, 0x1056), "CS",
                info->voi_function == VOI_SIGMOID ? "SIGMOID" : info->voi_function == VOI_LINEAR_EXACT ? "LINEAR_EXACT" : "LINEAR");
    put_str(&w, TAG(0x2050, 0x0020), "CS", mono1 ? "INVERSE" : "IDENTITY");
    size_t pix_bytes = npx * (size_t)(ba / 8);
    size_t pad = pix_bytes & 1;
    if (pix_bytes + pad > 0xFFFFFFFEu) { free(w.b); return err_set(e, "dicom_write: image too large"); }
    put_header(&w, TAG_PIXEL_DATA, ba == 8 ? "OB" : "OW", (uint32_t)(pix_bytes + pad));
    if (ba == 8) {
        for (size_t i = 0; i < npx; i++) { uint8_t v = (uint8_t)im->px[i]; buf_put(&w, &v, 1); }
        if (pad) buf_put(&w, "\0", 1);
    } else {
        size_t start = w.n;
        buf_put(&w, im->px, pix_bytes);   /* reserve, then write little endian explicitly */
        if (!w.oom)
            for (size_t i = 0; i < npx; i++) {
                w.b[start + 2 * i] = (uint8_t)im->px[i];
                w.b[start + 2 * i + 1] = (uint8_t)(im->px[i] >> 8);
            }
    }
    if (w.oom) { free(w.b); return err_set(e, "dicom_write: out of memory"); }
    *out = w.b;
    *n = w.n;
    return 0;
}

int dicom_write(const char *path, const DicomInfo *info, const Image *im, Err *e) {
    uint8_t *buf;
    size_t n;
    Err ee;
    if (dicom_write_mem(info, im, &buf, &n, &ee)) return err_set(e, "%s: %s", path, ee.msg);
    FILE *f = fopen(path, "wb");
    if (!f) { free(buf); return err_set(e, "%s: cannot create (%s)", path, strerror(errno)); }
    size_t put = fwrite(buf, 1, n, f);
    int cerr = fclose(f);
    free(buf);
    if (put != n || cerr != 0) return err_set(e, "%s: write error", path);
    return 0;
}
