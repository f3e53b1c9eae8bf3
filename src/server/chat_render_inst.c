/* chat_render_inst.c - the [INST] formats: Llama 2 and the Mistral family.
 * Each function mirrors its template statement by statement (the fingerprints
 * in chat_markers.c pin those statements); Mistral Small 3.2's default system
 * message is read from the model's template (kvs_chat_template_value). */
#include "server/chat_internal.h"

#define ALTERNATE_MSG "Conversation roles must alternate user/assistant/user/assistant/..."
#define MISTRAL_ALTERNATE_MSG                                                                  \
    "After the optional system message, conversation roles must alternate "                    \
    "user/assistant/user/assistant/..."

/* Index of the first loop message: 1 when messages[0] is the system prompt. */
static size_t loop_start(const kvs_chat_ctx *c)
{
    return c->roles[0] == KVS_ROLE_SYSTEM ? 1 : 0;
}

/* (message.role == "user") != (k % 2 == 0) for the k-th loop message. */
static kvs_status check_alternating(const kvs_chat_ctx *c, size_t start, const char *msg,
                                    kvs_error *err)
{
    for (size_t i = start; i < c->n; i++)
        if ((c->roles[i] == KVS_ROLE_USER) != ((i - start) % 2 == 0))
            return kvs_fail(err, KVS_E_INVALID, "%s (message %zu is '%s')", msg, i,
                            c->msgs[i].role);
    return KVS_OK;
}

kvs_status kvs_chat_render_llama2(const kvs_chat_ctx *c, kvs_chat_buf *b, kvs_error *err)
{
    size_t start = loop_start(c);
    kvs_status st = check_alternating(c, start, ALTERNATE_MSG, err);
    if (st != KVS_OK)
        return st;
    kvs_chat_buf tmp = {0};
    for (size_t i = start; i < c->n; i++) {
        /* content = '<<SYS>>\n' + system_message + '\n<</SYS>>\n\n' + content on the
         * first loop message when there is a system message, then .strip(). */
        kvs_chat_span content = kvs_chat_span_of(c->msgs[i].content);
        if (i == start && start == 1) {
            tmp.len = 0;
            kvs_chat_buf_puts(&tmp, "<<SYS>>\n");
            kvs_chat_buf_puts(&tmp, c->msgs[0].content);
            kvs_chat_buf_puts(&tmp, "\n<</SYS>>\n\n");
            kvs_chat_buf_span(&tmp, content);
            if (tmp.oom)
                break;
            content = (kvs_chat_span){tmp.p, tmp.len};
        }
        content = kvs_chat_py_strip(content, KVS_CHAT_BOTH);
        switch (c->roles[i]) {
        case KVS_ROLE_USER:
            kvs_chat_buf_puts(b, c->bos);
            kvs_chat_buf_puts(b, "[INST] ");
            kvs_chat_buf_span(b, content);
            kvs_chat_buf_puts(b, " [/INST]");
            break;
        case KVS_ROLE_SYSTEM:
            kvs_chat_buf_puts(b, "<<SYS>>\n");
            kvs_chat_buf_span(b, content);
            kvs_chat_buf_puts(b, "\n<</SYS>>\n\n");
            break;
        case KVS_ROLE_ASSISTANT:
            kvs_chat_buf_puts(b, " ");
            kvs_chat_buf_span(b, content);
            kvs_chat_buf_puts(b, " ");
            kvs_chat_buf_puts(b, c->eos);
            break;
        }
    }
    b->oom |= tmp.oom;
    kvs_chat_buf_free(&tmp);
    return KVS_OK;
}

