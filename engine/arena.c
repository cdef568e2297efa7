/* arena.c — chained bump allocator.  Reset keeps every chunk: after the first training step
 * the step arena has grown to what one step needs and never touches malloc again. */
#include "engine.h"
#include <stdlib.h>
#include <string.h>

struct ArenaChunk {
    ArenaChunk *next;
    size_t cap, off;
    char *mem;  /* 64-byte aligned */
};

static ArenaChunk *chunk_new(size_t cap) {
    ArenaChunk *ch = malloc(sizeof(*ch));
    void *mem = NULL;
    if (!ch || posix_memalign(&mem, 64, cap) != 0) {
        fprintf(stderr, "versa: out of memory allocating a %zu-byte arena chunk\n", cap);
        exit(1);
    }
    ch->next = NULL;
    ch->cap = cap;
    ch->off = 0;
    ch->mem = mem;
    return ch;
}

void arena_init(Arena *a, size_t chunk_bytes) {
    memset(a, 0, sizeof(*a));
    a->chunk_bytes = chunk_bytes ? chunk_bytes : ((size_t)64 << 20);
}

void *arena_alloc(Arena *a, size_t bytes) {
    size_t need = (bytes + 63) & ~(size_t)63;
    if (need == 0) need = 64;
    /* walk forward through chunks kept from earlier steps before growing */
    while (a->cur && a->cur->off + need > a->cur->cap) {
        if (!a->cur->next) break;
        a->cur = a->cur->next;
        a->cur->off = 0;
    }
    if (!a->cur || a->cur->off + need > a->cur->cap) {
        size_t cap = need > a->chunk_bytes ? need : a->chunk_bytes;
        ArenaChunk *ch = chunk_new(cap);
        if (!a->head) a->head = ch;
        else {
            /* insert after cur, so chunks after it (if any were too small) are kept */
            ch->next = a->cur->next;
            a->cur->next = ch;
        }
        a->cur = ch;
    }
    void *p = a->cur->mem + a->cur->off;
    a->cur->off += need;
    a->used += need;
    if (a->used > a->peak) a->peak = a->used;
    return p;
}

void *arena_calloc(Arena *a, size_t bytes) {
    void *p = arena_alloc(a, bytes);
    memset(p, 0, bytes);
    return p;
}

void arena_reset(Arena *a) {
    for (ArenaChunk *ch = a->head; ch; ch = ch->next) ch->off = 0;
    a->cur = a->head;
    a->used = 0;
}

void arena_free(Arena *a) {
    ArenaChunk *ch = a->head;
    while (ch) {
        ArenaChunk *next = ch->next;
        free(ch->mem);
        free(ch);
        ch = next;
    }
    size_t cb = a->chunk_bytes;
    memset(a, 0, sizeof(*a));
    a->chunk_bytes = cb;
}

ArenaMark arena_mark(const Arena *a) {
    ArenaMark m = {a->cur, a->cur ? a->cur->off : 0, a->used};
    return m;
}

void arena_release(Arena *a, ArenaMark m) {
    /* chunks after the marked one are reset when arena_alloc walks into them again */
    if (m.chunk) {
        a->cur = m.chunk;
        a->cur->off = m.off;
    } else {
        a->cur = a->head;
        if (a->cur) a->cur->off = 0;
    }
    a->used = m.used;
}

int arena_since_mark(const Arena *a, ArenaMark m, const void *p) {
    const char *q = p;
    for (ArenaChunk *ch = m.chunk ? m.chunk : a->head; ch; ch = ch->next) {
        size_t from = ch == m.chunk ? m.off : 0;
        if (q >= ch->mem + from && q < ch->mem + ch->cap) return 1;
    }
    return 0;
}
