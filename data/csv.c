/* csv.c — RFC 4180 reader (one pass into a single string buffer) and a small writer. */
#include "data/csv.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define CSV_MAX_FILE ((size_t)1 << 31)
#define CSV_MAX_COLS 100000
/* The (rows, cols) cell table pads short rows, so a wide header over many short rows could ask
 * for far more memory than the file's size; 2^27 cells (1 GiB of pointers) is ~3x EMBED's
 * metadata table. */
#define CSV_MAX_CELLS ((size_t)1 << 27)

/* growable size_t vector */
typedef struct Vec {
    size_t *v;
    size_t n, cap;
} Vec;

static int vec_push(Vec *a, size_t x) {
    if (a->n == a->cap) {
        size_t cap = a->cap ? 2 * a->cap : 256;
        size_t *v = realloc(a->v, cap * sizeof *v);
        if (!v) return 1;
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n++] = x;
    return 0;
}

void csv_free(Csv *csv) {
    if (!csv) return;
    free(csv->path);
    free(csv->header);
    free(csv->cells);
    free(csv->line);
    free(csv->buf);
    memset(csv, 0, sizeof *csv);
}

int csv_parse(const char *data, size_t n, const char *name, char delim, Csv *csv, Err *e) {
    memset(csv, 0, sizeof *csv);
    if (!delim) delim = ',';
    if (n >= 3 && (uint8_t)data[0] == 0xEF && (uint8_t)data[1] == 0xBB && (uint8_t)data[2] == 0xBF) {
        data += 3;
        n -= 3;
    }
    /* Every input byte yields at most one output byte and every field one NUL; fields are at most
     * (bytes + 1), so 2n + 2 bytes always suffice.  Byte 0 is a shared empty string. */
    char *buf = malloc(2 * n + 2);
    Vec fields = {0}, rec_first = {0}, rec_count = {0}, rec_line = {0};
    if (!buf) return err_set(e, "%s: out of memory", name);
    buf[0] = '\0';
    size_t out = 1, pos = 0, line = 1;
    int oom = 0;

    while (pos < n && !oom) {
        /* skip blank lines */
        if (data[pos] == '\n') { pos++; line++; continue; }
        if (data[pos] == '\r') { pos += (pos + 1 < n && data[pos + 1] == '\n') ? 2 : 1; line++; continue; }
        size_t first = fields.n, start_line = line;
        for (;;) {
            size_t fstart = out;
            if (pos < n && data[pos] == '"') {
                size_t open_line = line;
                pos++;
                for (;;) {
                    if (pos >= n) {
                        free(buf); free(fields.v); free(rec_first.v); free(rec_count.v); free(rec_line.v);
                        return err_set(e, "%s:%zu: unterminated quoted field (no closing quote before the end of the file)", name, open_line);
                    }
                    char c = data[pos];
                    if (c == '"') {
                        if (pos + 1 < n && data[pos + 1] == '"') { buf[out++] = '"'; pos += 2; continue; }
                        pos++;
                        break;
                    }
                    if (c == '\n') line++;
                    buf[out++] = c;
                    pos++;
                }
                if (pos < n && data[pos] != delim && data[pos] != '\n' && data[pos] != '\r') {
                    free(buf); free(fields.v); free(rec_first.v); free(rec_count.v); free(rec_line.v);
                    return err_set(e, "%s:%zu: unexpected character '%c' after a closing quote", name, line, data[pos]);
                }
            } else {
                while (pos < n && data[pos] != delim && data[pos] != '\n' && data[pos] != '\r') buf[out++] = data[pos++];
            }
            buf[out++] = '\0';
            oom |= vec_push(&fields, fstart);
            if (pos < n && data[pos] == delim) { pos++; continue; }   /* another field (maybe empty at EOF) */
            break;
        }
        if (pos < n) {   /* consume the line end */
            pos += (data[pos] == '\r' && pos + 1 < n && data[pos + 1] == '\n') ? 2 : 1;
            line++;
        }
        oom |= vec_push(&rec_first, first) | vec_push(&rec_count, fields.n - first) | vec_push(&rec_line, start_line);
    }
    if (oom) {
        free(buf); free(fields.v); free(rec_first.v); free(rec_count.v); free(rec_line.v);
        return err_set(e, "%s: out of memory", name);
    }
    if (rec_first.n == 0) {
        free(buf); free(fields.v); free(rec_first.v); free(rec_count.v); free(rec_line.v);
        return err_set(e, "%s: empty CSV (no header line)", name);
    }
    size_t ncols = rec_count.v[0];
    if (ncols > CSV_MAX_COLS) {
        free(buf); free(fields.v); free(rec_first.v); free(rec_count.v); free(rec_line.v);
        return err_set(e, "%s: header has %zu columns (limit %d)", name, ncols, CSV_MAX_COLS);
    }
    size_t nrows = rec_first.n - 1;
    if (nrows * ncols > CSV_MAX_CELLS) {
        free(buf); free(fields.v); free(rec_first.v); free(rec_count.v); free(rec_line.v);
        return err_set(e, "%s: %zu rows x %zu columns is more than %zu cells", name, nrows, ncols, CSV_MAX_CELLS);
    }
    csv->path = strdup(name);
    csv->header = malloc(ncols * sizeof(char *));
    csv->cells = malloc((nrows * ncols + 1) * sizeof(char *));
    csv->line = malloc((nrows + 1) * sizeof(size_t));
    csv->buf = buf;
    csv->delim = delim;
    csv->ncols = (int)ncols;
    csv->nrows = nrows;
    if (!csv->path || !csv->header || !csv->cells || !csv->line) {
        free(fields.v); free(rec_first.v); free(rec_count.v); free(rec_line.v);
        csv_free(csv);
        return err_set(e, "%s: out of memory", name);
    }
    for (size_t c = 0; c < ncols; c++) csv->header[c] = buf + fields.v[c];
    int rc = 0;
    for (size_t r = 0; r < nrows && !rc; r++) {
        size_t f0 = rec_first.v[r + 1], nf = rec_count.v[r + 1];
        csv->line[r] = rec_line.v[r + 1];
        for (size_t c = nf; c > ncols; c--) {
            if (buf[fields.v[f0 + c - 1]] != '\0') {
                rc = err_set(e, "%s:%zu: row has %zu fields but the header has %zu", name, rec_line.v[r + 1], nf, ncols);
                break;
            }
        }
        for (size_t c = 0; c < ncols; c++) csv->cells[r * ncols + c] = c < nf ? buf + fields.v[f0 + c] : buf;
    }
    free(fields.v); free(rec_first.v); free(rec_count.v); free(rec_line.v);
    if (rc) csv_free(csv);
    return rc;
}

