/*
 * convert_inbreast.c — INbreast (Release 1.0) -> prepared HDF5.
 *
 * Raw layout (mammo-data.md A2):
 *   INbreast.csv   ';'-separated: Patient ID;Patient age;Laterality;View;Acquisition date;
 *                  File Name;ACR;Bi-Rads  (patient columns say "removed"; blank ACR is spaces)
 *   AllDICOMs/<FileName>_<patient hash>_MG_<L|R>_<CC|ML|MLO>_ANON.dcm
 *   AllXML/<FileName>.xml   OsiriX plist: Images[] -> ROIs[] -> {Name, Point_px: ["(x, y)"]}
 * Labels: density = ACR 1..4, birads (4a/4b/4c -> 4) and birads_sub (the 8 published values).
 * Findings from ROI names (Mass; Calcification(s); Cluster; Spiculated/Espiculated Region;
 * Distortion; Asymmetry/Assymetry; "Point n"/"Unnamed" ignored).  Polygon ROIs (>= 3 points)
 * give boxes; ROIs of 1-2 points are single calcifications (finding only).  The mask is the union
 * of the "Mass" polygons (the benchmark's segmentation target); every image is annotated (images
 * without an XML file have no lesions).  Patient = the hash token of the DICOM name; no source
 * split, so patients are split with the seed.
 */
#include "data/prepared.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *INB_FINDINGS = "mass\ncalcification\ncluster\nspiculated region\ndistortion\nasymmetry";
static const char *INB_BIRADS_SUB = "1\n2\n3\n4a\n4b\n4c\n5\n6";

/* ------------------------------------------------------------------------------------------ */
/* a minimal Apple plist (XML) reader: dict / array / string / integer / real / true / false */

enum { PL_DICT, PL_ARRAY, PL_STRING, PL_NUMBER, PL_BOOL };

typedef struct PNode {
    int type;
    char *text;               /* string / number text; dict keys for children */
    struct PNode **kids;      /* dict values or array items */
    char **keys;              /* dict: one per kid */
    int n, cap;
} PNode;

typedef struct PParser {
    const char *p, *end;
    int err;
} PParser;

static void pnode_free(PNode *n) {
    if (!n) return;
    for (int k = 0; k < n->n; k++) {
        pnode_free(n->kids[k]);
        if (n->keys) free(n->keys[k]);
    }
    free(n->kids);
    free(n->keys);
    free(n->text);
    free(n);
}

static void skip_misc(PParser *ps) {
    for (;;) {
        while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\n' || *ps->p == '\r' || *ps->p == '\t')) ps->p++;
        if (ps->end - ps->p >= 4 && !strncmp(ps->p, "<!--", 4)) {
            const char *q = strstr(ps->p, "-->");
            ps->p = q ? q + 3 : ps->end;
        } else if (ps->end - ps->p >= 2 && (!strncmp(ps->p, "<?", 2) || !strncmp(ps->p, "<!", 2))) {
            const char *q = memchr(ps->p, '>', (size_t)(ps->end - ps->p));
            ps->p = q ? q + 1 : ps->end;
        } else {
            return;
        }
    }
}

/* reads "<name ...>" or "<name/>" or "</name>"; returns 1 for open, 2 for self-closing, 3 close */
static int read_tag(PParser *ps, char *name, size_t n) {
    skip_misc(ps);
    if (ps->p >= ps->end || *ps->p != '<') {
        ps->err = 1;
        return 0;
    }
    const char *q = memchr(ps->p, '>', (size_t)(ps->end - ps->p));
    if (!q) {
        ps->err = 1;
        return 0;
    }
    const char *s = ps->p + 1;
    int close = *s == '/';
    if (close) s++;
    size_t l = 0;
    while (s + l < q && s[l] != ' ' && s[l] != '/' && s[l] != '\t' && s[l] != '\n') l++;
    if (l >= n) l = n - 1;
    memcpy(name, s, l);
    name[l] = 0;
    int self = q[-1] == '/';
    ps->p = q + 1;
    return close ? 3 : self ? 2 : 1;
}

