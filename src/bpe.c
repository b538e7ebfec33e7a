/* BPE merges by rank, as HF tokenizers' BPE model computes them: a min-heap
 * of candidate pairs ordered by (rank, position), stale entries skipped when
 * popped; and a cache of encoded pieces, since text repeats its words. */
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "tokenizer.h"

int tok_ids_push(tok_ids *v, int32_t id)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 256;
        int32_t *grown = realloc(v->ids, cap * sizeof *grown);
        if (!grown)
            return -1;
        v->ids = grown;
        v->cap = cap;
    }
    v->ids[v->n++] = id;
    return 0;
}

static uint64_t hash_bytes(const char *s, size_t len)
{
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ len;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdULL;
        h ^= h >> 32;
    }
    uint64_t w = 0;
    memcpy(&w, s + i, len - i);
    h = (h ^ w) * 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 29;
    h *= 0x94d049bb133111ebULL;
    h ^= h >> 31;
    return h ? h : 1;
}

static uint64_t hash_u64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static size_t pow2_at_least(size_t n)
{
    size_t c = 16;
    while (c < n)
        c *= 2;
    return c;
}

/* ---- merges ---- */

int tok_merges_init(tok_merge_table *m, size_t n, dsv4_error *err)
{
    size_t cap = pow2_at_least(n * 2 + 1);
    m->slots = calloc(cap, sizeof *m->slots);
    m->mask = cap - 1;
    if (!m->slots)
        return dsv4_fail(err, "out of memory for %zu merges", n);
    return 0;
}

int tok_merges_put(tok_merge_table *m, int32_t left, int32_t right, int32_t rank, int32_t merged)
{
    uint64_t key = (((uint64_t)(uint32_t)left << 32) | (uint32_t)right) + 1;
    for (size_t i = hash_u64(key) & m->mask;; i = (i + 1) & m->mask) {
        tok_merge_slot *s = &m->slots[i];
        if (s->key == 0 || s->key == key) {
            int fresh = s->key == 0;
            s->key = key;
            s->rank = rank;
            s->merged = merged;
            return fresh;
        }
    }
}

static const tok_merge_slot *merges_get(const tok_merge_table *m, int32_t left, int32_t right)
{
    uint64_t key = (((uint64_t)(uint32_t)left << 32) | (uint32_t)right) + 1;
    for (size_t i = hash_u64(key) & m->mask;; i = (i + 1) & m->mask) {
        const tok_merge_slot *s = &m->slots[i];
        if (s->key == key)
            return s;
        if (s->key == 0)
            return NULL;
    }
}

void tok_merges_free(tok_merge_table *m)
{
    free(m->slots);
    m->slots = NULL;
}

/* ---- vocab strings → id ---- */

int tok_str_index_init(tok_str_index *x, size_t n)
{
    size_t cap = pow2_at_least(n * 2 + 1);
    x->slots = calloc(cap, sizeof *x->slots);
    x->mask = cap - 1;
    return x->slots ? 0 : -1;
}

static const char *token_span(const dsv4_tokenizer *t, int32_t id, size_t *len)
{
    *len = (size_t)(t->vocab_off[id + 1] - t->vocab_off[id]);
    return t->vocab_bytes + t->vocab_off[id];
}

void tok_str_index_put(tok_str_index *x, const dsv4_tokenizer *t, int32_t id)
{
    size_t len;
    const char *s = token_span(t, id, &len);
    for (size_t i = hash_bytes(s, len) & x->mask;; i = (i + 1) & x->mask) {
        if (x->slots[i] == 0) {
            x->slots[i] = (uint32_t)id + 1;
            return;
        }
        size_t l2;
        const char *s2 = token_span(t, (int32_t)x->slots[i] - 1, &l2);
        if (l2 == len && memcmp(s, s2, len) == 0) {
            x->slots[i] = (uint32_t)id + 1; /* a later duplicate wins */
            return;
        }
    }
}

