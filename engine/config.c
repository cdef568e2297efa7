/* config.c — YAML configs as a flat table of dotted keys, command-line overrides, typed getters.
 *
 * A file like
 *     student: {arch: vit_small, patch_size: 16}
 *     crops: {global_crops_scale: [0.32, 1.0]}
 * becomes the keys "student.arch", "student.patch_size" and "crops.global_crops_scale" (a list of
 * scalars stays one entry).  The program's view of a config is only this table: the YAML tree is
 * rebuilt from the dotted keys when the config is written back (into a checkpoint, or by
 * `versa config`).  Values keep their text; the getters parse it and name the file or command
 * line that set a bad value. */
#include "engine.h"
#include <yaml.h>
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CFG_MAX_DEPTH 32         /* nesting; also bounds alias expansion */
#define CFG_MAX_KEY 256
#define CFG_MAX_ENTRIES 10000    /* real configs have hundreds */
#define CFG_MAX_VISITS 1000000   /* YAML aliases can multiply nodes ("billion laughs") */

static const char *type_name[] = {"string", "float", "int", "bool", "list"};

/* ---------------------------------------------------------------------------------------- */
/* table */

static char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (!d) {
        fprintf(stderr, "versa: out of memory in the config table\n");
        exit(1);
    }
    memcpy(d, s, n);
    return d;
}

void cfg_init(Config *cfg) {
    memset(cfg, 0, sizeof(*cfg));
    snprintf(cfg->name, sizeof cfg->name, "config");
}

static void entry_clear_value(CfgEntry *en) {
    free(en->value);
    for (size_t i = 0; i < en->n_items; i++) free(en->items[i]);
    free(en->items);
    en->value = NULL;
    en->items = NULL;
    en->n_items = 0;
    en->is_list = 0;
    en->is_null = 0;
}

void cfg_free(Config *cfg) {
    for (size_t i = 0; i < cfg->n; i++) {
        entry_clear_value(&cfg->e[i]);
        free(cfg->e[i].key);
    }
    free(cfg->e);
    free(cfg->slots);
    for (size_t i = 0; i < cfg->n_origins; i++) free(cfg->origins[i]);
    free(cfg->origins);
    memset(cfg, 0, sizeof(*cfg));
}

static int add_origin(Config *cfg, const char *origin) {
    for (size_t i = 0; i < cfg->n_origins; i++)
        if (!strcmp(cfg->origins[i], origin)) return (int)i;
    cfg->origins = xrealloc(cfg->origins, (cfg->n_origins + 1) * sizeof(char *));
    cfg->origins[cfg->n_origins] = xstrdup(origin);
    return (int)cfg->n_origins++;
}

/* The index makes lookups and the key/map conflict check O(1): a config is declared, loaded
 * and read once per run, but the benchmark registry and the fuzzer do it thousands of times. */
