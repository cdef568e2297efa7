/*
 * tests/fuzz/h5_harness.h — HDF5 files from fuzz inputs, for the readers of prepared datasets
 * (fuzz_prepared.c), checkpoints (fuzz_checkpoint.c) and teacher features (fuzz_features.c).
 *
 * Mutating the bytes of an HDF5 file mostly exercises libhdf5's own format decoder (checksums,
 * B-trees, heaps), not our readers, and the files that survive rarely have a malformed *shape*.
 * So an input has two forms:
 *   - bytes starting with the HDF5 signature "\x89HDF\r\n\x1a\n": written to the scratch file as
 *     they are (seeds: real files written by the project).  Only with VERSA_FUZZ_H5_RAW=1:
 *     this mode mostly finds bugs of libhdf5 itself (1.10.8 reads some corrupt object headers
 *     out of bounds, docs/robustness.md), which this project cannot fix and which would stop
 *     every `make fuzz` run; otherwise such inputs are skipped;
 *   - otherwise a small text description, one object per line, built with the HDF5 API into a
 *     well-formed file whose *content* is arbitrary — which is what our readers must validate:
 *
 *       G <path>                                        a group (parents made as needed)
 *       D <path> <type> <dims> [chunk=<c1,c2..>] [gzip] [= <values>]    a dataset
 *       A <object path> <name> <type> <dims> [= <values>]               an attribute
 *       L <path> <target>                               a soft link (may dangle)
 *
 *     type:   i8 u8 i16 u16 i32 u32 i64 u64 f32 f64 | s<N> (fixed string, NUL-terminated) |
 *             z<N> (fixed string, NUL-padded: may fill all N bytes) | vs (variable-length
 *             string) | cpd (compound {int32 a; float32 b})
 *     dims:   scalar | null | d0,d1,... (up to 8 dims, each up to 2^62: a huge dataset is
 *             declared with chunked storage and never written, so it costs nothing on disk but
 *             reads as a huge array)
 *     values: numbers separated by ',' (strings by '|', "\n" is a newline), repeated to fill;
 *             written only when the dataset has at most 65536 elements; without values a
 *             dataset reads as zeros.
 *   Unparsable lines are skipped.
 *
 * Property (every such target): every HDF5 object a reader opened is closed again when it returns,
 * success or failure (a leaked handle keeps the file open; a long training run would run out).
 */
#ifndef VERSA_TESTS_FUZZ_H5_HARNESS_H
#define VERSA_TESTS_FUZZ_H5_HARNESS_H

#include "tests/fuzz/fuzz.h"
#include <hdf5.h>
#include <inttypes.h>

#define H5F_MAX_WRITE ((uint64_t)1 << 16)
#define H5F_MAX_DIMS 8

static inline void h5f_quiet(void) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    fuzz_h5_reuse_free_lists();
}

/* The HDF5 type for a type token (caller closes), or -1. */
static inline hid_t h5f_type(const char *tok, int *is_str, int *is_vlen) {
    static const struct {
        const char *name;
        hid_t *id;
    } num[] = {{"i8", &H5T_NATIVE_INT8_g},   {"u8", &H5T_NATIVE_UINT8_g},   {"i16", &H5T_NATIVE_INT16_g},
               {"u16", &H5T_NATIVE_UINT16_g}, {"i32", &H5T_NATIVE_INT32_g}, {"u32", &H5T_NATIVE_UINT32_g},
               {"i64", &H5T_NATIVE_INT64_g}, {"u64", &H5T_NATIVE_UINT64_g}, {"f32", &H5T_NATIVE_FLOAT_g},
               {"f64", &H5T_NATIVE_DOUBLE_g}};
    *is_str = *is_vlen = 0;
    H5open();
    for (size_t k = 0; k < sizeof num / sizeof num[0]; k++)
        if (!strcmp(tok, num[k].name)) return H5Tcopy(*num[k].id);
    if ((tok[0] == 's' || tok[0] == 'z') && tok[1] >= '0' && tok[1] <= '9') {
        long n = atol(tok + 1);
        if (n < 1 || n > 4096) return -1;
        hid_t t = H5Tcopy(H5T_C_S1);
        H5Tset_size(t, (size_t)n);
        H5Tset_strpad(t, tok[0] == 's' ? H5T_STR_NULLTERM : H5T_STR_NULLPAD);
        *is_str = 1;
        return t;
    }
    if (!strcmp(tok, "vs")) {
        hid_t t = H5Tcopy(H5T_C_S1);
        H5Tset_size(t, H5T_VARIABLE);
        *is_str = *is_vlen = 1;
        return t;
    }
    if (!strcmp(tok, "cpd")) {
        hid_t t = H5Tcreate(H5T_COMPOUND, 8);
        H5Tinsert(t, "a", 0, H5T_NATIVE_INT32);
        H5Tinsert(t, "b", 4, H5T_NATIVE_FLOAT);
        return t;
    }
    return -1;
}

