/*
 * data/csv.h — RFC 4180 CSV reading with header lookup and validation, typed field access with
 * errors that name file, line and column, and a small CSV writer.
 *
 * Reading: quoted fields with embedded delimiters, doubled quotes and newlines; LF or CRLF
 * line ends; a UTF-8 BOM is skipped; the first record is the header; blank lines are skipped.
 * A row with fewer fields than the header is padded with empty fields (spreadsheets drop
 * trailing empties); a row with more fields is an error unless the extra fields are empty.
 * Errors, e.g.
 *   "breast-level_annotations.csv: missing column 'breast_density'"
 *   "finding_annotations.csv:12: unterminated quoted field (no closing quote before the end of the file)"
 *   "metadata.csv:7: column 'height': expected an integer, got 'abc'"
 * (the CLI prints them prefixed with "versa: ").
 */
#ifndef VERSA_DATA_CSV_H
#define VERSA_DATA_CSV_H

#include <stddef.h>
#include <stdio.h>
#include "engine/engine.h"

typedef struct Csv {
    char *path;          /* as given, for messages */
    int ncols;           /* header fields */
    size_t nrows;        /* data rows (header excluded) */
    char **header;       /* ncols NUL-terminated names */
    char **cells;        /* (nrows, ncols) NUL-terminated fields, "" when empty */
    size_t *line;        /* nrows: 1-based file line on which each row starts */
    char *buf;           /* storage of all strings */
    char delim;
} Csv;

/* Read a CSV file with delimiter ',' (csv_read) or `delim` (e.g. ';' for INbreast.csv). */
int csv_read(const char *path, Csv *csv, Err *e);
int csv_read_delim(const char *path, char delim, Csv *csv, Err *e);
/* Parse from memory; `name` is used in messages.  The buffer need not be NUL-terminated. */
int csv_parse(const char *data, size_t n, const char *name, char delim, Csv *csv, Err *e);
void csv_free(Csv *csv);

/* Column index of `name`, or -1.  Exact match first, then a match ignoring leading/trailing
 * spaces on both sides (KAU-BCMD's "Patient age ", CBIS-DDSM's messy headers). */
int csv_col(const Csv *csv, const char *name);
/* 0 if every name in the NULL-terminated list exists; else 1 and
 * "<file>: missing column '<name>'" for the first missing one. */
int csv_require_columns(const Csv *csv, const char *const *names, Err *e);

/* Field access; row < nrows, 0 <= col < ncols. */
static inline const char *csv_get(const Csv *csv, size_t row, int col) {
    return csv->cells[row * (size_t)csv->ncols + (size_t)col];
}
/* By column name; NULL when the column does not exist. */
const char *csv_get_by(const Csv *csv, size_t row, const char *name);
/* 1 if the field is empty or only whitespace. */
int csv_is_empty(const Csv *csv, size_t row, int col);

/* Typed access: leading/trailing whitespace allowed, the rest must parse completely.  Errors
 * "<file>:<line>: column '<name>': expected an integer, got '<text>'". */
int csv_get_long(const Csv *csv, size_t row, int col, long *out, Err *e);
int csv_get_double(const Csv *csv, size_t row, int col, double *out, Err *e);
/* Like csv_get_double but an empty field gives `dflt` (VinDr "No Finding" rows' empty boxes). */
int csv_get_double_or(const Csv *csv, size_t row, int col, double dflt, double *out, Err *e);

/* ------------------------------------------------------------------------------------------ */
/* Writer: fields are quoted when they contain the delimiter, a quote, CR or LF, or start/end
 * with a space; lines end with LF. */

typedef struct CsvWriter {
    FILE *f;
    char *path;
    char delim;
    int ncols;           /* from the header; csv_end_row checks the count */
    int col;             /* fields written in the current row */
    int failed;          /* a write error happened (reported by csv_writer_close) */
    char bad_row_msg[160];
} CsvWriter;

/* Open `path` for writing and write the NULL-terminated header. */
int csv_writer_open(CsvWriter *w, const char *path, const char *const *header, Err *e);
void csv_put(CsvWriter *w, const char *field);
void csv_putf(CsvWriter *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void csv_put_long(CsvWriter *w, long v);
void csv_put_double(CsvWriter *w, double v);   /* shortest "%.9g"-style text */
void csv_end_row(CsvWriter *w);
/* Flush and close; nonzero with an Err on a write error or a row of the wrong width. */
int csv_writer_close(CsvWriter *w, Err *e);

#endif
