/* added.c - splitting text on added tokens (special tokens and tokens added to a
 * vocabulary after training) before anything else sees it.
 *
 * Matching follows HF tokenizers' AddedVocabulary::find_matches: an Aho-Corasick
 * automaton in leftmost-longest mode over the token contents, non-overlapping; a match
 * of a single_word token that touches word characters is dropped (and its text stays
 * plain text, the scan resuming after it), lstrip / rstrip tokens swallow the
 * whitespace beside them. A byte trie with a first-byte table gives the same matches:
 * at each position the longest token starting there, else move one byte on. */
#include "tok_impl.h"

#include <stdlib.h>
#include <string.h>

static int32_t trie_new_node(fr_trie *tr, uint8_t byte, fr_error *err) {
    if (tr->n == tr->cap) {
        int32_t c = tr->cap ? tr->cap * 2 : 256;
        struct fr_trie_node *p = realloc(tr->nodes, (size_t)c * sizeof *p);
        if (!p) {
            fr_fail(err, FR_ERR_NOMEM, "tokenizer: out of memory (added-token trie)");
            return -1;
        }
        tr->nodes = p;
        tr->cap = c;
    }
    tr->nodes[tr->n] = (struct fr_trie_node){.child = -1, .sibling = -1, .token = -1, .byte = byte};
    return tr->n++;
}

fr_status fr_trie_insert(fr_trie *tr, const uint8_t *s, size_t n, int32_t token, fr_error *err) {
    if (!n) return FR_OK;
    if (tr->root[s[0]] < 0 && (tr->root[s[0]] = trie_new_node(tr, s[0], err)) < 0) return FR_ERR_NOMEM;
    int32_t node = tr->root[s[0]];
    for (size_t i = 1; i < n; i++) {
        int32_t c = tr->nodes[node].child, prev = -1;
        while (c >= 0 && tr->nodes[c].byte != s[i]) prev = c, c = tr->nodes[c].sibling;
        if (c < 0) {
            if ((c = trie_new_node(tr, s[i], err)) < 0) return FR_ERR_NOMEM;
            if (prev < 0) tr->nodes[node].child = c;
            else tr->nodes[prev].sibling = c;
        }
        node = c;
    }
    tr->nodes[node].token = token; /* a repeated content keeps the later token, as HF's map does */
    return FR_OK;
}

void fr_trie_release(fr_trie *tr) {
    free(tr->nodes);
    memset(tr, 0, sizeof *tr);
    memset(tr->root, 0xff, sizeof tr->root);
}

/* Start of the character that ends at s[end] (exclusive), or end if none is valid. */
static size_t prev_char(const uint8_t *s, size_t lo, size_t end, int32_t *cp) {
    for (size_t k = 1; k <= 4 && k <= end - lo; k++) {
        size_t b = end - k;
        if ((s[b] & 0xc0) == 0x80 && k < 4) continue;
        if (fr_utf8_next(s + b, end - b, cp) == (int)k) return b;
        return end;
    }
    return end;
}

fr_status fr_added_split(const fr_tokenizer *t, const fr_trie *tr, const uint8_t *s, size_t n, bool skip_special,
                         fr_added_cb cb, void *ctx, fr_error *err) {
    fr_status rc;
    size_t start_offset = 0, i = 0;
    if (tr->n == 0) return n ? cb(ctx, s, n, -1, 0, err) : FR_OK;
    while (i < n) {
        int32_t node = tr->root[s[i]];
        if (node < 0) {
            i++;
            continue;
        }
        int32_t best = -1;
        size_t best_end = 0, j = i + 1;
        for (;;) {
            if (tr->nodes[node].token >= 0) best = tr->nodes[node].token, best_end = j;
            if (j == n) break;
            int32_t c = tr->nodes[node].child;
            while (c >= 0 && tr->nodes[c].byte != s[j]) c = tr->nodes[c].sibling;
            if (c < 0) break;
            node = c;
            j++;
        }
        if (best < 0) {
            i++;
            continue;
        }
        const fr_added_token *a = &t->added[best];
        size_t ms = i, me = best_end;
        i = best_end; /* non-overlapping: the scan resumes after this match either way */
        if (skip_special && a->special) continue;
        if (a->single_word) {
            int32_t cp;
            size_t b = ms > 0 ? prev_char(s, 0, ms, &cp) : ms;
            bool start_space = ms == 0 || b == ms || !fr_uni_is_word(cp);
            int k = me < n ? fr_utf8_next(s + me, n - me, &cp) : 0;
            bool stop_space = me == n || k == 0 || !fr_uni_is_word(cp);
            if (!start_space || !stop_space) continue;
        }
        if (a->lstrip) { /* swallow the whitespace on the left, but not text already consumed */
            int32_t cp;
            size_t b;
            while (ms > start_offset && (b = prev_char(s, start_offset, ms, &cp)) < ms && fr_uni_is_space(cp)) ms = b;
        }
        if (a->rstrip) {
            int32_t cp;
            int k;
            while (me < n && (k = fr_utf8_next(s + me, n - me, &cp)) > 0 && fr_uni_is_space(cp)) me += (size_t)k;
            i = me;
        }
        if (start_offset < ms && (rc = cb(ctx, s + start_offset, ms - start_offset, -1, start_offset, err))) return rc;
        if ((rc = cb(ctx, s + ms, me - ms, best, ms, err))) return rc;
        start_offset = me;
    }
    if (start_offset < n) return cb(ctx, s + start_offset, n - start_offset, -1, start_offset, err);
    return FR_OK;
}