/* text up to the next '<', entities decoded */
static char *read_text(PParser *ps) {
    const char *q = memchr(ps->p, '<', (size_t)(ps->end - ps->p));
    if (!q) q = ps->end;
    size_t l = (size_t)(q - ps->p);
    char *t = xmalloc(l + 1), *o = t;
    for (const char *s = ps->p; s < q;) {
        if (*s == '&') {
            if (!strncmp(s, "&amp;", 5)) { *o++ = '&'; s += 5; continue; }
            if (!strncmp(s, "&lt;", 4)) { *o++ = '<'; s += 4; continue; }
            if (!strncmp(s, "&gt;", 4)) { *o++ = '>'; s += 4; continue; }
            if (!strncmp(s, "&quot;", 6)) { *o++ = '"'; s += 6; continue; }
            if (!strncmp(s, "&apos;", 6)) { *o++ = '\''; s += 6; continue; }
        }
        *o++ = *s++;
    }
    *o = 0;
    ps->p = q;
    return t;
}

static void pnode_push(PNode *n, PNode *kid, char *key) {
    if (n->n == n->cap) {
        n->cap = n->cap ? 2 * n->cap : 8;
        n->kids = xrealloc(n->kids, (size_t)n->cap * sizeof *n->kids);
        if (n->type == PL_DICT) n->keys = xrealloc(n->keys, (size_t)n->cap * sizeof *n->keys);
    }
    n->kids[n->n] = kid;
    if (n->type == PL_DICT) n->keys[n->n] = key;
    n->n++;
}

/* parses the value whose open tag `name` (kind) was just read */
static PNode *parse_value(PParser *ps, const char *name, int kind, int depth) {
    PNode *n = xmalloc(sizeof *n);
    memset(n, 0, sizeof *n);
    if (depth > 64) {
        ps->err = 1;
        return n;
    }
    char tag[32];
    if (!strcmp(name, "dict") || !strcmp(name, "array")) {
        n->type = !strcmp(name, "dict") ? PL_DICT : PL_ARRAY;
        if (kind == 2) return n;
        for (;;) {
            int k = read_tag(ps, tag, sizeof tag);
            if (ps->err) return n;
            if (k == 3) return n;   /* </dict> or </array> */
            char *key = NULL;
            if (n->type == PL_DICT) {
                if (strcmp(tag, "key") != 0) {
                    ps->err = 1;
                    return n;
                }
                key = k == 2 ? strdup("") : read_text(ps);
                if (k != 2 && (read_tag(ps, tag, sizeof tag) != 3 || ps->err)) {
                    free(key);
                    ps->err = 1;
                    return n;
                }
                k = read_tag(ps, tag, sizeof tag);
                if (ps->err || k == 3) {
                    free(key);
                    ps->err = 1;
                    return n;
                }
            }
            pnode_push(n, parse_value(ps, tag, k, depth + 1), key);
            if (ps->err) return n;
        }
    }
    if (!strcmp(name, "true") || !strcmp(name, "false")) {
        n->type = PL_BOOL;
        n->text = strdup(name);
        if (kind == 1) read_tag(ps, tag, sizeof tag);
        return n;
    }
    n->type = !strcmp(name, "string") ? PL_STRING : PL_NUMBER;   /* integer, real, date, data */
    n->text = kind == 2 ? strdup("") : read_text(ps);
    if (kind == 1 && read_tag(ps, tag, sizeof tag) != 3) ps->err = 1;
    return n;
}

static PNode *plist_parse(const char *buf, size_t len) {
    PParser ps = {buf, buf + len, 0};
    char tag[32];
    int k = read_tag(&ps, tag, sizeof tag);
    if (ps.err || strcmp(tag, "plist") != 0) return NULL;
    k = read_tag(&ps, tag, sizeof tag);
    if (ps.err || k == 3) return NULL;
    PNode *root = parse_value(&ps, tag, k, 0);
    if (ps.err) {
        pnode_free(root);
        return NULL;
    }
    return root;
}

static PNode *dict_get(const PNode *d, const char *key) {
    if (!d || d->type != PL_DICT) return NULL;
    for (int k = 0; k < d->n; k++)
        if (!strcmp(d->keys[k], key)) return d->kids[k];
    return NULL;
}

/* ------------------------------------------------------------------------------------------ */

