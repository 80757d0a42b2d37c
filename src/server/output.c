/* output.c - token -> text pipeline of one request (see output.h). */
#include "output.h"

#include <stdlib.h>
#include <string.h>

fr_status srv_output_init(srv_output *o, const fr_tokenizer *tok, const char *const *stops, int n_stops,
                          bool split_reasoning, bool reasoning_first, bool want_logprobs, fr_error *err) {
    memset(o, 0, sizeof *o);
    fr_status rc = srv_stop_init(&o->stop, stops, n_stops, err);
    if (rc) return rc;
    /* Same flags as `frontier run -p`: EOS and turn markers are not text; invalid UTF-8 from
     * odd byte tokens becomes U+FFFD so every JSON string is valid. */
    if ((rc = fr_detok_create(tok, FR_TOK_SKIP_SPECIAL | FR_TOK_LOSSY, &o->detok, err))) {
        srv_stop_release(&o->stop);
        return rc;
    }
    o->split_reasoning = split_reasoning;
    srv_reasoning_init(&o->rsn, split_reasoning && reasoning_first);
    o->want_logprobs = want_logprobs;
    return FR_OK;
}

void srv_output_release(srv_output *o) {
    fr_detok_destroy(o->detok);
    srv_stop_release(&o->stop);
    srv_reasoning_release(&o->rsn);
    srv_buf_release(&o->content);
    srv_buf_release(&o->reasoning);
    fr_tok_text_release(&o->piece);
    srv_buf_release(&o->cut);
    free(o->lp);
    memset(o, 0, sizeof *o);
}

/* Characters (not bytes) in s[0..n): OpenAI's text_offset counts characters. */
static int64_t count_chars(const char *s, size_t n) {
    int64_t c = 0;
    for (size_t i = 0; i < n; i++) c += ((unsigned char)s[i] & 0xC0) != 0x80;
    return c;
}

/* Route stop-checked text to content (or through the reasoning split). */
static bool route(srv_output *o, const char *s, size_t n) {
    if (!n) return true;
    size_t before = o->content.len;
    bool ok = o->split_reasoning ? srv_reasoning_push(&o->rsn, s, n, &o->reasoning, &o->content)
                                 : srv_buf_append(&o->content, s, n);
    if (o->content.len > before) o->content_total += count_chars(o->content.data + before, o->content.len - before);
    return ok;
}

static fr_status add_logprob(srv_output *o, const fr_token_event *ev, fr_error *err) {
    if (o->n_lp == o->cap_lp) {
        int64_t cap = o->cap_lp ? 2 * o->cap_lp : 16;
        srv_logprob *p = realloc(o->lp, (size_t)cap * sizeof *p);
        if (!p) return fr_fail(err, FR_ERR_NOMEM, "out of memory for logprobs");
        o->lp = p;
        o->cap_lp = cap;
    }
    srv_logprob *e = &o->lp[o->n_lp++];
    e->id = ev->token;
    e->logprob = ev->logprob;
    e->n_top = ev->n_top < 0 ? 0 : ev->n_top > FR_MAX_TOP_LOGPROBS ? FR_MAX_TOP_LOGPROBS : ev->n_top;
    memcpy(e->top_ids, ev->top_ids, (size_t)e->n_top * sizeof *e->top_ids);
    memcpy(e->top_logprobs, ev->top_logprobs, (size_t)e->n_top * sizeof *e->top_logprobs);
    e->text_offset = o->content_total;
    return FR_OK;
}

fr_status srv_output_token(srv_output *o, const fr_token_event *ev, bool *matched, fr_error *err) {
    *matched = o->stopped;
    if (o->stopped || ev->token < 0) return FR_OK;
    o->n_tokens++;
    if (o->split_reasoning && o->rsn.state == SRV_RSN_REASONING) o->reasoning_tokens++;
    if (ev->finish == FR_FINISH_STOP) return FR_OK; /* the stop id itself is not output */
    fr_status rc;
    if (o->want_logprobs && (rc = add_logprob(o, ev, err))) return rc;
    o->piece.len = 0;
    if ((rc = fr_detok_push(o->detok, ev->token, &o->piece, err))) return rc;
    bool oom = false;
    srv_buf_clear(&o->cut);
    *matched = o->stopped = srv_stop_push(&o->stop, o->piece.data, o->piece.len, &o->cut, &oom);
    if (oom || !route(o, o->cut.data, o->cut.len)) return fr_fail(err, FR_ERR_NOMEM, "out of memory for output text");
    if (o->stopped) return srv_output_finish(o, err);
    return FR_OK;
}

fr_status srv_output_finish(srv_output *o, fr_error *err) {
    bool oom = false;
    srv_buf_clear(&o->cut);
    if (!o->stopped) {
        o->piece.len = 0;
        fr_status rc = fr_detok_finish(o->detok, &o->piece, err);
        if (rc) return rc;
        o->stopped = srv_stop_push(&o->stop, o->piece.data, o->piece.len, &o->cut, &oom);
    }
    srv_stop_flush(&o->stop, &o->cut, &oom);
    if (oom || !route(o, o->cut.data, o->cut.len)) return fr_fail(err, FR_ERR_NOMEM, "out of memory for output text");
    size_t before = o->content.len;
    if (o->split_reasoning && !srv_reasoning_flush(&o->rsn, &o->reasoning, &o->content))
        return fr_fail(err, FR_ERR_NOMEM, "out of memory for output text");
    if (o->content.len > before) o->content_total += count_chars(o->content.data + before, o->content.len - before);
    return FR_OK;
}

void srv_output_take_logprobs(srv_output *o) { o->n_lp = 0; }