/* dims token -> a dataspace (caller closes) and its element count (saturating), or -1 */
static inline hid_t h5f_space(const char *tok, int *rank, hsize_t *dims, uint64_t *count) {
    *rank = 0;
    *count = 1;
    if (!strcmp(tok, "scalar")) return H5Screate(H5S_SCALAR);
    if (!strcmp(tok, "null")) {
        *count = 0;
        return H5Screate(H5S_NULL);
    }
    const char *p = tok;
    while (*p && *rank < H5F_MAX_DIMS) {
        char *end;
        unsigned long long v = strtoull(p, &end, 10);
        if (end == p || v > ((unsigned long long)1 << 62)) return -1;
        dims[(*rank)++] = (hsize_t)v;
        *count = v && *count > UINT64_MAX / v ? UINT64_MAX : *count * v;
        p = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return -1;
    }
    if (*rank == 0) return -1;
    return H5Screate_simple(*rank, dims, NULL);
}

/* Parent groups of path (exclusive), created as needed. */
static inline void h5f_parents(hid_t f, const char *path) {
    char tmp[512];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s", path) >= sizeof tmp) return;
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (H5Lexists(f, tmp, H5P_DEFAULT) <= 0) {
            hid_t g = H5Gcreate2(f, tmp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
            if (g >= 0) H5Gclose(g);
        }
        *p = '/';
    }
}

/* "\\n" -> newline in place (string values are one line of the description) */
static inline void h5f_unescape(char *s) {
    char *o = s;
    for (const char *p = s; *p; p++) {
        if (p[0] == '\\' && p[1] == 'n') {
            *o++ = '\n';
            p++;
        } else {
            *o++ = *p;
        }
    }
    *o = 0;
}

/* Fills buf (count elements of type t) from the value text, cycling. */
static inline void *h5f_values(hid_t t, int is_str, int is_vlen, uint64_t count, const char *vals, char ***vlen_out) {
    size_t esz = H5Tget_size(t);
    *vlen_out = NULL;
    if (count == 0) return NULL;
    if (is_vlen) {
        char **v = calloc(count, sizeof *v);
        const char *p = vals;
        for (uint64_t i = 0; i < count; i++) {
            if (!*p) p = vals;
            const char *q = strchr(p, '|');
            size_t l = q ? (size_t)(q - p) : strlen(p);
            v[i] = fuzz_strndup((const uint8_t *)p, l);
            h5f_unescape(v[i]);
            p = q ? q + 1 : p + l;
        }
        *vlen_out = v;
        return v;
    }
    uint8_t *buf = calloc(count, esz);
    if (!buf) abort();
    const char *p = vals;
    for (uint64_t i = 0; i < count; i++) {
        if (!*p) p = vals;
        uint8_t *dst = buf + i * esz;
        if (is_str) {
            const char *q = strchr(p, '|');
            size_t l = q ? (size_t)(q - p) : strlen(p);
            char *u = fuzz_strndup((const uint8_t *)p, l);
            h5f_unescape(u);
            size_t ul = strlen(u);
            memcpy(dst, u, ul < esz ? ul : esz);
            free(u);
            p = q ? q + 1 : p + l;
            continue;
        }
        char *end;
        double d = strtod(p, &end);
        long long ll = strtoll(p, NULL, 10);
        if (end == p) {   /* not a number: skip one character */
            p = *p ? p + 1 : p;
            d = 0;
            ll = 0;
        } else {
            p = *end == ',' ? end + 1 : end;
        }
        H5T_class_t cl = H5Tget_class(t);
        if (cl == H5T_FLOAT && esz == 4) {
            float x = (float)d;
            memcpy(dst, &x, 4);
        } else if (cl == H5T_FLOAT) {
            memcpy(dst, &d, 8);
        } else if (cl == H5T_COMPOUND) {
            int32_t a = (int32_t)ll;
            float b = (float)d;
            memcpy(dst, &a, 4);
            memcpy(dst + 4, &b, 4);
        } else {   /* integers: the low bytes of the value (little-endian host) */
            memcpy(dst, &ll, esz <= 8 ? esz : 8);
        }
    }
    return buf;
}

static inline void h5f_free_values(void *buf, char **vlen, uint64_t count) {
    if (vlen) {
        for (uint64_t i = 0; i < count; i++) free(vlen[i]);
        free(vlen);
    } else {
        free(buf);
    }
}