int csv_read_delim(const char *path, char delim, Csv *csv, Err *e) {
    memset(csv, 0, sizeof *csv);
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errno == ENOENT) return err_set(e, "%s: no such file", path);
        return err_set(e, "%s: cannot open (%s)", path, strerror(errno));
    }
    if (fseek(f, 0, SEEK_END) != 0) { fclose(f); return err_set(e, "%s: cannot seek (not a regular file?)", path); }
    long sz = ftell(f);
    if (sz < 0 || fseek(f, 0, SEEK_SET) != 0) { fclose(f); return err_set(e, "%s: cannot determine file size", path); }
    if ((size_t)sz > CSV_MAX_FILE) { fclose(f); return err_set(e, "%s: file too large", path); }
    char *data = malloc((size_t)sz + 1);
    if (!data) { fclose(f); return err_set(e, "%s: out of memory", path); }
    size_t got = fread(data, 1, (size_t)sz, f);
    int rerr = ferror(f);
    fclose(f);
    if (got != (size_t)sz || rerr) { free(data); return err_set(e, "%s: read error", path); }
    int rc = csv_parse(data, (size_t)sz, path, delim, csv, e);
    free(data);
    return rc;
}

int csv_read(const char *path, Csv *csv, Err *e) { return csv_read_delim(path, ',', csv, e); }

/* ------------------------------------------------------------------------------------------ */
/* lookup */

/* s without leading/trailing whitespace: [*b, *b + len) */
static size_t trimmed(const char *s, const char **b) {
    while (*s && isspace((unsigned char)*s)) s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1])) n--;
    *b = s;
    return n;
}

int csv_col(const Csv *csv, const char *name) {
    for (int c = 0; c < csv->ncols; c++)
        if (strcmp(csv->header[c], name) == 0) return c;
    const char *nb;
    size_t nn = trimmed(name, &nb);
    for (int c = 0; c < csv->ncols; c++) {
        const char *hb;
        size_t hn = trimmed(csv->header[c], &hb);
        if (hn == nn && memcmp(hb, nb, nn) == 0) return c;
    }
    return -1;
}

int csv_require_columns(const Csv *csv, const char *const *names, Err *e) {
    for (size_t i = 0; names[i]; i++)
        if (csv_col(csv, names[i]) < 0) return err_set(e, "%s: missing column '%s'", csv->path, names[i]);
    return 0;
}

const char *csv_get_by(const Csv *csv, size_t row, const char *name) {
    int c = csv_col(csv, name);
    return c < 0 || row >= csv->nrows ? NULL : csv_get(csv, row, c);
}

int csv_is_empty(const Csv *csv, size_t row, int col) {
    const char *b;
    return trimmed(csv_get(csv, row, col), &b) == 0;
}