static uint32_t text_hash(const char *s, size_t len) {
    uint32_t h = 2166136261u;   /* FNV-1a */
    for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

/* the slot holding the first len bytes of key, or NULL */
static const CfgSlot *slot_find(const Config *cfg, const char *key, size_t len) {
    if (!cfg->n_slots) return NULL;
    uint32_t h = text_hash(key, len);
    for (size_t i = h & (cfg->n_slots - 1);; i = (i + 1) & (cfg->n_slots - 1)) {
        const CfgSlot *s = &cfg->slots[i];
        if (!s->entry) return NULL;
        if (s->hash == h && s->len == len && !memcmp(cfg->e[s->entry - 1].key, key, len)) return s;
    }
}

static void slot_put(Config *cfg, uint32_t hash, uint32_t len, uint32_t entry, uint32_t is_prefix) {
    size_t i = hash & (cfg->n_slots - 1);
    while (cfg->slots[i].entry) i = (i + 1) & (cfg->n_slots - 1);
    cfg->slots[i] = (CfgSlot){hash, len, entry, is_prefix};
    cfg->used_slots++;
}

/* index e[idx]: its key and each dotted prefix not indexed yet */
static void index_entry(Config *cfg, size_t idx) {
    const char *key = cfg->e[idx].key;
    size_t len = strlen(key);
    if (2 * (cfg->used_slots + len + 1) > cfg->n_slots) {
        size_t old_n = cfg->n_slots;
        CfgSlot *old = cfg->slots;
        cfg->n_slots = old_n ? 2 * old_n : 256;
        while (2 * (cfg->used_slots + len + 1) > cfg->n_slots) cfg->n_slots *= 2;
        cfg->slots = xcalloc(cfg->n_slots, sizeof(CfgSlot));
        cfg->used_slots = 0;
        for (size_t i = 0; i < old_n; i++)
            if (old[i].entry) slot_put(cfg, old[i].hash, old[i].len, old[i].entry, old[i].is_prefix);
        free(old);
    }
    for (size_t l = 1; l < len; l++)
        if (key[l] == '.' && !slot_find(cfg, key, l)) slot_put(cfg, text_hash(key, l), (uint32_t)l, (uint32_t)idx + 1, 1);
    slot_put(cfg, text_hash(key, len), (uint32_t)len, (uint32_t)idx + 1, 0);
}

static CfgEntry *find(const Config *cfg, const char *key) {
    const CfgSlot *s = slot_find(cfg, key, strlen(key));
    return s && !s->is_prefix ? &cfg->e[s->entry - 1] : NULL;
}

static const char *origin_of(const Config *cfg, const CfgEntry *en) {
    return en->origin >= 0 && (size_t)en->origin < cfg->n_origins ? cfg->origins[en->origin] : cfg->name;
}

/* Levenshtein distance of a and b when it is at most max, else max + 1.  Bounded because an
 * unknown key is compared with every known one: strings whose lengths differ by more than max
 * are rejected at once and a row whose minimum exceeds max ends the scan. */
size_t edit_distance_within(const char *a, const char *b, size_t max) {
    enum { LONGEST = 255 };
    size_t la = strlen(a), lb = strlen(b);
    if (la > LONGEST || lb > LONGEST || (la > lb ? la - lb : lb - la) > max) return max + 1;
    size_t row[LONGEST + 1], prev[LONGEST + 1];
    for (size_t j = 0; j <= lb; j++) prev[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t lo = row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t sub = prev[j - 1] + (a[i - 1] != b[j - 1]);
            size_t del = prev[j] + 1, ins = row[j - 1] + 1;
            row[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
            if (row[j] < lo) lo = row[j];
        }
        if (lo > max) return max + 1;
        memcpy(prev, row, (lb + 1) * sizeof(size_t));
    }
    return prev[lb] <= max ? prev[lb] : max + 1;
}

/* the closest known key: a small edit distance, or the same last component ("lr" -> "optim.lr") */
static const char *suggest(const Config *cfg, const char *key) {
    const char *best = NULL;
    size_t best_d = strlen(key) / 4 + 2;
    for (size_t i = 0; i < cfg->n; i++) {
        const char *k = cfg->e[i].key;
        size_t d = edit_distance_within(key, k, best_d - 1);
        size_t lk = strlen(k), lkey = strlen(key);
        if (lk > lkey && k[lk - lkey - 1] == '.' && !strcmp(k + lk - lkey, key)) d = 1;
        if (d < best_d) {
            best_d = d;
            best = k;
        }
    }
    return best;
}

static int unknown_key(const Config *cfg, const char *where, const char *key, Err *e) {
    const char *s = suggest(cfg, key);
    if (s) return err_set(e, "%s: unknown key '%s' (did you mean '%s'?)", where, key, s);
    return err_set(e, "%s: unknown key '%s'", where, key);
}

/* A key must not be both a value and a map: "a" and "a.b" cannot coexist. */
static const char *conflict(const Config *cfg, const char *key) {
    size_t lk = strlen(key);
    for (size_t l = 1; l < lk; l++) {   /* a key "a" when adding "a.b" */
        const CfgSlot *s = key[l] == '.' ? slot_find(cfg, key, l) : NULL;
        if (s && !s->is_prefix) return cfg->e[s->entry - 1].key;
    }
    const CfgSlot *s = slot_find(cfg, key, lk);   /* keys "a.b..." when adding "a" */
    return s && s->is_prefix ? cfg->e[s->entry - 1].key : NULL;
}

static int check_key(const char *where, const char *key, Err *e) {
    size_t n = strlen(key);
    if (n == 0 || n >= CFG_MAX_KEY) return err_set(e, "%s: bad key '%.64s' (empty or too long)", where, key);
    if (key[0] == '.' || key[n - 1] == '.' || strstr(key, ".."))
        return err_set(e, "%s: bad key '%s' (empty component)", where, key);
    /* printable ASCII only: a key is a name in the DINOv2 tree, and a stray byte (0xff from a
     * YAML escape) would be written back by cfg_to_yaml as invalid UTF-8 (found by fuzz_config) */
    for (const char *p = key; *p; p++)
        if (*p == '=' || (unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
            return err_set(e, "%s: bad key '%s' (keys are printable ASCII, no spaces or '=')", where, key);
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* parsing values */

static int is_null_text(const char *s) {
    return !s[0] || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL");
}

static int parse_double(const char *s, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s) return 1;
    while (isspace((unsigned char)*end)) end++;
    if (*end) return 1;
    *out = v;
    return 0;
}

static int parse_long(const char *s, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || errno == ERANGE) return 1;
    while (isspace((unsigned char)*end)) end++;
    if (*end) return 1;
    *out = v;
    return 0;
}

static int parse_bool(const char *s, int *out) {
    static const char *yes[] = {"true", "yes", "on", "1"}, *no[] = {"false", "no", "off", "0"};
    for (int i = 0; i < 4; i++) {
        if (!strcasecmp(s, yes[i]) || !strcasecmp(s, no[i])) {
            *out = !strcasecmp(s, yes[i]);
            return 0;
        }
    }
    return 1;
}

/* Plain YAML scalars that read back as the same text in block and flow context; anything else
 * is double-quoted. */
static int plain_safe(const char *s) {
    if (!s[0]) return 0;
    if (s[0] == '-' && !(isdigit((unsigned char)s[1]) || s[1] == '.')) return 0;
    for (const char *p = s; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr("_.+-/", *p)) return 0;
    return 1;
}

/* appends s to a growing buffer */
typedef struct Buf {
    char *s;
    size_t len, cap;
} Buf;

static void buf_put(Buf *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->s = xrealloc(b->s, b->cap);
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = 0;
}

static void buf_puts(Buf *b, const char *s) {
    buf_put(b, s, strlen(s));
}

static void buf_scalar(Buf *b, const char *s) {
    if (plain_safe(s)) {
        buf_puts(b, s);
        return;
    }
    buf_puts(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[8];
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            buf_put(b, esc, 2);
        } else if (*p == '\n') {
            buf_puts(b, "\\n");
        } else if (*p == '\t') {
            buf_puts(b, "\\t");
        } else if (*p < 0x20 || *p == 0x7f) {
            snprintf(esc, sizeof esc, "\\x%02x", *p);
            buf_puts(b, esc);
        } else {
            buf_put(b, (const char *)p, 1);
        }
    }
    buf_puts(b, "\"");
}

/* the flow text of a list, "[0.32, 1.0]" */
static char *list_text(char **items, size_t n) {
    Buf b = {0};
    buf_puts(&b, "[");
    for (size_t i = 0; i < n; i++) {
        if (i) buf_puts(&b, ", ");
        buf_scalar(&b, items[i]);
    }
    buf_puts(&b, "]");
    return b.s;
}

/* A value as the table stores it, before it is attached to a key. */
typedef struct Value {
    char *text;      /* scalar text (NULL for a list) */
    char **items;    /* list items */
    size_t n_items;
    int is_list, is_null;
} Value;

static void value_free(Value *v) {
    free(v->text);
    for (size_t i = 0; i < v->n_items; i++) free(v->items[i]);
    free(v->items);
    memset(v, 0, sizeof(*v));
}

static int scalar_is_null(const yaml_node_t *n) {
    return n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE && is_null_text((const char *)n->data.scalar.value);
}

/* Type check against a declared spec; the message names where the value came from. */
static int validate(const CfgSpec *spec, const char *where, const char *key, const Value *v, Err *e) {
    if (!spec || v->is_null) return 0;
    if (spec->type == CFG_LIST) return 0;   /* a scalar is a list of one */
    if (v->is_list) return err_set(e, "%s: %s: expected a single %s, got a list", where, key, type_name[spec->type]);
    double d;
    long l;
    int b;
    if (spec->type == CFG_FLOAT && parse_double(v->text, &d))
        return err_set(e, "%s: %s: expected a number, got '%s'", where, key, v->text);
    if (spec->type == CFG_INT && parse_long(v->text, &l))
        return err_set(e, "%s: %s: expected an integer, got '%s'", where, key, v->text);
    if (spec->type == CFG_BOOL && parse_bool(v->text, &b))
        return err_set(e, "%s: %s: expected true or false, got '%s'", where, key, v->text);
    return 0;
}

enum { PUT_EXISTING = 0, PUT_ADD = 1 };

/* Values are stored back into checkpoints as YAML (cfg_to_yaml), so they must be text a YAML file
 * can hold: well-formed UTF-8 (no overlong forms, surrogates or code points past U+10FFFF) whose
 * non-ASCII characters YAML allows (U+00A0-U+D7FF, U+E000-U+FFFD, U+10000 and up; ASCII controls
 * are escaped by cfg_to_yaml) and does not read as line breaks (NEL, U+2028, U+2029 fold to a
 * space).  Anything else set from the command line would be written into a checkpoint's config
 * that libyaml then refuses to read (findings 18 and 25 of fuzz_config). */
static int valid_utf8(const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        if (*p < 0x80) {
            p++;
            continue;
        }
        int n = (*p & 0xe0) == 0xc0 ? 1 : (*p & 0xf0) == 0xe0 ? 2 : (*p & 0xf8) == 0xf0 ? 3 : -1;
        if (n < 0) return 0;
        uint32_t cp = *p++ & (0x3fu >> n);
        for (int k = 0; k < n; k++, p++) {
            if ((*p & 0xc0) != 0x80) return 0;
            cp = cp << 6 | (*p & 0x3fu);
        }
        static const uint32_t least[4] = {0, 0x80, 0x800, 0x10000};   /* shortest form */
        if (cp < least[n] || cp > 0x10ffff) return 0;
        if (!((cp >= 0xa0 && cp <= 0xd7ff) || (cp >= 0xe000 && cp <= 0xfffd) || cp >= 0x10000)) return 0;
        if (cp == 0x2028 || cp == 0x2029) return 0;   /* line breaks to libyaml: not kept in a scalar */
    }
    return 1;
}