kvs_status kvs_chat_render_mistral_v3(const kvs_chat_ctx *c, kvs_chat_buf *b, kvs_error *err)
{
    /* No alternation check, and system messages are dropped: the template has
     * no branch for them. */
    kvs_chat_buf_puts(b, c->bos);
    for (size_t i = 0; i < c->n; i++) {
        if (c->roles[i] == KVS_ROLE_USER) {
            kvs_chat_buf_puts(b, " [INST] ");
            kvs_chat_buf_puts(b, c->msgs[i].content);
            kvs_chat_buf_puts(b, " [/INST]");
        } else if (c->roles[i] == KVS_ROLE_ASSISTANT) {
            kvs_chat_buf_puts(b, " ");
            kvs_chat_buf_puts(b, c->msgs[i].content);
            kvs_chat_buf_puts(b, " ");
            kvs_chat_buf_puts(b, c->eos);
        }
    }
    return KVS_OK;
}

kvs_status kvs_chat_render_mistral_nemo(const kvs_chat_ctx *c, kvs_chat_buf *b, kvs_error *err)
{
    size_t start = loop_start(c);
    kvs_status st = check_alternating(c, start, MISTRAL_ALTERNATE_MSG, err);
    if (st != KVS_OK)
        return st;
    kvs_chat_buf_puts(b, c->bos);
    for (size_t i = start; i < c->n; i++) {
        const char *content = c->msgs[i].content;
        switch (c->roles[i]) {
        case KVS_ROLE_USER:
            /* The system message goes into the last user turn only (and is
             * lost when the conversation ends with an assistant turn). */
            kvs_chat_buf_puts(b, "[INST]");
            if (i == c->n - 1 && start == 1) {
                kvs_chat_buf_puts(b, c->msgs[0].content);
                kvs_chat_buf_puts(b, "\n\n");
            }
            kvs_chat_buf_puts(b, content);
            kvs_chat_buf_puts(b, "[/INST]");
            break;
        case KVS_ROLE_ASSISTANT:
            kvs_chat_buf_puts(b, content);
            kvs_chat_buf_puts(b, c->eos);
            break;
        case KVS_ROLE_SYSTEM:
            return kvs_fail(err, KVS_E_INVALID,
                            "Only user and assistant roles are supported, with the exception "
                            "of an initial optional system message! (message %zu is 'system')",
                            i);
        }
    }
    return KVS_OK;
}

kvs_status kvs_chat_render_mistral_small3(const kvs_chat_ctx *c, kvs_chat_buf *b,
                                          kvs_error *err)
{
    size_t start = loop_start(c);
    kvs_status st = check_alternating(c, start, MISTRAL_ALTERNATE_MSG, err);
    if (st != KVS_OK)
        return st;
    kvs_chat_buf_puts(b, c->bos);
    kvs_chat_buf_puts(b, "[SYSTEM_PROMPT]");
    if (start == 1) {
        kvs_chat_buf_puts(b, c->msgs[0].content);
    } else {
        /* Statement 2, {%- set default_system_message = "..." + today + "..." %},
         * with today = strftime_now("%Y-%m-%d") (statement 1): the text comes
         * from the model's template. */
        const kvs_chat_var today = {"today", c->date_iso};
        st = kvs_chat_template_value(c, 2, "default_system_message", &today, 1, b, err);
        if (st != KVS_OK)
            return st;
    }
    kvs_chat_buf_puts(b, "[/SYSTEM_PROMPT]");
    for (size_t i = start; i < c->n; i++) {
        const char *content = c->msgs[i].content;
        switch (c->roles[i]) {
        case KVS_ROLE_SYSTEM:
            kvs_chat_buf_puts(b, "[SYSTEM_PROMPT]");
            kvs_chat_buf_puts(b, content);
            kvs_chat_buf_puts(b, "[/SYSTEM_PROMPT]");
            break;
        case KVS_ROLE_USER:
            kvs_chat_buf_puts(b, "[INST]");
            kvs_chat_buf_puts(b, content);
            kvs_chat_buf_puts(b, "[/INST]");
            break;
        case KVS_ROLE_ASSISTANT:
            kvs_chat_buf_puts(b, content);
            kvs_chat_buf_puts(b, c->eos);
            break;
        }
    }
    return KVS_OK;
}
