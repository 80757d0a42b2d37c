/* stop.h - stop strings over streamed text.
 *
 * Text arrives in pieces (from the streaming detokenizer); the matcher releases text as soon
 * as it can no longer be part of a stop string and holds back the longest tail that is still
 * the beginning of one, so a streamed response never shows the start of a stop string that
 * later completes. On a match, the text before it is released and everything from the match
 * on is dropped: the stop string itself is not part of the output (OpenAI's rule). Released
 * text never ends inside a UTF-8 character when the input pieces do not. */
#ifndef FR_SRV_STOP_H
#define FR_SRV_STOP_H

#include <stdbool.h>
#include <stddef.h>

#include "../core/status.h"
#include "buf.h"

#define SRV_MAX_STOP 16         /* stop strings per request */
#define SRV_MAX_STOP_BYTES 1024 /* bytes per stop string */

typedef struct {
    int n;
    char *stop[SRV_MAX_STOP]; /* owned copies */
    size_t len[SRV_MAX_STOP];
    srv_buf pending; /* text not released yet */
    bool matched;    /* a stop string was found; later input is ignored */
} srv_stop;

/* Copy n stop strings (empty ones are skipped). FR_ERR_INVALID when over the limits. */
fr_status srv_stop_init(srv_stop *m, const char *const *stops, int n, fr_error *err);
void srv_stop_release(srv_stop *m);

/* Feed text; append what is final to out. Returns true when a stop string matched (now or
 * before). false return with out unchanged on memory failure is reported via *oom. */
bool srv_stop_push(srv_stop *m, const char *s, size_t n, srv_buf *out, bool *oom);
/* End of output: release the held-back tail (unless a stop matched). */
void srv_stop_flush(srv_stop *m, srv_buf *out, bool *oom);

#endif