static int check_utf8(const Value *v, const char *where, const char *key, Err *e) {
    if (v->text && !valid_utf8(v->text))
        return err_set(e, "%s: key '%s': value is not valid UTF-8 text (or holds a character YAML cannot)", where, key);
    for (size_t i = 0; i < v->n_items; i++)
        if (v->items[i] && !valid_utf8(v->items[i]))
            return err_set(e, "%s: key '%s': list item %zu is not valid UTF-8 text (or holds a character YAML cannot)",
                           where, key, i);
    return 0;
}

/* Sets key to v, taking ownership of v's memory (freed on failure too).  PUT_EXISTING: the key
 * must already exist. */
static int put(Config *cfg, const char *key, Value *v, int mode, int origin, const char *where, Err *e) {
    int bad = check_key(where, key, e) || check_utf8(v, where, key, e);
    CfgEntry *en = bad ? NULL : find(cfg, key);
    if (!bad && !en) {
        const char *c = conflict(cfg, key);
        if (mode == PUT_EXISTING) bad = unknown_key(cfg, where, key, e);
        else if (c) bad = err_set(e, "%s: key '%s' conflicts with '%s' (a value cannot also be a map)", where, key, c);
        else if (cfg->n >= CFG_MAX_ENTRIES) bad = err_set(e, "%s: more than %d keys", where, CFG_MAX_ENTRIES);
        if (!bad) {
            if (cfg->n == cfg->cap) {
                cfg->cap = cfg->cap ? 2 * cfg->cap : 64;
                cfg->e = xrealloc(cfg->e, cfg->cap * sizeof(CfgEntry));
            }
            en = &cfg->e[cfg->n++];
            memset(en, 0, sizeof(*en));
            en->key = xstrdup(key);
            index_entry(cfg, cfg->n - 1);
        }
    }
    if (!bad) bad = validate(en->spec, where, key, v, e);
    if (bad) {
        value_free(v);
        return 1;
    }
    entry_clear_value(en);
    en->is_list = v->is_list;
    en->is_null = v->is_null;
    en->items = v->items;
    en->n_items = v->n_items;
    en->value = v->is_list ? list_text(v->items, v->n_items) : v->text;
    if (v->is_list) free(v->text);
    en->origin = origin;
    en->stamp = cfg->stamp;
    memset(v, 0, sizeof(*v));
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* YAML */

typedef struct Loader {
    Config *cfg;
    yaml_document_t *doc;
    const char *where;
    int origin;
    int mode;
    size_t visits;      /* nodes walked, aliases counted every time they are reached */
} Loader;

/* a sequence of scalars; 1 when an item is itself a list or a map */
static int sequence_value(yaml_document_t *doc, yaml_node_t *node, Value *v) {
    memset(v, 0, sizeof(*v));
    v->is_list = 1;
    size_t n = (size_t)(node->data.sequence.items.top - node->data.sequence.items.start);
    v->items = xrealloc(NULL, n * sizeof(char *));
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *it = yaml_document_get_node(doc, node->data.sequence.items.start[i]);
        if (!it || it->type != YAML_SCALAR_NODE) {
            value_free(v);
            return 1;
        }
        v->items[v->n_items++] = xstrdup((const char *)it->data.scalar.value);
    }
    return 0;
}