int32_t tok_str_index_get(const tok_str_index *x, const dsv4_tokenizer *t, const char *s, size_t len)
{
    for (size_t i = hash_bytes(s, len) & x->mask;; i = (i + 1) & x->mask) {
        if (x->slots[i] == 0)
            return -1;
        size_t l2;
        const char *s2 = token_span(t, (int32_t)x->slots[i] - 1, &l2);
        if (l2 == len && memcmp(s, s2, len) == 0)
            return (int32_t)x->slots[i] - 1;
    }
}

void tok_str_index_free(tok_str_index *x)
{
    free(x->slots);
    x->slots = NULL;
}

/* ---- cache ---- */

enum { CACHE_MAX_PIECE = 128, CACHE_SLOTS = 1 << 17 };

static void cache_clear(tok_cache *c)
{
    memset(c->slots, 0, (c->mask + 1) * sizeof *c->slots);
    c->used = 0;
    c->text_len = 0;
    c->ids_len = 0;
}

static const tok_cache_slot *cache_find(const tok_cache *c, uint64_t h, const char *s, size_t len, size_t *slot)
{
    for (size_t i = h & c->mask;; i = (i + 1) & c->mask) {
        const tok_cache_slot *e = &c->slots[i];
        if (e->hash == 0) {
            *slot = i;
            return NULL;
        }
        if (e->hash == h && e->text_len == len && memcmp(c->text + e->text_off, s, len) == 0)
            return e;
    }
}

static void cache_store(tok_cache *c, size_t slot, uint64_t h, const char *s, size_t len, const int32_t *ids, size_t n)
{
    if (!c->slots) {
        c->slots = calloc(CACHE_SLOTS, sizeof *c->slots);
        if (!c->slots)
            return; /* no cache is slower, not wrong */
        c->mask = CACHE_SLOTS - 1;
        size_t dummy;
        cache_find(c, h, s, len, &dummy);
        slot = dummy;
    }
    if (c->used * 2 >= c->mask + 1) {
        cache_clear(c);
        cache_find(c, h, s, len, &slot);
    }
    if (c->text_len + len > c->text_cap) {
        size_t cap = c->text_cap ? c->text_cap * 2 : 1 << 20;
        while (cap < c->text_len + len)
            cap *= 2;
        char *g = realloc(c->text, cap);
        if (!g)
            return;
        c->text = g;
        c->text_cap = cap;
    }
    if (c->ids_len + n > c->ids_cap) {
        size_t cap = c->ids_cap ? c->ids_cap * 2 : 1 << 18;
        while (cap < c->ids_len + n)
            cap *= 2;
        int32_t *g = realloc(c->ids, cap * sizeof *g);
        if (!g)
            return;
        c->ids = g;
        c->ids_cap = cap;
    }
    tok_cache_slot *e = &c->slots[slot];
    e->hash = h;
    e->text_off = (uint32_t)c->text_len;
    e->text_len = (uint32_t)len;
    e->ids_off = (uint32_t)c->ids_len;
    e->ids_len = (uint32_t)n;
    memcpy(c->text + c->text_len, s, len);
    c->text_len += len;
    memcpy(c->ids + c->ids_len, ids, n * sizeof *ids);
    c->ids_len += n;
    c->used++;
}

void tok_cache_free(tok_cache *c)
{
    free(c->slots);
    free(c->text);
    free(c->ids);
    memset(c, 0, sizeof *c);
}

/* ---- the merge loop ---- */

typedef struct {
    int32_t rank, pos, merged;
} heap_entry;

static int heap_less(const heap_entry *a, const heap_entry *b)
{
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void heap_push(heap_entry *h, size_t *n, heap_entry e)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_less(&e, &h[p]))
            break;
        h[i] = h[p];
        i = p;
    }
    h[i] = e;
}

static heap_entry heap_pop(heap_entry *h, size_t *n)
{
    heap_entry top = h[0], last = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n)
            break;
        if (c + 1 < *n && heap_less(&h[c + 1], &h[c]))
            c++;
        if (!heap_less(&h[c], &last))
            break;
        h[i] = h[c];
        i = c;
    }
    if (*n)
        h[i] = last;
    return top;
}

