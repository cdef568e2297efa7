/*
 * convert_xlsx.c — just enough of .xlsx to read a label sheet (CMMD's
 * CMMD_clinicaldata_revision.xlsx and similar): the zip container (stored or deflated
 * entries), xl/sharedStrings.xml and the first worksheet, turned into CSV text and parsed by the
 * project's CSV reader so converters use one API.  Rows keep their sheet numbers: a gap in the
 * sheet becomes empty lines (skipped by the CSV reader), so error lines match Excel's rows.
 */
#include "data/prepared.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define XLSX_MAX_ENTRY ((size_t)256 << 20)
#define XLSX_MAX_ROWS 1048576L     /* Excel's sheet limits: rows 1..1048576, columns A..XFD */
#define XLSX_MAX_COLS 16384

static uint32_t rd16(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8; }
static uint32_t rd32(const uint8_t *p) { return rd16(p) | rd16(p + 2) << 16; }

/* Finds `name` in the zip's central directory and returns its bytes (malloc'd, NUL added). */
static int zip_entry(const uint8_t *z, size_t n, const char *name, uint8_t **out, size_t *out_n, const char *path, Err *e) {
    *out = NULL;
    if (n < 22) return err_set(e, "%s: not an xlsx (zip) file", path);
    size_t eocd = n - 22;
    size_t stop = n > 22 + 65535 ? n - 22 - 65535 : 0;
    while (rd32(z + eocd) != 0x06054b50) {
        if (eocd == stop) return err_set(e, "%s: not an xlsx (zip) file (no end of central directory)", path);
        eocd--;
    }
    size_t cnt = rd16(z + eocd + 10), cd = rd32(z + eocd + 16);
    size_t p = cd;
    for (size_t k = 0; k < cnt; k++) {
        if (p + 46 > n || rd32(z + p) != 0x02014b50) return err_set(e, "%s: corrupt zip central directory", path);
        uint32_t method = rd16(z + p + 10), csize = rd32(z + p + 20), usize = rd32(z + p + 24);
        size_t fl = rd16(z + p + 28), xl = rd16(z + p + 30), cl = rd16(z + p + 32), lho = rd32(z + p + 42);
        if (p + 46 + fl > n) return err_set(e, "%s: corrupt zip central directory", path);
        if (fl == strlen(name) && !memcmp(z + p + 46, name, fl)) {
            if (lho + 30 > n || rd32(z + lho) != 0x04034b50) return err_set(e, "%s: corrupt zip entry '%s'", path, name);
            size_t data = lho + 30 + rd16(z + lho + 26) + rd16(z + lho + 28);
            if (data > n || csize > n - data || usize > XLSX_MAX_ENTRY)
                return err_set(e, "%s: zip entry '%s' is truncated", path, name);
            /* deflate expands at most ~1032x: a larger claimed size is a lie, refuse it before
             * allocating */
            if (method == 8 && (uint64_t)usize > 1032 * (uint64_t)csize + 1024)
                return err_set(e, "%s: zip entry '%s' claims %u bytes from %u compressed", path, name, usize, csize);
            uint8_t *buf = malloc((size_t)usize + 1);
            if (!buf) return err_set(e, "%s: out of memory", path);
            if (method == 0) {
                if (csize != usize) {
                    free(buf);
                    return err_set(e, "%s: zip entry '%s' has inconsistent sizes", path, name);
                }
                memcpy(buf, z + data, usize);
            } else if (method == 8) {
                z_stream s = {0};
                s.next_in = (Bytef *)(z + data);
                s.avail_in = csize;
                s.next_out = buf;
                s.avail_out = usize;
                int ok = inflateInit2(&s, -MAX_WBITS) == Z_OK;
                int r = ok ? inflate(&s, Z_FINISH) : Z_DATA_ERROR;
                if (ok) inflateEnd(&s);
                if (r != Z_STREAM_END || s.total_out != usize) {
                    free(buf);
                    return err_set(e, "%s: zip entry '%s' does not inflate (corrupt)", path, name);
                }
            } else {
                free(buf);
                return err_set(e, "%s: zip entry '%s' uses compression method %u (only stored/deflate)", path, name, method);
            }
            buf[usize] = 0;
            *out = buf;
            *out_n = usize;
            return 0;
        }
        p += 46 + fl + xl + cl;
    }
    return -1;   /* not present */
}

/* XML text between p and the next '<', entities decoded, appended to a growing buffer */
typedef struct Sb {
    char *s;
    size_t n, cap;
    int oom;     /* an allocation failed: the text is incomplete (reported by xlsx_read) */
} Sb;