static int flatten(Loader *ld, yaml_node_t *node, const char *prefix, int depth, Err *e) {
    if (depth > CFG_MAX_DEPTH) return err_set(e, "%s: nesting deeper than %d at '%s'", ld->where, CFG_MAX_DEPTH, prefix);
    if (++ld->visits > CFG_MAX_VISITS) return err_set(e, "%s: too many nodes (alias expansion?)", ld->where);
    Value v;
    memset(&v, 0, sizeof v);
    switch (node->type) {
    case YAML_MAPPING_NODE: {
        if (node->data.mapping.pairs.top == node->data.mapping.pairs.start && prefix[0])
            return 0;   /* an empty map defines no keys */
        for (yaml_node_pair_t *p = node->data.mapping.pairs.start; p < node->data.mapping.pairs.top; p++) {
            yaml_node_t *k = yaml_document_get_node(ld->doc, p->key);
            yaml_node_t *val = yaml_document_get_node(ld->doc, p->value);
            if (!k || !val) return err_set(e, "%s: malformed mapping under '%s'", ld->where, prefix);
            if (k->type != YAML_SCALAR_NODE)
                return err_set(e, "%s: keys must be plain words (under '%s')", ld->where, prefix[0] ? prefix : "top level");
            char key[CFG_MAX_KEY + 1];
            const char *kk = (const char *)k->data.scalar.value;
            if ((size_t)snprintf(key, sizeof key, "%s%s%s", prefix, prefix[0] ? "." : "", kk) >= sizeof key)
                return err_set(e, "%s: key '%.64s...' is too long", ld->where, key);
            if (flatten(ld, val, key, depth + 1, e)) return 1;
        }
        return 0;
    }
    case YAML_SEQUENCE_NODE:
        if (!prefix[0]) return err_set(e, "%s: the top level must be a mapping of keys, not a list", ld->where);
        if (sequence_value(ld->doc, node, &v))
            return err_set(e, "%s: %s: only lists of plain values are supported", ld->where, prefix);
        break;
    case YAML_SCALAR_NODE:
        if (!prefix[0]) {
            if (scalar_is_null(node)) return 0;   /* an empty file */
            return err_set(e, "%s: the top level must be a mapping of keys", ld->where);
        }
        v.text = xstrdup((const char *)node->data.scalar.value);
        v.is_null = scalar_is_null(node);
        break;
    default:
        return err_set(e, "%s: malformed YAML under '%s'", ld->where, prefix);
    }
    /* the same key twice in one file is almost always a copy-paste mistake */
    CfgEntry *old = find(ld->cfg, prefix);
    if (old && old->stamp == ld->cfg->stamp) {
        value_free(&v);
        return err_set(e, "%s: key '%s' is set twice", ld->where, prefix);
    }
    return put(ld->cfg, prefix, &v, ld->mode, ld->origin, ld->where, e);
}