typedef struct {
    int32_t id, prev, next, len; /* len 0 = merged away */
} symbol;

static void push_pair(const tok_merge_table *m, heap_entry *heap, size_t *nh, const symbol *sym, int32_t pos)
{
    int32_t next = sym[pos].next;
    if (next < 0)
        return;
    const tok_merge_slot *s = merges_get(m, sym[pos].id, sym[next].id);
    if (s)
        heap_push(heap, nh, (heap_entry){ s->rank, pos, s->merged });
}

static int bpe_merge(const dsv4_tokenizer *t, const unsigned char *s, size_t len, tok_ids *out)
{
    enum { STACK = 64 };
    symbol sym_stack[STACK];
    heap_entry heap_stack[STACK * 3];
    symbol *sym = sym_stack;
    heap_entry *heap = heap_stack;
    if (len > STACK) {
        sym = malloc(len * sizeof *sym);
        /* each merge pushes at most two entries on top of the initial len - 1 */
        heap = malloc(len * 3 * sizeof *heap);
        if (!sym || !heap) {
            free(sym);
            free(heap);
            return -1;
        }
    }
    /* Bytes the vocab lacks are dropped, as HF does without an unk token. */
    int32_t n = 0;
    for (size_t i = 0; i < len; i++) {
        int32_t id = t->byte_id[s[i]];
        if (id < 0)
            continue;
        sym[n] = (symbol){ id, n - 1, n + 1, 1 };
        n++;
    }
    if (n > 0)
        sym[n - 1].next = -1;
    size_t nh = 0;
    for (int32_t i = 0; i + 1 < n; i++)
        push_pair(&t->merges, heap, &nh, sym, i);
    while (nh > 0) {
        heap_entry top = heap_pop(heap, &nh);
        symbol *a = &sym[top.pos];
        if (a->len == 0 || a->next < 0)
            continue;
        symbol *b = &sym[a->next];
        const tok_merge_slot *cur = merges_get(&t->merges, a->id, b->id);
        if (!cur || cur->merged != top.merged)
            continue;
        a->id = top.merged;
        a->len += b->len;
        a->next = b->next;
        b->len = 0;
        if (a->next >= 0)
            sym[a->next].prev = top.pos;
        if (a->prev >= 0)
            push_pair(&t->merges, heap, &nh, sym, a->prev);
        push_pair(&t->merges, heap, &nh, sym, top.pos);
    }
    int status = 0;
    for (int32_t i = 0; n > 0 && i >= 0 && status == 0; i = sym[i].next)
        status = tok_ids_push(out, sym[i].id);
    if (sym != sym_stack) {
        free(sym);
        free(heap);
    }
    return status;
}

int tok_bpe_piece(dsv4_tokenizer *t, const char *s, size_t len, tok_ids *out)
{
    if (len == 0)
        return 0;
    if (t->ignore_merges) {
        int32_t whole = tok_str_index_get(&t->vocab, t, s, len);
        if (whole >= 0)
            return tok_ids_push(out, whole);
    }
    if (len > CACHE_MAX_PIECE)
        return bpe_merge(t, (const unsigned char *)s, len, out);
    uint64_t h = hash_bytes(s, len);
    size_t slot = 0;
    if (t->cache.slots) {
        const tok_cache_slot *e = cache_find(&t->cache, h, s, len, &slot);
        if (e) {
            for (uint32_t i = 0; i < e->ids_len; i++)
                if (tok_ids_push(out, t->cache.ids[e->ids_off + i]))
                    return -1;
            return 0;
        }
    }
    size_t before = out->n;
    if (bpe_merge(t, (const unsigned char *)s, len, out))
        return -1;
    cache_store(&t->cache, slot, h, s, len, out->ids + before, out->n - before);
    return 0;
}
