/* Byte-level BPE tokenizer (HF tokenizer.json), shared between its files:
 * tokenizer_load.c (JSON → tables), added_tokens.c (special tokens split out
 * before anything else), pretokenize.c (the regex Split steps, PCRE2),
 * bpe.c (merges by rank, piece cache), tokenizer.c (the public calls).
 *
 * BPE runs on raw bytes, not on the byte-level "Ġ" alphabet: every vocab
 * string is mapped back to its bytes at load time, so the pre-tokenized
 * pieces are plain spans of the input and need no copy or remapping. */
#ifndef DSV4_TOKENIZER_H
#define DSV4_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "dsv4.h"

/* ---- growable id buffer ---- */
typedef struct {
    int32_t *ids;
    size_t n, cap;
} tok_ids;
int tok_ids_push(tok_ids *v, int32_t id);

/* ---- byte strings → id (vocab lookups at load time) ---- */
typedef struct {
    uint32_t *slots; /* id + 1, 0 = empty */
    size_t mask;
} tok_str_index;

/* ---- merges: (left id, right id) → (rank, merged id) ---- */
typedef struct {
    uint64_t key; /* (left << 32 | right) + 1; 0 = empty slot */
    int32_t rank, merged;
} tok_merge_slot;

typedef struct {
    tok_merge_slot *slots;
    size_t mask;
} tok_merge_table;

/* ---- cache of encoded pieces (most text repeats its words) ---- */
typedef struct {
    uint64_t hash;   /* 0 = empty */
    uint32_t text_off, text_len; /* into the cache's byte arena */
    uint32_t ids_off, ids_len;   /* into the cache's id arena */
} tok_cache_slot;

typedef struct {
    tok_cache_slot *slots;
    size_t mask, used;
    char *text;
    size_t text_len, text_cap;
    int32_t *ids;
    size_t ids_len, ids_cap;
} tok_cache;

/* ---- added tokens, matched leftmost-longest with a byte trie ---- */
typedef struct {
    int32_t first_child, next_sibling;
    int32_t token; /* index into added[], or -1 */
    uint8_t byte;
} tok_trie_node;

typedef struct {
    tok_trie_node *nodes; /* nodes[0] is the root */
    int n_nodes, cap;
    uint8_t can_start[256];
} tok_trie;

typedef struct {
    char *content;
    size_t len;
    int32_t id;
    int special, lstrip, rstrip, normalized;
} tok_added;

/* ---- pre-tokenizer steps ---- */
typedef enum { SPLIT_REMOVED, SPLIT_ISOLATED, SPLIT_MERGED_PREV, SPLIT_MERGED_NEXT, SPLIT_CONTIGUOUS } tok_split_behavior;

typedef struct {
    void *code;        /* pcre2_code_8 */
    void *match_data;  /* pcre2_match_data_8 */
    tok_split_behavior behavior;
    int invert;
} tok_pretok_step;

/* A piece of the text: a span of the segment being pre-tokenized. */
typedef struct {
    size_t off, len;
} tok_piece;

typedef struct {
    tok_piece *items;
    size_t n, cap;
} tok_pieces;

struct dsv4_tokenizer {
    int n_ids;               /* highest id + 1 */
    char *bytes;             /* every id's decoded bytes, back to back */
    uint64_t *bytes_off;     /* [n_ids + 1]; an unused id has an empty span */
    char *vocab_bytes;       /* model.vocab's spelling of each id (the string index points here) */
    uint64_t *vocab_off;     /* [n_ids + 1] */
    int ignore_merges;       /* model.ignore_merges: a piece that is a vocab entry is taken whole */
    uint8_t *is_added;       /* [n_ids] */
    uint8_t *is_special;     /* [n_ids] */
    int32_t byte_id[256];    /* the id of each single byte, -1 if the vocab lacks it */
    tok_str_index vocab;     /* model.vocab: bytes → id */
    tok_merge_table merges;
    tok_added *added;
    int n_added;
    tok_trie trie_raw, trie_normalized; /* HF matches non-normalized added tokens first */
    tok_pretok_step *steps;
    int n_steps;
    int prefix_space;        /* a leading ByteLevel step with add_prefix_space: each segment gets a ' ' first */
    int bos_id, eos_id, add_bos;
    tok_cache cache;
    tok_pieces pieces, scratch; /* reused between calls: the tokenizer is not thread-safe */
};

/* tokenizer_load.c */
int tok_load(dsv4_tokenizer *t, const char *dir, dsv4_error *err);

/* bpe.c */
int tok_merges_init(tok_merge_table *m, size_t n, dsv4_error *err);
/* 1 if added, 0 if the pair already had a rank (later entries win, as in HF), -1 out of memory. */
int tok_merges_put(tok_merge_table *m, int32_t left, int32_t right, int32_t rank, int32_t merged);
void tok_merges_free(tok_merge_table *m);
int tok_str_index_init(tok_str_index *x, size_t n);
void tok_str_index_put(tok_str_index *x, const dsv4_tokenizer *t, int32_t id);
int32_t tok_str_index_get(const tok_str_index *x, const dsv4_tokenizer *t, const char *s, size_t len);
void tok_str_index_free(tok_str_index *x);
/* Encodes one pre-tokenized piece and appends its ids. */
int tok_bpe_piece(dsv4_tokenizer *t, const char *s, size_t len, tok_ids *out);
void tok_cache_free(tok_cache *c);

/* pretokenize.c */
int tok_pretok_compile(tok_pretok_step *step, const char *pattern, int literal, dsv4_error *err, const char *field);
void tok_pretok_free(tok_pretok_step *step);
/* Splits text[0..len) through every step; the result is in t->pieces. */
int tok_pretokenize(dsv4_tokenizer *t, const char *text, size_t len, dsv4_error *err);
/* The GPT-2 pattern a ByteLevel pre-tokenizer uses when use_regex is true. */
extern const char tok_gpt2_pattern[];

/* added_tokens.c */
int tok_trie_build(tok_trie *trie, const tok_added *added, int n_added, int normalized, dsv4_error *err);
void tok_trie_free(tok_trie *trie);
/* Leftmost-longest match at or after `from`: returns the added[] index and
 * sets *start, *end (after lstrip/rstrip), or -1 if none. */
int tok_trie_find(const tok_trie *trie, const tok_added *added, const char *s, size_t len, size_t from,
                  size_t *start, size_t *end);

/* utf8.c */
/* 1: a valid character of *n bytes; 0: invalid, *n = length of the maximal invalid
 * subpart; -1: the bytes end inside a character that could still be completed. */
int tok_utf8_classify(const unsigned char *s, size_t len, size_t *n);
/* Length of the valid UTF-8 sequence at s (1..4), or 0 if invalid/incomplete. */
int tok_utf8_valid_len(const unsigned char *s, size_t len);
/* Offset of the first invalid byte, or len if all valid. */
size_t tok_utf8_check(const char *s, size_t len);
/* Copies s with each maximal invalid subsequence replaced by U+FFFD (Rust's from_utf8_lossy rule).
 * Returns a malloc'ed string; *out_len gets its length. */
char *tok_utf8_lossy(const char *s, size_t len, size_t *out_len);

#endif