static int load_parser(Config *cfg, yaml_parser_t *parser, const char *where, int mode, Err *e) {
    yaml_document_t doc;
    if (!yaml_parser_load(parser, &doc)) {
        if (parser->problem)
            return err_set(e, "%s: line %zu, column %zu: %s", where, (size_t)parser->problem_mark.line + 1,
                           (size_t)parser->problem_mark.column + 1, parser->problem);
        return err_set(e, "%s: cannot parse YAML", where);
    }
    int bad = 0;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    cfg->stamp++;
    if (root) {
        Loader ld = {cfg, &doc, where, add_origin(cfg, where), mode, 0};
        bad = flatten(&ld, root, "", 0, e);
    }
    yaml_document_delete(&doc);
    return bad;
}

int cfg_load_string(Config *cfg, const char *yaml, const char *origin, Err *e) {
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser)) return err_set(e, "%s: out of memory", origin);
    yaml_parser_set_input_string(&parser, (const unsigned char *)yaml, strlen(yaml));
    int bad = load_parser(cfg, &parser, origin, cfg->declared ? PUT_EXISTING : PUT_ADD, e);
    yaml_parser_delete(&parser);
    return bad;
}

int cfg_load_file(Config *cfg, const char *path, Err *e) {
    FILE *f = fopen(path, "rb");
    if (!f) return err_set(e, "%s: cannot open config: %s", path, strerror(errno));
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser)) {
        fclose(f);
        return err_set(e, "%s: out of memory", path);
    }
    yaml_parser_set_input_file(&parser, f);
    snprintf(cfg->name, sizeof cfg->name, "%s", path);
    int bad = load_parser(cfg, &parser, path, cfg->declared ? PUT_EXISTING : PUT_ADD, e);
    yaml_parser_delete(&parser);
    fclose(f);
    return bad;
}