/* Checks row/col and returns the field with whitespace trimmed into tmp (NUL-terminated). */
static int field_trimmed(const Csv *csv, size_t row, int col, char *tmp, size_t cap, Err *e) {
    if (row >= csv->nrows || col < 0 || col >= csv->ncols)
        return err_set(e, "%s: field (row %zu, column %d) out of range (%zu rows, %d columns)",
                       csv->path, row, col, csv->nrows, csv->ncols);
    const char *b;
    size_t n = trimmed(csv_get(csv, row, col), &b);
    if (n >= cap) n = cap - 1;   /* longer than any number; parsing then fails on the cut */
    memcpy(tmp, b, n);
    tmp[n] = '\0';
    return 0;
}

int csv_get_long(const Csv *csv, size_t row, int col, long *out, Err *e) {
    char tmp[128];
    if (field_trimmed(csv, row, col, tmp, sizeof tmp, e)) return 1;
    char *end;
    errno = 0;
    long v = strtol(tmp, &end, 10);
    if (tmp[0] == '\0' || *end != '\0' || errno == ERANGE)
        return err_set(e, "%s:%zu: column '%s': expected an integer, got '%s'", csv->path, csv->line[row],
                       csv->header[col], csv_get(csv, row, col));
    *out = v;
    return 0;
}

int csv_get_double(const Csv *csv, size_t row, int col, double *out, Err *e) {
    char tmp[128];
    if (field_trimmed(csv, row, col, tmp, sizeof tmp, e)) return 1;
    char *end;
    double v = strtod(tmp, &end);
    if (tmp[0] == '\0' || *end != '\0' || !isfinite(v))
        return err_set(e, "%s:%zu: column '%s': expected a number, got '%s'", csv->path, csv->line[row],
                       csv->header[col], csv_get(csv, row, col));
    *out = v;
    return 0;
}

int csv_get_double_or(const Csv *csv, size_t row, int col, double dflt, double *out, Err *e) {
    if (row < csv->nrows && col >= 0 && col < csv->ncols && csv_is_empty(csv, row, col)) {
        *out = dflt;
        return 0;
    }
    return csv_get_double(csv, row, col, out, e);
}

/* ------------------------------------------------------------------------------------------ */
/* writer */

int csv_writer_open(CsvWriter *w, const char *path, const char *const *header, Err *e) {
    memset(w, 0, sizeof *w);
    w->delim = ',';
    w->f = fopen(path, "wb");
    if (!w->f) return err_set(e, "%s: cannot create (%s)", path, strerror(errno));
    w->path = strdup(path);
    w->ncols = -1;   /* header row: any width */
    for (size_t i = 0; header[i]; i++) csv_put(w, header[i]);
    int n = w->col;
    csv_end_row(w);
    w->ncols = n;
    return 0;
}

void csv_put(CsvWriter *w, const char *s) {
    if (!w->f) return;
    if (w->col > 0) fputc(w->delim, w->f);
    size_t n = strlen(s);
    int quote = n > 0 && (s[0] == ' ' || s[n - 1] == ' ');
    for (size_t i = 0; i < n && !quote; i++)
        quote = s[i] == w->delim || s[i] == '"' || s[i] == '\n' || s[i] == '\r';
    if (!quote) {
        fwrite(s, 1, n, w->f);
    } else {
        fputc('"', w->f);
        for (size_t i = 0; i < n; i++) {
            if (s[i] == '"') fputc('"', w->f);
            fputc(s[i], w->f);
        }
        fputc('"', w->f);
    }
    w->col++;
}

void csv_putf(CsvWriter *w, const char *fmt, ...) {
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < (int)sizeof tmp) { csv_put(w, tmp); return; }
    char *big = malloc((size_t)n + 1);
    if (!big) { w->failed = 1; return; }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    csv_put(w, big);
    free(big);
}

void csv_put_long(CsvWriter *w, long v) { csv_putf(w, "%ld", v); }

void csv_put_double(CsvWriter *w, double v) {
    char tmp[64];
    snprintf(tmp, sizeof tmp, "%.15g", v);
    if (strtod(tmp, NULL) != v) snprintf(tmp, sizeof tmp, "%.17g", v);   /* shortest that round-trips */
    csv_put(w, tmp);
}

void csv_end_row(CsvWriter *w) {
    if (!w->f) return;
    if (w->ncols >= 0 && w->col != w->ncols && !w->bad_row_msg[0])
        snprintf(w->bad_row_msg, sizeof w->bad_row_msg, "a row has %d fields but the header has %d", w->col, w->ncols);
    fputc('\n', w->f);
    w->col = 0;
}

int csv_writer_close(CsvWriter *w, Err *e) {
    int rc = 0;
    if (w->f) {
        int werr = ferror(w->f);
        if (fclose(w->f) != 0 || werr || w->failed) rc = err_set(e, "%s: write error", w->path ? w->path : "csv");
    }
    if (!rc && w->bad_row_msg[0]) rc = err_set(e, "%s: %s", w->path ? w->path : "csv", w->bad_row_msg);
    free(w->path);
    memset(w, 0, sizeof *w);
    return rc;
}