static void sb_put(Sb *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = (b->n + n + 1) * 2;
        char *q = realloc(b->s, cap);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->s = q;
        b->cap = cap;
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
}

static void sb_text(Sb *b, const char *p, const char *end) {
    while (p < end) {
        if (*p == '&') {
            static const char *ent[] = {"&amp;", "&lt;", "&gt;", "&quot;", "&apos;"};
            static const char rep[] = "&<>\"'";
            int hit = 0;
            for (int k = 0; k < 5; k++) {
                size_t l = strlen(ent[k]);
                if ((size_t)(end - p) >= l && !strncmp(p, ent[k], l)) {
                    sb_put(b, &rep[k], 1);
                    p += l;
                    hit = 1;
                    break;
                }
            }
            if (hit) continue;
        }
        sb_put(b, p, 1);
        p++;
    }
}

/* the concatenated <t> texts inside [p, end) */
static void collect_t(Sb *b, const char *p, const char *end) {
    while (p < end) {
        const char *t = strstr(p, "<t");
        if (!t || t >= end) break;
        if (t[2] != '>' && t[2] != ' ') {   /* <tab...> or similar: not a text run */
            p = t + 2;
            continue;
        }
        const char *gt = strchr(t, '>');
        if (!gt || gt >= end) break;
        if (gt[-1] == '/') {   /* <t/> */
            p = gt + 1;
            continue;
        }
        const char *close = strstr(gt, "</t>");
        if (!close || close > end) break;
        sb_text(b, gt + 1, close);
        p = close + 4;
    }
}

/* value of attribute `name` inside the tag [p, gt) into buf */
static int attr(const char *p, const char *gt, const char *name, char *buf, size_t n) {
    size_t l = strlen(name);
    for (const char *q = p + 1; q + l + 2 < gt; q++) {
        if ((q[-1] == ' ' || q[-1] == '\t' || q[-1] == '\n') && !strncmp(q, name, l) && q[l] == '=' && (q[l + 1] == '"' || q[l + 1] == '\'')) {
            char quote = q[l + 1];
            const char *v = q + l + 2, *w = memchr(v, quote, (size_t)(gt - v));
            if (!w) return 0;
            size_t m = (size_t)(w - v) < n - 1 ? (size_t)(w - v) : n - 1;
            memcpy(buf, v, m);
            buf[m] = 0;
            return 1;
        }
    }
    return 0;
}

static void csv_field(Sb *out, const char *s) {
    if (!s) return;   /* the cell's text could not be allocated (out->oom follows) */
    int q = strpbrk(s, ",\"\n\r") != NULL;
    if (!q) {
        sb_put(out, s, strlen(s));
        return;
    }
    sb_put(out, "\"", 1);
    for (; *s; s++) {
        if (*s == '"') sb_put(out, "\"", 1);
        sb_put(out, s, 1);
    }
    sb_put(out, "\"", 1);
}