/* A command-line value: "[a, b]" is a flow list (parsed by libyaml), anything else is taken
 * as the literal text. */
static int parse_cli_value(const char *text, const char *where, const char *key, Value *v, Err *e) {
    memset(v, 0, sizeof(*v));
    if (text[0] != '[') {
        v->text = xstrdup(text);
        v->is_null = is_null_text(text);
        return 0;
    }
    Buf b = {0};
    buf_puts(&b, "v: ");
    buf_puts(&b, text);
    yaml_parser_t parser;
    yaml_document_t doc;
    int bad = 1;
    if (yaml_parser_initialize(&parser)) {
        yaml_parser_set_input_string(&parser, (const unsigned char *)b.s, b.len);
        if (yaml_parser_load(&parser, &doc)) {
            yaml_node_t *root = yaml_document_get_root_node(&doc);
            if (root && root->type == YAML_MAPPING_NODE &&
                root->data.mapping.pairs.top - root->data.mapping.pairs.start == 1) {
                yaml_node_t *seq = yaml_document_get_node(&doc, root->data.mapping.pairs.start[0].value);
                if (seq && seq->type == YAML_SEQUENCE_NODE) bad = sequence_value(&doc, seq, v);
            }
            yaml_document_delete(&doc);
        }
        yaml_parser_delete(&parser);
    }
    free(b.s);
    if (bad) return err_set(e, "%s: %s: cannot read '%s' as a list of plain values", where, key, text);
    return 0;
}

int cfg_override(Config *cfg, const char *assignment, int allow_new, Err *e) {
    const char *eq = strchr(assignment, '=');
    if (!eq) return err_set(e, "command line: '%s' is not key=value", assignment);
    int add = allow_new;
    const char *k0 = assignment;
    if (*k0 == '+') {   /* "+key=value": the user asks for a new key explicitly */
        add = 1;
        k0++;
    }
    char key[CFG_MAX_KEY + 1];
    size_t kl = (size_t)(eq - k0);
    if (kl == 0 || kl > CFG_MAX_KEY) return err_set(e, "command line: bad key in '%.80s'", assignment);
    memcpy(key, k0, kl);
    key[kl] = 0;
    char where[CFG_MAX_KEY + 64];
    snprintf(where, sizeof where, "command line (%s=...)", key);
    /* an unknown key is reported against the config file, which is where the user will look */
    if (!add && !find(cfg, key)) return unknown_key(cfg, cfg->name, key, e);
    Value v;
    if (parse_cli_value(eq + 1, where, key, &v, e)) return 1;
    cfg->stamp++;
    return put(cfg, key, &v, add ? PUT_ADD : PUT_EXISTING, add_origin(cfg, "command line"), "command line", e);
}