static int roi_finding(const char *name) {
    if (!strcasecmp(name, "Mass")) return 0;
    if (!strcasecmp(name, "Calcification") || !strcasecmp(name, "Calcifications")) return 1;
    if (!strcasecmp(name, "Cluster")) return 2;
    if (!strcasecmp(name, "Spiculated Region") || !strcasecmp(name, "Espiculated Region")) return 3;
    if (!strcasecmp(name, "Distortion")) return 4;
    if (!strcasecmp(name, "Asymmetry") || !strcasecmp(name, "Assymetry")) return 5;
    return -1;   /* "Point 1", "Point 3", "Unnamed", ... */
}

/* ROIs of one XML into record r; Err names the file on a parse error */
static int read_xml(const char *path, RawRecord *r, Err *e) {
    FILE *f = fopen(path, "rb");
    if (!f) return err_set(e, "%s: cannot open", path);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (len < 0 || len > (64L << 20)) {
        fclose(f);
        return err_set(e, "%s: unreasonable size", path);
    }
    char *buf = malloc((size_t)len + 1);
    if (!buf) {
        fclose(f);
        return err_set(e, "%s: out of memory (%ld bytes)", path, len);
    }
    size_t got = fread(buf, 1, (size_t)len, f);
    fclose(f);
    buf[got] = 0;
    PNode *root = plist_parse(buf, got);
    free(buf);
    if (!root) return err_set(e, "%s: not a valid plist XML", path);
    PNode *images = dict_get(root, "Images");
    if (!images || images->type != PL_ARRAY) {
        pnode_free(root);
        return err_set(e, "%s: plist has no 'Images' array", path);
    }
    for (int i = 0; i < images->n; i++) {
        PNode *rois = dict_get(images->kids[i], "ROIs");
        if (!rois || rois->type != PL_ARRAY) continue;
        for (int k = 0; k < rois->n; k++) {
            PNode *roi = rois->kids[k];
            PNode *name = dict_get(roi, "Name"), *pts = dict_get(roi, "Point_px");
            if (!name || name->type != PL_STRING) continue;
            int fi = roi_finding(name->text);
            if (fi < 0) continue;
            r->findings[fi] = 1;
            if (!pts || pts->type != PL_ARRAY) continue;
            int np = pts->n;
            float *xy = xmalloc((size_t)(np > 0 ? np : 1) * 2 * sizeof(float));
            int m = 0;
            for (int v = 0; v < np; v++) {
                float x, y;
                if (pts->kids[v]->type == PL_STRING && sscanf(pts->kids[v]->text, " (%f , %f", &x, &y) == 2) {
                    xy[2 * m] = x;
                    xy[2 * m + 1] = y;
                    m++;
                }
            }
            if (m >= 3) raw_add_polygon(r, xy, m, fi == 0, fi);   /* masses fill the mask */
            free(xy);
        }
    }
    pnode_free(root);
    return 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int convert_inbreast(const ConvertOpts *o, ConvertStats *st, Err *e) {
    RawSet set = {0};
    set.schema = (PrepSchema){.dataset = "inbreast", .n_labels = 3, .findings = INB_FINDINGS, .has_masks = 1,
                              .labels = {{"density", PREP_CLASSES_DENSITY},
                                         {"birads", PREP_CLASSES_BIRADS},
                                         {"birads_sub", INB_BIRADS_SUB}}};
    char *cpath = path_join(o->raw_root, "INbreast.csv");
    char *ddir = path_join(o->raw_root, "AllDICOMs");
    char *xdir = path_join(o->raw_root, "AllXML");
    Csv c = {0};
    char **dcm = NULL, **pref = NULL;
    size_t nd = 0, capd = 0;
    StrIndex ix = {0};
    int rc = 1;
    static const char *const cols[] = {"Laterality", "View", "File Name", "ACR", "Bi-Rads", NULL};
    if (csv_read_delim(cpath, ';', &c, e) || csv_require_columns(&c, cols, e)) goto out;
    /* AllDICOMs: "<FileName>_<hash>_MG_<L|R>_<view>_ANON.dcm" -> FileName prefix */
    DIR *d = opendir(ddir);
    if (!d) {
        err_set(e, "%s: no such directory", ddir);
        goto out;
    }
    struct dirent *de;
    while ((de = readdir(d))) {
        const char *ext = strrchr(de->d_name, '.');
        if (de->d_name[0] == '.' || !ext || strcasecmp(ext, ".dcm")) continue;
        if (nd == capd) {
            capd = capd ? 2 * capd : 64;
            dcm = xrealloc(dcm, capd * sizeof *dcm);
        }
        dcm[nd++] = strdup(de->d_name);
    }
    closedir(d);
    qsort(dcm, nd, sizeof *dcm, cmp_str);
    pref = xmalloc((nd ? nd : 1) * sizeof *pref);
    for (size_t k = 0; k < nd; k++) {
        pref[k] = strdup(dcm[k]);
        char *u = strchr(pref[k], '_');
        if (u) *u = 0;
    }
    strindex_build(&ix, (const char *const *)pref, nd);
    int c_lat = csv_col(&c, "Laterality"), c_view = csv_col(&c, "View"), c_file = csv_col(&c, "File Name"),
        c_acr = csv_col(&c, "ACR"), c_bi = csv_col(&c, "Bi-Rads");
    for (size_t i = 0; i < c.nrows; i++) {
        char file[64];
        str_copy(file, sizeof file, csv_get(&c, i, c_file));
        size_t l = strlen(file);
        while (l && file[l - 1] == ' ') file[--l] = 0;
        if (!l) continue;   /* footer / blank rows */
        long k = strindex_find(&ix, file);
        if (k < 0) {
            err_set(e, "%s:%zu: no AllDICOMs/%s_*.dcm for File Name '%s'", c.path, c.line[i], file, file);
            goto out;
        }
        RawRecord *r = rawset_add(&set);
        r->image_path = path_join(ddir, dcm[k]);
        str_copy(r->image_id, sizeof r->image_id, file);
        /* patient = 2nd '_' token of the DICOM name */
        const char *p1 = strchr(dcm[k], '_');
        if (p1) {
            const char *p2 = strchr(p1 + 1, '_');
            size_t pl = p2 ? (size_t)(p2 - p1 - 1) : strlen(p1 + 1);
            if (pl >= sizeof r->patient_id) pl = sizeof r->patient_id - 1;
            memcpy(r->patient_id, p1 + 1, pl);
            r->patient_id[pl] = 0;
        } else {
            str_copy(r->patient_id, sizeof r->patient_id, file);
        }
        r->annotated = 1;
        if ((r->laterality = parse_laterality(csv_get(&c, i, c_lat))) < -1) {
            err_value(e, &c, i, "Laterality", csv_get(&c, i, c_lat));
            goto out;
        }
        r->view = parse_view(csv_get(&c, i, c_view));
        if ((r->labels[0] = parse_density(csv_get(&c, i, c_acr))) < -1) {
            err_value(e, &c, i, "ACR", csv_get(&c, i, c_acr));
            goto out;
        }
        const char *bi = csv_get(&c, i, c_bi);
        if ((r->labels[1] = parse_birads(bi)) < -1) {
            err_value(e, &c, i, "Bi-Rads", bi);
            goto out;
        }
        char bt[16];
        str_copy(bt, sizeof bt, bi);
        for (char *q = bt; *q; q++)
            if (*q >= 'A' && *q <= 'C') *q = (char)(*q - 'A' + 'a');
        size_t bl = strlen(bt);
        while (bl && bt[bl - 1] == ' ') bt[--bl] = 0;
        r->labels[2] = label_index(INB_BIRADS_SUB, bt);
        char xml[80];
        snprintf(xml, sizeof xml, "%s.xml", file);
        char *xp = path_join(xdir, xml);
        if (path_exists(xp) && read_xml(xp, r, e)) {
            free(xp);
            goto out;
        }
        free(xp);
    }
    rc = convert_run(&set, o, st, e);
out:
    for (size_t k = 0; k < nd; k++) {
        free(dcm[k]);
        if (pref) free(pref[k]);
    }
    free(dcm);
    free(pref);
    strindex_free(&ix);
    csv_free(&c);
    rawset_free(&set);
    free(cpath);
    free(ddir);
    free(xdir);
    return rc;
}