/* One description line into the open file f. */
static inline void h5f_line(hid_t f, char *line) {
    char *vals = strstr(line, " = ");
    if (vals) {
        *vals = 0;
        vals += 3;
    }
    char *tok[8];
    int nt = 0;
    for (char *save = NULL, *t = strtok_r(line, " \t\r", &save); t && nt < 8; t = strtok_r(NULL, " \t\r", &save))
        tok[nt++] = t;
    if (nt < 2 || tok[1][0] != '/' || strlen(tok[1]) > 400) return;
    if (!strcmp(tok[0], "G")) {
        h5f_parents(f, tok[1]);
        hid_t g = H5Gcreate2(f, tok[1], H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (g >= 0) H5Gclose(g);
        return;
    }
    if (!strcmp(tok[0], "L") && nt >= 3) {
        h5f_parents(f, tok[1]);
        H5Lcreate_soft(tok[2], f, tok[1], H5P_DEFAULT, H5P_DEFAULT);
        return;
    }
    int is_d = !strcmp(tok[0], "D"), is_a = !strcmp(tok[0], "A");
    if (!(is_d && nt >= 4) && !(is_a && nt >= 5)) return;
    int ti = is_d ? 2 : 3, is_str, is_vlen, rank;
    hsize_t dims[H5F_MAX_DIMS], chunk[H5F_MAX_DIMS];
    uint64_t count;
    hid_t t = h5f_type(tok[ti], &is_str, &is_vlen);
    if (t < 0) return;
    hid_t sp = h5f_space(tok[ti + 1], &rank, dims, &count);
    if (sp < 0) {
        H5Tclose(t);
        return;
    }
    hid_t obj = -1, dcpl = H5Pcreate(H5P_DATASET_CREATE);
    int chunked = 0;
    if (is_d) {
        for (int k = ti + 2; k < nt; k++) {
            if (!strncmp(tok[k], "chunk=", 6)) {
                int cr = 0;
                uint64_t cc;
                hid_t cs = h5f_space(tok[k] + 6, &cr, chunk, &cc);
                if (cs >= 0) H5Sclose(cs);
                if (cr == rank && rank > 0 && H5Pset_chunk(dcpl, rank, chunk) >= 0) chunked = 1;
            } else if (!strcmp(tok[k], "gzip") && chunked) {
                H5Pset_deflate(dcpl, 1);
            }
        }
        if (!chunked && rank > 0 && count > H5F_MAX_WRITE) {
            /* huge: chunked with unlimited dims, never written */
            hsize_t maxd[H5F_MAX_DIMS];
            for (int k = 0; k < rank; k++) {
                maxd[k] = H5S_UNLIMITED;
                chunk[k] = 1;
            }
            H5Sset_extent_simple(sp, rank, dims, maxd);
            H5Pset_chunk(dcpl, rank, chunk);
        }
        h5f_parents(f, tok[1]);
        obj = H5Dcreate2(f, tok[1], t, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    } else {
        hid_t o = H5Oopen(f, tok[1], H5P_DEFAULT);
        if (o >= 0) {
            obj = H5Acreate2(o, tok[2], t, sp, H5P_DEFAULT, H5P_DEFAULT);
            H5Oclose(o);
        }
    }
    if (obj >= 0 && vals && count <= H5F_MAX_WRITE) {
        char **vl;
        void *buf = h5f_values(t, is_str, is_vlen, count, vals, &vl);
        if (buf) {
            if (is_d) H5Dwrite(obj, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
            else H5Awrite(obj, t, buf);
        }
        h5f_free_values(buf, vl, count);
    }
    if (obj >= 0) {
        if (is_d) H5Dclose(obj);
        else H5Aclose(obj);
    }
    H5Pclose(dcpl);
    H5Sclose(sp);
    H5Tclose(t);
}

/* Writes the input as an HDF5 file at path (raw bytes or a built description); returns 0 when
 * the input is to be skipped (raw bytes without VERSA_FUZZ_H5_RAW=1). */
static inline int h5f_build(const uint8_t *data, size_t n, const char *path) {
    static const uint8_t sig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
    h5f_quiet();
    if (n >= 8 && !memcmp(data, sig, 8)) {
        const char *raw = getenv("VERSA_FUZZ_H5_RAW");
        if (!raw || strcmp(raw, "1") != 0) return 0;
        FILE *fp = fopen(path, "wb");
        if (!fp || fwrite(data, 1, n, fp) != n || fclose(fp) != 0) abort();
        return 1;
    }
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) {
        fprintf(stderr, "fuzz: cannot create %s (an HDF5 object of the previous input still open?)\n", path);
        abort();
    }
    char *text = fuzz_strndup(data, n);
    for (char *save = NULL, *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
        h5f_line(f, line);
    free(text);
    H5Fclose(f);
    return 1;
}

/* No HDF5 object may stay open after a reader returned. */
static inline void h5f_check_closed(const char *who) {
    ssize_t open = H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL);
    if (open > 0) fuzz_fail("%s left %zd HDF5 object(s) open", who, open);
}

#endif