int cfg_set(Config *cfg, const char *key, const char *value, Err *e) {
    Value v;
    if (parse_cli_value(value, "cfg_set", key, &v, e)) return 1;
    cfg->stamp++;
    return put(cfg, key, &v, PUT_ADD, add_origin(cfg, "program"), "cfg_set", e);
}

int cfg_declare(Config *cfg, const CfgSpec *spec, size_t n, Err *e) {
    int origin = add_origin(cfg, "defaults");
    for (size_t i = 0; i < n; i++) {
        Value v;
        const char *def = spec[i].def ? spec[i].def : "";
        if (parse_cli_value(def, "defaults", spec[i].key, &v, e)) return 1;
        if (spec[i].type == CFG_LIST && !v.is_list && !v.is_null) {
            /* a list default written as a scalar is a list of one */
            v.is_list = 1;
            v.items = xrealloc(NULL, sizeof(char *));
            v.items[0] = v.text;
            v.n_items = 1;
            v.text = NULL;
        }
        cfg->stamp++;
        if (put(cfg, spec[i].key, &v, PUT_ADD, origin, "defaults", e)) return 1;
        CfgEntry *en = find(cfg, spec[i].key);
        en->spec = &spec[i];
        Value check = {.text = en->value, .is_list = en->is_list, .is_null = en->is_null};
        if (validate(en->spec, "defaults", en->key, &check, e)) return 1;
    }
    cfg->declared = 1;
    return 0;
}

int cfg_parse_args(Config *cfg, int argc, char **argv, Err *e) {
    int loaded = 0;
    /* the file first, so overrides apply on top of it wherever they appear */
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        size_t n = strlen(a);
        if (strchr(a, '=')) continue;
        int yaml = (n > 5 && !strcmp(a + n - 5, ".yaml")) || (n > 4 && !strcmp(a + n - 4, ".yml"));
        if (!yaml) return err_set(e, "unexpected argument '%s' (expected CONFIG.yaml or key=value)", a);
        if (loaded) return err_set(e, "more than one config file ('%s')", a);
        if (cfg_load_file(cfg, a, e)) return 1;
        loaded = 1;
    }
    for (int i = 0; i < argc; i++)
        if (strchr(argv[i], '=') && cfg_override(cfg, argv[i], 0, e)) return 1;
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* getters: an Err is sticky — only the first problem is kept, so a caller can read every key
 * and check once */

static int sticky(Err *e) {
    return e && e->msg[0];
}

static const CfgEntry *lookup(const Config *cfg, const char *key) {
    const CfgEntry *en = find(cfg, key);
    if (!en && cfg->declared) {
        /* every key of a declared config exists, so this is a typo in the program */
        fprintf(stderr, "versa: config key '%s' is read but was never declared\n", key);
        abort();
    }
    return en;
}

int cfg_has(const Config *cfg, const char *key) {
    const CfgEntry *en = find(cfg, key);
    return en && !en->is_null;
}

const char *cfg_get(const Config *cfg, const char *key) {
    const CfgEntry *en = find(cfg, key);
    return en && !en->is_null ? en->value : NULL;
}

const char *cfg_get_str(const Config *cfg, const char *key, const char *def) {
    const CfgEntry *en = lookup(cfg, key);
    return en && !en->is_null ? en->value : def;
}

double cfg_get_float(const Config *cfg, const char *key, double def, Err *e) {
    const CfgEntry *en = lookup(cfg, key);
    double v;
    if (!en || en->is_null) return def;
    if (en->is_list || parse_double(en->value, &v)) {
        if (!sticky(e)) err_set(e, "%s: %s: expected a number, got '%s'", origin_of(cfg, en), key, en->value);
        return def;
    }
    return v;
}

long cfg_get_int(const Config *cfg, const char *key, long def, Err *e) {
    const CfgEntry *en = lookup(cfg, key);
    long v;
    if (!en || en->is_null) return def;
    if (en->is_list || parse_long(en->value, &v)) {
        if (!sticky(e)) err_set(e, "%s: %s: expected an integer, got '%s'", origin_of(cfg, en), key, en->value);
        return def;
    }
    return v;
}

