/* Added (and special) tokens are cut out of the text before normalization
 * and pre-tokenization, leftmost-longest, as HF's AddedVocabulary does. */
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "tokenizer.h"

static int32_t trie_new_node(tok_trie *trie, uint8_t byte)
{
    if (trie->n_nodes == trie->cap) {
        int cap = trie->cap ? trie->cap * 2 : 256;
        tok_trie_node *g = realloc(trie->nodes, (size_t)cap * sizeof *g);
        if (!g)
            return -1;
        trie->nodes = g;
        trie->cap = cap;
    }
    trie->nodes[trie->n_nodes] = (tok_trie_node){ -1, -1, -1, byte };
    return trie->n_nodes++;
}

static int32_t trie_child(const tok_trie *trie, int32_t node, uint8_t byte)
{
    for (int32_t c = trie->nodes[node].first_child; c >= 0; c = trie->nodes[c].next_sibling)
        if (trie->nodes[c].byte == byte)
            return c;
    return -1;
}

int tok_trie_build(tok_trie *trie, const tok_added *added, int n_added, int normalized, dsv4_error *err)
{
    memset(trie, 0, sizeof *trie);
    if (trie_new_node(trie, 0) < 0)
        return dsv4_fail(err, "out of memory for added tokens");
    for (int i = 0; i < n_added; i++) {
        const tok_added *a = &added[i];
        /* Special tokens are never normalized (HF's rule), whatever the flag says. */
        int is_normalized = a->normalized && !a->special;
        if (is_normalized != normalized || a->len == 0)
            continue;
        int32_t node = 0;
        for (size_t k = 0; k < a->len; k++) {
            uint8_t b = (uint8_t)a->content[k];
            int32_t c = trie_child(trie, node, b);
            if (c < 0) {
                c = trie_new_node(trie, b);
                if (c < 0)
                    return dsv4_fail(err, "out of memory for added tokens");
                trie->nodes[c].next_sibling = trie->nodes[node].first_child;
                trie->nodes[node].first_child = c;
            }
            node = c;
        }
        trie->nodes[node].token = i; /* a later duplicate wins */
        trie->can_start[(uint8_t)a->content[0]] = 1;
    }
    return 0;
}

void tok_trie_free(tok_trie *trie)
{
    free(trie->nodes);
    memset(trie, 0, sizeof *trie);
}

/* Unicode White_Space (what Rust's char::is_whitespace tests): length of the
 * whitespace character at s, or 0. */
static int whitespace_len(const unsigned char *s, size_t len)
{
    if (len >= 1 && (s[0] == ' ' || (s[0] >= 0x09 && s[0] <= 0x0D)))
        return 1;
    if (len >= 2 && s[0] == 0xC2 && (s[1] == 0x85 || s[1] == 0xA0))
        return 2;
    if (len >= 3) {
        unsigned cp = ((unsigned)(s[0] & 0x0F) << 12) | ((unsigned)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
        if ((s[0] & 0xF0) == 0xE0 &&
            (cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
             cp == 0x205F || cp == 0x3000))
            return 3;
    }
    return 0;
}

int tok_trie_find(const tok_trie *trie, const tok_added *added, const char *s, size_t len, size_t from,
                  size_t *start, size_t *end)
{
    const unsigned char *u = (const unsigned char *)s;
    if (!trie->nodes)
        return -1;
    for (size_t i = from; i < len; i++) {
        if (!trie->can_start[u[i]])
            continue;
        int32_t node = 0, best = -1;
        size_t best_end = 0;
        for (size_t k = i; k < len; k++) {
            node = trie_child(trie, node, u[k]);
            if (node < 0)
                break;
            if (trie->nodes[node].token >= 0) {
                best = trie->nodes[node].token;
                best_end = k + 1;
            }
        }
        if (best < 0)
            continue;
        size_t a = i, b = best_end;
        if (added[best].lstrip) {
            /* step back over whitespace characters (continuation bytes first) */
            while (a > from) {
                size_t p = a - 1;
                while (p > from && (u[p] & 0xC0) == 0x80)
                    p--;
                int w = whitespace_len(u + p, a - p);
                if (w == 0 || p + (size_t)w != a)
                    break;
                a = p;
            }
        }
        if (added[best].rstrip) {
            int w;
            while (b < len && (w = whitespace_len(u + b, len - b)) > 0)
                b += (size_t)w;
        }
        *start = a;
        *end = b;
        return best;
    }
    return -1;
}
