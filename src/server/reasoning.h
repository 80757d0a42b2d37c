/* reasoning.h - split a thinking model's output into reasoning_content and content.
 *
 * DeepSeek-R1/V3.1-style models write their chain of thought between <think> and </think>.
 * Templates usually end the prompt with <think> already, so the model emits only </think>;
 * the splitter then starts inside the reasoning (SERVING.md 3.3). Otherwise a <think> at the
 * very start of the output opens it; anywhere else the tags are ordinary text. Newlines right
 * after either tag are trimmed. Text that could be the start of a tag is held back until it
 * is decided, so streamed deltas never show half a tag. */
#ifndef FR_SRV_REASONING_H
#define FR_SRV_REASONING_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"

#define SRV_THINK_OPEN "<think>"
#define SRV_THINK_CLOSE "</think>"

typedef enum {
    SRV_RSN_START,     /* output start: a leading <think> would open the reasoning */
    SRV_RSN_REASONING, /* inside: text is reasoning until </think> */
    SRV_RSN_CONTENT,   /* answer: everything is content */
} srv_rsn_state;

typedef struct {
    srv_rsn_state state;
    bool trim_newlines; /* just after a tag: drop '\n' until other text comes */
    srv_buf hold;       /* undecided text (a possible tag prefix) */
} srv_reasoning;

void srv_reasoning_init(srv_reasoning *r, bool start_inside);
void srv_reasoning_release(srv_reasoning *r);
/* Feed text; append decided text to reasoning or content. false on out of memory. */
bool srv_reasoning_push(srv_reasoning *r, const char *s, size_t n, srv_buf *reasoning, srv_buf *content);
/* End of output: held text goes where the current state says. */
bool srv_reasoning_flush(srv_reasoning *r, srv_buf *reasoning, srv_buf *content);
/* Does the rendered prompt end with the think-open tag (trailing whitespace ignored)? */
bool srv_prompt_opens_reasoning(const char *prompt, size_t len);

#endif
