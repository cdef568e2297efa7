/*
 * fuzz_xlsx.c — the .xlsx reader (data/convert_xlsx.c: zip central directory, stored / deflated
 * entries, sharedStrings.xml and sheet1.xml scanned into CSV text) that CMMD's clinical table
 * goes through.
 * Input, two forms:
 *   - bytes starting with "PK": a whole .xlsx (zip) file, for the container code;
 *   - otherwise XML parts cut at "=====" lines: part 0 = xl/sharedStrings.xml, part 1 =
 *     xl/worksheets/sheet1.xml, packed here into a valid zip (shared strings deflated, the sheet
 *     stored) so mutations reach the XML scanning instead of failing the zip checks.
 * Seeds: the parts of tests/data/fixtures/cmmd/CMMD_clinicaldata_revision.xlsx and the file.
 */
#include "tests/fuzz/fuzz.h"
#include "data/prepared.h"
#include <zlib.h>

typedef struct ZipBuf {
    uint8_t *b;
    size_t n, cap;
} ZipBuf;

static void zb_put(ZipBuf *z, const void *p, size_t n) {
    if (z->n + n > z->cap) {
        z->cap = (z->n + n) * 2 + 256;
        z->b = realloc(z->b, z->cap);
        if (!z->b) abort();
    }
    if (n) memcpy(z->b + z->n, p, n);
    z->n += n;
}

static void zb_16(ZipBuf *z, uint32_t v) {
    uint8_t b[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    zb_put(z, b, 2);
}

static void zb_32(ZipBuf *z, uint32_t v) {
    zb_16(z, v & 0xffff);
    zb_16(z, v >> 16);
}

typedef struct ZipEntry {
    const char *name;
    const uint8_t *data;
    size_t n;
    int deflate;
} ZipEntry;

/* A zip with the given entries (method 0 or 8, no data descriptors). */
static void zip_build(const ZipEntry *ent, int count, ZipBuf *z) {
    uint32_t off[4];
    uint8_t *comp[4];
    size_t csize[4];
    uint32_t crc[4];
    for (int k = 0; k < count; k++) {
        crc[k] = (uint32_t)crc32(0, ent[k].data, (uInt)ent[k].n);
        if (ent[k].deflate) {
            uLong bound = compressBound((uLong)ent[k].n) + 64;
            comp[k] = malloc(bound);
            z_stream s = {0};
            deflateInit2(&s, 6, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
            s.next_in = (Bytef *)ent[k].data;
            s.avail_in = (uInt)ent[k].n;
            s.next_out = comp[k];
            s.avail_out = (uInt)bound;
            deflate(&s, Z_FINISH);
            csize[k] = s.total_out;
            deflateEnd(&s);
        } else {
            comp[k] = NULL;
            csize[k] = ent[k].n;
        }
        off[k] = (uint32_t)z->n;
        zb_32(z, 0x04034b50);
        zb_16(z, 20);
        zb_16(z, 0);
        zb_16(z, ent[k].deflate ? 8 : 0);
        zb_32(z, 0);
        zb_32(z, crc[k]);
        zb_32(z, (uint32_t)csize[k]);
        zb_32(z, (uint32_t)ent[k].n);
        zb_16(z, (uint32_t)strlen(ent[k].name));
        zb_16(z, 0);
        zb_put(z, ent[k].name, strlen(ent[k].name));
        zb_put(z, comp[k] ? comp[k] : ent[k].data, csize[k]);
    }
    uint32_t cd = (uint32_t)z->n;
    for (int k = 0; k < count; k++) {
        zb_32(z, 0x02014b50);
        zb_16(z, 20);
        zb_16(z, 20);
        zb_16(z, 0);
        zb_16(z, ent[k].deflate ? 8 : 0);
        zb_32(z, 0);
        zb_32(z, crc[k]);
        zb_32(z, (uint32_t)csize[k]);
        zb_32(z, (uint32_t)ent[k].n);
        zb_16(z, (uint32_t)strlen(ent[k].name));
        zb_16(z, 0);
        zb_16(z, 0);
        zb_16(z, 0);
        zb_16(z, 0);
        zb_32(z, 0);
        zb_32(z, off[k]);
        zb_put(z, ent[k].name, strlen(ent[k].name));
        free(comp[k]);
    }
    uint32_t cd_size = (uint32_t)z->n - cd;
    zb_32(z, 0x06054b50);
    zb_16(z, 0);
    zb_16(z, 0);
    zb_16(z, (uint32_t)count);
    zb_16(z, (uint32_t)count);
    zb_32(z, cd_size);
    zb_32(z, cd);
    zb_16(z, 0);
}

int fuzz_xlsx(const uint8_t *data, size_t n) {
    ZipBuf z = {0};
    if (n >= 2 && data[0] == 'P' && data[1] == 'K') {
        zb_put(&z, data, n);
    } else {
        FuzzParts fp;
        fuzz_split(data, n, &fp);
        ZipEntry ent[2] = {{"xl/sharedStrings.xml", fp.p[0], fp.n[0], 1},
                           {"xl/worksheets/sheet1.xml", fp.count > 1 ? fp.p[1] : fp.p[0], fp.count > 1 ? fp.n[1] : 0, 0}};
        zip_build(ent, 2, &z);
    }
    char path[1024];
    fuzz_join(path, sizeof path, fuzz_tmpdir(), "fuzz.xlsx");
    FILE *f = fopen(path, "wb");
    if (!f || (z.n && fwrite(z.b, 1, z.n, f) != z.n) || fclose(f) != 0) abort();
    free(z.b);
    Csv c;
    Err e = {{0}};
    if (xlsx_read(path, &c, &e) == 0) {
        for (size_t r = 0; r < c.nrows; r++)
            for (int k = 0; k < c.ncols; k++)
                if (!csv_get(&c, r, k)) fuzz_fail("cell (%zu, %d) is NULL", r, k);
        csv_free(&c);
    } else if (!e.msg[0]) {
        fuzz_fail("xlsx_read failed without a message");
    }
    return 0;
}

FUZZ_TARGET(fuzz_xlsx)