int cfg_get_bool(const Config *cfg, const char *key, int def, Err *e) {
    const CfgEntry *en = lookup(cfg, key);
    int v;
    if (!en || en->is_null) return def;
    if (en->is_list || parse_bool(en->value, &v)) {
        if (!sticky(e)) err_set(e, "%s: %s: expected true or false, got '%s'", origin_of(cfg, en), key, en->value);
        return def;
    }
    return v;
}

size_t cfg_list_len(const Config *cfg, const char *key) {
    const CfgEntry *en = lookup(cfg, key);
    if (!en || en->is_null) return 0;
    return en->is_list ? en->n_items : 1;
}

const char *cfg_list_item(const Config *cfg, const char *key, size_t i) {
    const CfgEntry *en = lookup(cfg, key);
    if (!en || en->is_null) return NULL;
    if (!en->is_list) return i == 0 ? en->value : NULL;
    return i < en->n_items ? en->items[i] : NULL;
}

size_t cfg_get_floats(const Config *cfg, const char *key, double *out, size_t max, Err *e) {
    size_t n = cfg_list_len(cfg, key);
    if (n > max) {
        if (!sticky(e)) err_set(e, "%s: %s: expected at most %zu values, got %zu", origin_of(cfg, find(cfg, key)), key, max, n);
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        const char *s = cfg_list_item(cfg, key, i);
        if (parse_double(s, &out[i])) {
            if (!sticky(e)) err_set(e, "%s: %s: item %zu: expected a number, got '%s'", origin_of(cfg, find(cfg, key)), key, i, s);
            return 0;
        }
    }
    return n;
}

/* ---------------------------------------------------------------------------------------- */
/* writing back */

static size_t component_len(const char *s) {
    const char *dot = strchr(s, '.');
    return dot ? (size_t)(dot - s) : strlen(s);
}

/* Emits every key under `prefix` (which ends in '.' or is ""), grouping keys that share their
 * next component in the order that component first appears. */
static void emit(const Config *cfg, Buf *b, const char *prefix, int depth) {
    size_t lp = strlen(prefix);
    for (size_t i = 0; i < cfg->n; i++) {
        const char *k = cfg->e[i].key;
        if (strncmp(k, prefix, lp)) continue;
        const char *rest = k + lp;
        size_t cl = component_len(rest);
        /* emitted already, with an earlier key that shares this component? */
        int seen = 0;
        for (size_t j = 0; j < i && !seen; j++) {
            const char *kj = cfg->e[j].key;
            seen = !strncmp(kj, prefix, lp) && component_len(kj + lp) == cl && !strncmp(kj + lp, rest, cl);
        }
        if (seen) continue;
        char comp[CFG_MAX_KEY + 1];
        memcpy(comp, rest, cl);
        comp[cl] = 0;
        for (int d = 0; d < depth; d++) buf_puts(b, "  ");
        buf_scalar(b, comp);
        buf_puts(b, ":");
        if (rest[cl] == '.') {
            buf_puts(b, "\n");
            char sub[CFG_MAX_KEY + 2];
            snprintf(sub, sizeof sub, "%s%s.", prefix, comp);
            emit(cfg, b, sub, depth + 1);
        } else {
            const CfgEntry *en = &cfg->e[i];
            buf_puts(b, " ");
            if (en->is_null) buf_puts(b, "null");
            else if (en->is_list) buf_puts(b, en->value);
            else buf_scalar(b, en->value);
            buf_puts(b, "\n");
        }
    }
}

char *cfg_to_yaml(const Config *cfg) {
    Buf b = {0};
    buf_puts(&b, "");
    emit(cfg, &b, "", 0);
    return b.s;
}

void cfg_print_help(const CfgSpec *spec, size_t n, FILE *out) {
    int w = 0;
    for (size_t i = 0; i < n; i++)
        if ((int)strlen(spec[i].key) > w) w = (int)strlen(spec[i].key);
    for (size_t i = 0; i < n; i++) {
        char def[96];
        snprintf(def, sizeof def, "%s %s", type_name[spec[i].type], spec[i].def && spec[i].def[0] ? spec[i].def : "-");
        fprintf(out, "  %-*s  %-22s %s\n", w, spec[i].key, def, spec[i].help ? spec[i].help : "");
    }
}