int xlsx_read(const char *path, Csv *csv, Err *e) {
    memset(csv, 0, sizeof *csv);
    FILE *f = fopen(path, "rb");
    if (!f) return err_set(e, "%s: no such file", path);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (len <= 0 || (size_t)len > XLSX_MAX_ENTRY) {
        fclose(f);
        return err_set(e, "%s: empty or too large", path);
    }
    uint8_t *z = malloc((size_t)len);
    if (!z) {
        fclose(f);
        return err_set(e, "%s: out of memory", path);
    }
    size_t got = fread(z, 1, (size_t)len, f);
    fclose(f);
    uint8_t *ss = NULL, *sheet = NULL;
    size_t ssn = 0, shn = 0;
    char **strs = NULL;
    size_t nstr = 0;
    Sb out = {0}, cell = {0};
    int rc = 1;
    int r = zip_entry(z, got, "xl/sharedStrings.xml", &ss, &ssn, path, e);
    if (r > 0) goto done;
    r = zip_entry(z, got, "xl/worksheets/sheet1.xml", &sheet, &shn, path, e);
    if (r > 0) goto done;
    if (r < 0) {
        err_set(e, "%s: no xl/worksheets/sheet1.xml (not an xlsx workbook?)", path);
        goto done;
    }
    /* shared strings: <si> ... </si>, each the concatenation of its <t> runs */
    if (ss) {
        size_t cap = 0;
        for (const char *p = (const char *)ss; (p = strstr(p, "<si"));) {
            if (p[3] != '>' && p[3] != ' ') {
                p += 3;
                continue;
            }
            const char *end = strstr(p, "</si>");
            if (!end) break;
            Sb b = {0};
            sb_put(&b, "", 0);
            collect_t(&b, p, end);
            if (nstr == cap) {
                cap = cap ? 2 * cap : 256;
                char **q = realloc(strs, cap * sizeof *strs);
                if (!q) {
                    free(b.s);
                    err_set(e, "%s: out of memory reading shared strings", path);
                    goto done;
                }
                strs = q;
            }
            if (b.oom) {
                free(b.s);
                err_set(e, "%s: out of memory reading shared strings", path);
                goto done;
            }
            strs[nstr++] = b.s;
            p = end + 5;
        }
    }
    /* rows: <row r="n"> <c r="B3" t="s|str|inlineStr|b|n"><v>..</v> or <is><t>..</t></is></c> */
    long last_row = 0;
    const char *sd = strstr((const char *)sheet, "<sheetData");
    for (const char *p = sd; p && (p = strstr(p, "<row"));) {
        const char *gt = strchr(p, '>');
        if (!gt) break;
        char rb[32] = "";
        long rown = attr(p, gt, "r", rb, sizeof rb) ? atol(rb) : last_row + 1;
        if (rown < 1 || rown > XLSX_MAX_ROWS) {
            err_set(e, "%s: row number '%s' outside 1..%ld", path, rb, XLSX_MAX_ROWS);
            goto done;
        }
        int self = gt[-1] == '/';
        const char *end = self ? gt + 1 : strstr(gt, "</row>");
        if (!end) break;
        for (long k = last_row + 1; k < rown; k++) sb_put(&out, "\n", 1);   /* keep sheet row numbers */
        last_row = rown;
        int col = 0;
        for (const char *c = gt; c < end && (c = strstr(c, "<c")) && c < end;) {
            if (c[2] != ' ' && c[2] != '>' && c[2] != '/') {
                c += 2;
                continue;
            }
            const char *cg = strchr(c, '>');
            if (!cg || cg >= end) break;   /* a cell tag without its '>' ends the row */
            char ref[32] = "", type[16] = "";
            attr(c, cg, "r", ref, sizeof ref);
            attr(c, cg, "t", type, sizeof type);
            int target = 0;
            for (const char *q = ref; *q >= 'A' && *q <= 'Z' && target <= XLSX_MAX_COLS; q++)
                target = target * 26 + (*q - 'A' + 1);
            if (target > XLSX_MAX_COLS) {
                err_set(e, "%s: cell reference '%s' beyond column XFD", path, ref);
                goto done;
            }
            target = target ? target - 1 : col;
            while (col < target) {   /* empty cells between */
                if (col) sb_put(&out, ",", 1);
                col++;
            }
            const char *cend = cg[-1] == '/' ? cg + 1 : strstr(cg, "</c>");
            if (!cend) cend = end;
            cell.n = 0;
            sb_put(&cell, "", 0);
            if (cg[-1] != '/') {
                if (!strcmp(type, "inlineStr")) {
                    collect_t(&cell, cg, cend);
                } else {
                    const char *v = strstr(cg, "<v>");
                    if (v && v < cend) {
                        const char *ve = strstr(v, "</v>");
                        if (ve && ve <= cend) {
                            if (!strcmp(type, "s")) {
                                long si = atol(v + 3);
                                if (si < 0 || (size_t)si >= nstr) {
                                    err_set(e, "%s: cell %s refers to shared string %ld of %zu", path, ref, si, nstr);
                                    goto done;
                                }
                                sb_put(&cell, strs[si], strlen(strs[si]));
                            } else {
                                sb_text(&cell, v + 3, ve);
                            }
                        }
                    }
                }
            }
            if (col) sb_put(&out, ",", 1);
            if (cell.oom) out.oom = 1;
            csv_field(&out, cell.s);
            col++;
            c = cend;
        }
        sb_put(&out, "\n", 1);
        p = end;
    }
    if (!out.s) sb_put(&out, "", 0);
    if (out.oom || cell.oom) {
        err_set(e, "%s: out of memory converting the sheet", path);
        goto done;
    }
    rc = csv_parse(out.s, out.n, path, ',', csv, e);
done:
    for (size_t k = 0; k < nstr; k++) free(strs[k]);
    free(strs);
    free(ss);
    free(sheet);
    free(z);
    free(out.s);
    free(cell.s);
    return rc;
}
