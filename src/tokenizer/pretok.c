/* pretok.c - tokenizer.json pre-tokenizers: Split (regex or string; behaviours
 * Isolated, Removed, MergedWithPrevious, MergedWithNext, Contiguous; invert), ByteLevel
 * (add_prefix_space, use_regex with GPT-2's pattern), Digits, Metaspace,
 * WhitespaceSplit, and Sequence (flattened).
 *
 * A section of text is cut into spans of one arena; steps that only split produce
 * sub-spans of the same bytes, steps that rewrite (Metaspace, ByteLevel's prefix space)
 * append the new text to the arena. Splitting follows HF's NormalizedString::split:
 * the pattern's matches and the gaps between them cover the text, the behaviour folds
 * them into pieces, empty pieces are dropped. ByteLevel's mapping of bytes to GPT-2
 * characters is not done at all: BPE runs on raw bytes (see tok_impl.h), so ByteLevel
 * must be the last step. */
#include "tok_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What the ByteLevel pre-tokenizer splits with when use_regex is set. */
static const char gpt2_pattern[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

enum { P_SPLIT, P_BYTELEVEL, P_METASPACE };
enum { B_REMOVED, B_ISOLATED, B_MERGED_PREV, B_MERGED_NEXT, B_CONTIGUOUS };
enum { PREPEND_ALWAYS, PREPEND_NEVER, PREPEND_FIRST };

typedef struct {
    int type;
    fr_regex re; /* P_SPLIT; P_BYTELEVEL when use_regex */
    int behavior;
    bool invert;
    bool add_prefix_space, use_regex; /* P_BYTELEVEL */
    uint8_t repl[8];                  /* P_METASPACE replacement character (UTF-8) */
    int repl_len, prepend;
    bool split;
} pt_step;

struct fr_pretok {
    pt_step *steps;
    int n;
};

fr_status fr_spans_push(fr_spans *s, uint32_t off, uint32_t len, uint32_t first, fr_error *err) {
    if (s->n == s->cap) {
        size_t c = s->cap ? s->cap * 2 : 256;
        fr_span *v = realloc(s->v, c * sizeof *v);
        if (!v) return fr_fail(err, FR_ERR_NOMEM, "tokenizer: out of memory (%zu pieces)", c);
        s->v = v;
        s->cap = c;
    }
    s->v[s->n++] = (fr_span){off, len, first};
    return FR_OK;
}

void fr_pretok_free(fr_pretok *p) {
    if (!p) return;
    for (int i = 0; i < p->n; i++) fr_regex_free(&p->steps[i].re);
    free(p->steps);
    free(p);
}

static fr_status add_step(fr_pretok *p, pt_step st, fr_error *err) {
    pt_step *v = realloc(p->steps, (size_t)(p->n + 1) * sizeof *v);
    if (!v) {
        fr_regex_free(&st.re);
        return fr_fail(err, FR_ERR_NOMEM, "tokenizer: out of memory (pre-tokenizer)");
    }
    p->steps = v;
    v[p->n++] = st;
    return FR_OK;
}

static bool get_bool(const cJSON *j, const char *key, bool dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : dflt;
}

static fr_status parse_into(fr_pretok *p, const cJSON *j, const char *path, int depth, fr_error *err) {
    if (!j || cJSON_IsNull(j)) return FR_OK;
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(j, "type");
    if (!cJSON_IsObject(j) || !cJSON_IsString(type))
        return fr_fail(err, FR_ERR_FORMAT, "%s: expected an object with a \"type\"", path);
    const char *ty = type->valuestring;
    char sub[400];
    pt_step st = {.behavior = B_ISOLATED};
    if (p->n && p->steps[p->n - 1].type == P_BYTELEVEL)
        return fr_fail(err, FR_ERR_UNSUPPORTED, "%s: a pre-tokenizer after ByteLevel is not supported", path);
    if (!strcmp(ty, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(j, "pretokenizers");
        if (!cJSON_IsArray(list)) return fr_fail(err, FR_ERR_FORMAT, "%s.pretokenizers: expected an array", path);
        if (depth > 8) return fr_fail(err, FR_ERR_FORMAT, "%s: pre-tokenizer sequences nested too deeply", path);
        int i = 0;
        for (const cJSON *e = list->child; e; e = e->next, i++) {
            snprintf(sub, sizeof sub, "%s.pretokenizers[%d]", path, i);
            fr_status rc = parse_into(p, e, sub, depth + 1, err);
            if (rc) return rc;
        }
        return FR_OK;
    }
    fr_status rc;
    if (!strcmp(ty, "Split")) {
        static const char *names[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"};
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(j, "behavior");
        if (!cJSON_IsString(b)) return fr_fail(err, FR_ERR_FORMAT, "%s.behavior: expected a string", path);
        st.behavior = -1;
        for (int i = 0; i < 5; i++)
            if (!strcmp(b->valuestring, names[i])) st.behavior = i;
        if (st.behavior < 0)
            return fr_fail(err, FR_ERR_FORMAT, "%s.behavior: unknown behavior \"%s\"", path, b->valuestring);
        st.invert = get_bool(j, "invert", false);
        st.type = P_SPLIT;
        if ((rc = fr_parse_pattern(cJSON_GetObjectItemCaseSensitive(j, "pattern"), path, &st.re, err))) return rc;
    } else if (!strcmp(ty, "ByteLevel")) {
        st.type = P_BYTELEVEL;
        st.add_prefix_space = get_bool(j, "add_prefix_space", true);
        st.use_regex = get_bool(j, "use_regex", true);
        snprintf(sub, sizeof sub, "%s (ByteLevel's GPT-2 pattern)", path);
        if (st.use_regex && (rc = fr_regex_compile(&st.re, gpt2_pattern, strlen(gpt2_pattern), false, sub, err)))
            return rc;
    } else if (!strcmp(ty, "Digits")) { /* HF: split on char::is_numeric, each digit or each run */
        st.type = P_SPLIT;
        st.behavior = get_bool(j, "individual_digits", false) ? B_ISOLATED : B_CONTIGUOUS;
        if ((rc = fr_regex_compile_raw(&st.re, "\\p{N}", path, err))) return rc;
    } else if (!strcmp(ty, "WhitespaceSplit")) {
        st.type = P_SPLIT;
        st.behavior = B_REMOVED;
        if ((rc = fr_regex_compile_raw(&st.re, "\\p{White_Space}", path, err))) return rc;
    } else if (!strcmp(ty, "Metaspace")) {
        st.type = P_METASPACE;
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(j, "replacement");
        const char *repl = cJSON_IsString(r) ? r->valuestring : "\xe2\x96\x81"; /* U+2581 */
        int32_t cp;
        int k = fr_utf8_next((const uint8_t *)repl, strlen(repl), &cp);
        if (!k || repl[k]) return fr_fail(err, FR_ERR_FORMAT, "%s.replacement: expected one character", path);
        memcpy(st.repl, repl, (size_t)k);
        st.repl_len = k;
        const cJSON *ps = cJSON_GetObjectItemCaseSensitive(j, "prepend_scheme");
        if (cJSON_IsString(ps)) {
            if (!strcmp(ps->valuestring, "always")) st.prepend = PREPEND_ALWAYS;
            else if (!strcmp(ps->valuestring, "never")) st.prepend = PREPEND_NEVER;
            else if (!strcmp(ps->valuestring, "first")) st.prepend = PREPEND_FIRST;
            else return fr_fail(err, FR_ERR_FORMAT, "%s.prepend_scheme: unknown \"%s\"", path, ps->valuestring);
        } else /* older files: add_prefix_space */
            st.prepend = get_bool(j, "add_prefix_space", true) ? PREPEND_ALWAYS : PREPEND_NEVER;
        st.split = get_bool(j, "split", true);
    } else
        return fr_fail(err, FR_ERR_UNSUPPORTED, "%s: pre-tokenizer type \"%s\" is not supported", path, ty);
    return add_step(p, st, err);
}

fr_status fr_pretok_parse(const cJSON *j, const char *path, fr_pretok **out, bool *byte_level, fr_error *err) {
    *out = NULL;
    *byte_level = false;
    fr_pretok *p = calloc(1, sizeof *p);
    if (!p) return fr_fail(err, FR_ERR_NOMEM, "out of memory");
    fr_status rc = parse_into(p, j, path, 0, err);
    if (rc || p->n == 0) {
        fr_pretok_free(p);
        return rc;
    }
    *byte_level = p->steps[p->n - 1].type == P_BYTELEVEL;
    *out = p;
    return FR_OK;
}

fr_status fr_pretok_from_regex(const char *pcre2_pattern, const char *what, fr_pretok **out, fr_error *err) {
    *out = NULL;
    fr_pretok *p = calloc(1, sizeof *p);
    if (!p) return fr_fail(err, FR_ERR_NOMEM, "out of memory");
    pt_step st = {.type = P_SPLIT, .behavior = B_ISOLATED};
    fr_status rc = fr_regex_compile_raw(&st.re, pcre2_pattern, what, err);
    if (!rc) rc = add_step(p, st, err);
    if (rc) {
        fr_pretok_free(p);
        return rc;
    }
    *out = p;
    return FR_OK;
}

/* ------------------------------------------------------------------ running */

typedef struct {
    uint32_t s, e;
    bool m;
} seg;

typedef struct {
    seg *v;
    size_t n, cap;
} segs;

static fr_status seg_push(segs *g, size_t s, size_t e, bool m, fr_error *err) {
    if (g->n == g->cap) {
        size_t c = g->cap ? g->cap * 2 : 64;
        seg *v = realloc(g->v, c * sizeof *v);
        if (!v) return fr_fail(err, FR_ERR_NOMEM, "tokenizer: out of memory (split)");
        g->v = v;
        g->cap = c;
    }
    g->v[g->n++] = (seg){(uint32_t)s, (uint32_t)e, m};
    return FR_OK;
}

/* Matches and gaps of re over s[0..n). An empty match right where the previous match
 * ended is skipped (as the onig crate's find_iter does); others split the text. */
static fr_status find_segments(const fr_regex *re, fr_regex_scratch *sc, const uint8_t *s, size_t n, segs *g,
                               fr_error *err) {
    size_t last = 0, pos = 0, ms, me;
    bool any = false;
    fr_status rc;
    g->n = 0;
    while (pos <= n) {
        int r = fr_regex_find(re, sc, s, n, pos, &ms, &me, err);
        if (r < 0) return (fr_status)r;
        if (r == 0) break;
        if (me == ms && any && ms == last) {
            int32_t cp;
            int k = ms < n ? fr_utf8_next(s + ms, n - ms, &cp) : 0;
            if (ms >= n) break;
            pos = ms + (k ? (size_t)k : 1);
            continue;
        }
        if (ms > last && (rc = seg_push(g, last, ms, false, err))) return rc;
        if ((rc = seg_push(g, ms, me, true, err))) return rc;
        last = me;
        any = true;
        if (me == ms) {
            if (ms >= n) break;
            int32_t cp;
            int k = fr_utf8_next(s + ms, n - ms, &cp);
            pos = ms + (k ? (size_t)k : 1);
        } else
            pos = me;
    }
    if (last < n) return seg_push(g, last, n, false, err);
    return FR_OK;
}

/* Fold segments by behaviour (HF SplitDelimiterBehavior), emit non-empty pieces. */
static fr_status emit_behavior(int behavior, bool invert, segs *g, const fr_span *sp, fr_spans *out, fr_error *err) {
    fr_status rc;
    if (invert)
        for (size_t i = 0; i < g->n; i++) g->v[i].m = !g->v[i].m;
    size_t k = 0; /* folded segments written in place over g->v[0..k) */
    bool prev = false;
    switch (behavior) {
    case B_ISOLATED: k = g->n; break;
    case B_REMOVED:
        for (size_t i = 0; i < g->n; i++)
            if (!g->v[i].m) g->v[k++] = g->v[i];
        break;
    case B_MERGED_PREV:
        for (size_t i = 0; i < g->n; i++) {
            seg x = g->v[i];
            if (x.m && !prev && k) g->v[k - 1].e = x.e;
            else g->v[k++] = x;
            prev = x.m;
        }
        break;
    case B_CONTIGUOUS:
        for (size_t i = 0; i < g->n; i++) {
            seg x = g->v[i];
            if (x.m == prev && k) g->v[k - 1].e = x.e;
            else g->v[k++] = x;
            prev = x.m;
        }
        break;
    case B_MERGED_NEXT: { /* the same fold from the right: write from the top down */
        size_t top = g->n;
        for (size_t i = g->n; i-- > 0;) {
            seg x = g->v[i];
            if (x.m && !prev && top < g->n) g->v[top].s = x.s;
            else g->v[--top] = x;
            prev = x.m;
        }
        for (size_t i = top; i < g->n; i++) g->v[k++] = g->v[i];
        break;
    }
    }
    for (size_t i = 0; i < k; i++) {
        seg x = g->v[i];
        if (x.e > x.s && (rc = fr_spans_push(out, sp->off + x.s, x.e - x.s, sp->first && x.s == 0, err))) return rc;
    }
    return FR_OK;
}

/* Isolated without invert (nearly every real pattern): matches and gaps straight out. */
static fr_status split_isolated(const fr_regex *re, fr_regex_scratch *sc, const uint8_t *s, const fr_span *sp,
                                fr_spans *out, fr_error *err) {
    size_t n = sp->len, last = 0, pos = 0, ms, me;
    fr_status rc;
    while (pos < n) {
        int r = fr_regex_find(re, sc, s, n, pos, &ms, &me, err);
        if (r < 0) return (fr_status)r;
        if (r == 0) break;
        if (me == ms) { /* an empty match only splits: the general path handles it */
            return FR_ERR_INVALID;
        }
        if (ms > last && (rc = fr_spans_push(out, sp->off + (uint32_t)last, (uint32_t)(ms - last), sp->first && last == 0, err)))
            return rc;
        if ((rc = fr_spans_push(out, sp->off + (uint32_t)ms, (uint32_t)(me - ms), sp->first && ms == 0, err))) return rc;
        last = pos = me;
    }
    if (last < n) return fr_spans_push(out, sp->off + (uint32_t)last, (uint32_t)(n - last), sp->first && last == 0, err);
    return FR_OK;
}

static fr_status run_split(const fr_regex *re, int behavior, bool invert, fr_regex_scratch *sc, fr_buf *arena,
                           const fr_span *sp, fr_spans *out, segs *g, fr_error *err) {
    const uint8_t *s = arena->p + sp->off;
    if (behavior == B_ISOLATED && !invert) {
        size_t mark = out->n;
        fr_status rc = split_isolated(re, sc, s, sp, out, err);
        if (rc != FR_ERR_INVALID) return rc;
        out->n = mark; /* pattern matched empty: redo through the general path */
    }
    fr_status rc = find_segments(re, sc, s, sp->len, g, err);
    return rc ? rc : emit_behavior(behavior, invert, g, sp, out, err);
}

static fr_status run_metaspace(const pt_step *st, fr_buf *arena, const fr_span *sp, fr_spans *out, segs *g,
                               fr_error *err) {
    size_t rl = (size_t)st->repl_len;
    const uint8_t *s0 = arena->p + sp->off;
    bool starts = (sp->len && s0[0] == ' ') || (sp->len >= rl && memcmp(s0, st->repl, rl) == 0);
    bool prepend = !starts && (st->prepend == PREPEND_ALWAYS || (st->prepend == PREPEND_FIRST && sp->first));
    size_t spaces = 0;
    for (size_t i = 0; i < sp->len; i++) spaces += s0[i] == ' ';
    size_t new_len = sp->len + spaces * (rl - 1) + (prepend ? rl : 0);
    if (arena->n + new_len > UINT32_MAX) return fr_fail(err, FR_ERR_CAPACITY, "tokenizer: text too large");
    fr_status rc = fr_buf_reserve(arena, new_len, err);
    if (rc) return rc;
    const uint8_t *s = arena->p + sp->off; /* the reserve may have moved the arena */
    uint32_t off = (uint32_t)arena->n;
    uint8_t *d = arena->p + arena->n;
    if (prepend) memcpy(d, st->repl, rl), d += rl;
    for (size_t i = 0; i < sp->len; i++) {
        if (s[i] == ' ') memcpy(d, st->repl, rl), d += rl;
        else *d++ = s[i];
    }
    arena->n += new_len;
    fr_span ns = {off, (uint32_t)new_len, sp->first};
    if (!st->split) return fr_spans_push(out, ns.off, ns.len, ns.first, err);
    /* split on the replacement character, each piece keeping the one that starts it */
    const uint8_t *t = arena->p + off;
    g->n = 0;
    size_t last = 0;
    for (size_t i = 0; i + rl <= new_len;) {
        if (memcmp(t + i, st->repl, rl) == 0) {
            if (i > last && (rc = seg_push(g, last, i, false, err))) return rc;
            if ((rc = seg_push(g, i, i + rl, true, err))) return rc;
            i += rl;
            last = i;
        } else
            i++;
    }
    if (last < new_len && (rc = seg_push(g, last, new_len, false, err))) return rc;
    return emit_behavior(B_MERGED_NEXT, false, g, &ns, out, err);
}

static fr_status run_bytelevel(const pt_step *st, fr_regex_scratch *sc, fr_buf *arena, const fr_span *sp,
                               fr_spans *out, segs *g, fr_error *err) {
    fr_span ns = *sp;
    if (st->add_prefix_space && (sp->len == 0 || arena->p[sp->off] != ' ')) {
        if (arena->n + sp->len + 1 > UINT32_MAX) return fr_fail(err, FR_ERR_CAPACITY, "tokenizer: text too large");
        fr_status rc = fr_buf_reserve(arena, sp->len + 1, err);
        if (rc) return rc;
        ns.off = (uint32_t)arena->n;
        ns.len = sp->len + 1;
        arena->p[arena->n] = ' ';
        memcpy(arena->p + arena->n + 1, arena->p + sp->off, sp->len);
        arena->n += sp->len + 1;
    }
    if (!st->use_regex) return fr_spans_push(out, ns.off, ns.len, ns.first, err);
    return run_split(&st->re, B_ISOLATED, false, sc, arena, &ns, out, g, err);
}

fr_status fr_pretok_run(const fr_pretok *p, fr_regex_scratch *sc, fr_buf *arena, size_t len, bool first,
                        fr_spans *out, fr_spans *tmp, fr_error *err) {
    if (len > UINT32_MAX / 4) return fr_fail(err, FR_ERR_CAPACITY, "tokenizer: text of %zu bytes is too large", len);
    fr_spans *cur = out, *nxt = tmp;
    segs g = {0};
    fr_status rc = FR_OK;
    cur->n = 0;
    if (len && (rc = fr_spans_push(cur, 0, (uint32_t)len, first, err))) return rc;
    for (int i = 0; i < p->n && !rc; i++) {
        const pt_step *st = &p->steps[i];
        nxt->n = 0;
        for (size_t k = 0; k < cur->n && !rc; k++) {
            fr_span sp = cur->v[k];
            switch (st->type) {
            case P_SPLIT: rc = run_split(&st->re, st->behavior, st->invert, sc, arena, &sp, nxt, &g, err); break;
            case P_METASPACE: rc = run_metaspace(st, arena, &sp, nxt, &g, err); break;
            case P_BYTELEVEL: rc = run_bytelevel(st, sc, arena, &sp, nxt, &g, err); break;
            }
        }
        fr_spans *x = cur;
        cur = nxt;
        nxt = x;
    }
    free(g.v);
    if (!rc && cur != out) { /* the result sits in tmp: swap the two vectors */
        fr_spans x = *out;
        *out = *tmp;
        *tmp = x;
    }
    return rc;
}
