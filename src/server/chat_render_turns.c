/* chat_render_turns.c - the header-per-turn formats: Llama 3, ChatML/Qwen,
 * Gemma, Phi-3 and DeepSeek-R1.  Each function mirrors its template statement
 * by statement (the fingerprints in chat_markers.c pin those statements);
 * Qwen2.5's default system turn is read from the model's template. */
#include "server/chat_internal.h"

static const char *const k_role_names[] = {
    [KVS_ROLE_SYSTEM] = "system",
    [KVS_ROLE_USER] = "user",
    [KVS_ROLE_ASSISTANT] = "assistant",
};

kvs_status kvs_chat_render_llama3(const kvs_chat_ctx *c, bool dated, kvs_chat_buf *b,
                                  kvs_error *err)
{
    /* date_string: the caller's, else "26 Jul 2024" (3.1) or
     * strftime_now("%d %b %Y") (3.2). */
    const char *date = c->date_string ? c->date_string : dated ? c->date_dmy : "26 Jul 2024";
    size_t start = 0;
    kvs_chat_span sys = {"", 0};
    if (c->roles[0] == KVS_ROLE_SYSTEM) {
        sys = kvs_chat_py_strip(kvs_chat_span_of(c->msgs[0].content), KVS_CHAT_BOTH);
        start = 1;
    }
    kvs_chat_buf_puts(b, c->bos);
    kvs_chat_buf_puts(b, "<|start_header_id|>system<|end_header_id|>\n\n"
                         "Cutting Knowledge Date: December 2023\nToday Date: ");
    kvs_chat_buf_puts(b, date);
    kvs_chat_buf_puts(b, "\n\n");
    kvs_chat_buf_span(b, sys);
    kvs_chat_buf_puts(b, "<|eot_id|>");
    for (size_t i = start; i < c->n; i++) {
        kvs_chat_buf_puts(b, "<|start_header_id|>");
        kvs_chat_buf_puts(b, k_role_names[c->roles[i]]);
        kvs_chat_buf_puts(b, "<|end_header_id|>\n\n");
        kvs_chat_buf_span(b, kvs_chat_py_strip(kvs_chat_span_of(c->msgs[i].content),
                                               KVS_CHAT_BOTH));
        kvs_chat_buf_puts(b, "<|eot_id|>");
    }
    if (c->gen)
        kvs_chat_buf_puts(b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    return KVS_OK;
}

static void chatml_turn(kvs_chat_buf *b, kvs_chat_role role, const char *content)
{
    kvs_chat_buf_puts(b, "<|im_start|>");
    kvs_chat_buf_puts(b, k_role_names[role]);
    kvs_chat_buf_puts(b, "\n");
    kvs_chat_buf_puts(b, content);
    kvs_chat_buf_puts(b, "<|im_end|>\n");
}

kvs_status kvs_chat_render_chatml(const kvs_chat_ctx *c, kvs_chat_buf *b, kvs_error *err)
{
    /* Qwen3-Coder without tools: the system message (if first) and every
     * later message are plain ChatML turns. */
    for (size_t i = 0; i < c->n; i++)
        chatml_turn(b, c->roles[i], c->msgs[i].content);
    if (c->gen)
        kvs_chat_buf_puts(b, "<|im_start|>assistant\n");
    return KVS_OK;
}

kvs_status kvs_chat_render_qwen2_5(const kvs_chat_ctx *c, kvs_chat_buf *b, kvs_error *err)
{
    if (c->roles[0] != KVS_ROLE_SYSTEM) {
        /* Statement 18, {{- '<|im_start|>system\n...<|im_end|>\n' }}: the
         * default system turn comes from the model's template. */
        kvs_status st = kvs_chat_template_value(c, 18, NULL, NULL, 0, b, err);
        if (st != KVS_OK)
            return st;
    }
    for (size_t i = 0; i < c->n; i++)
        chatml_turn(b, c->roles[i], c->msgs[i].content);
    if (c->gen)
        kvs_chat_buf_puts(b, "<|im_start|>assistant\n");
    return KVS_OK;
}

kvs_status kvs_chat_render_qwen3(const kvs_chat_ctx *c, kvs_chat_buf *b, kvs_error *err)
{
    /* ns.last_query_index: the last user message that is not a wrapped
     * <tool_response>; assistant turns after it keep their reasoning. */
    size_t last_query = c->n - 1;
    for (size_t i = c->n; i-- > 0;) {
        kvs_chat_span s = kvs_chat_span_of(c->msgs[i].content);
        if (c->roles[i] == KVS_ROLE_USER &&
            !(kvs_chat_starts(s, "<tool_response>") && kvs_chat_ends(s, "</tool_response>"))) {
            last_query = i;
            break;
        }
    }
    for (size_t i = 0; i < c->n; i++) {
        if (c->roles[i] != KVS_ROLE_ASSISTANT) {
            chatml_turn(b, c->roles[i], c->msgs[i].content);
            continue;
        }
        kvs_chat_span content = kvs_chat_span_of(c->msgs[i].content);
        kvs_chat_span reasoning = {"", 0};
        if (kvs_chat_contains(content, "</think>")) {
            kvs_chat_span whole = content;
            content = kvs_chat_strip_char(kvs_chat_split_last(whole, "</think>"), '\n',
                                          KVS_CHAT_LEFT);
            reasoning = kvs_chat_split_first(whole, "</think>");
            reasoning = kvs_chat_strip_char(reasoning, '\n', KVS_CHAT_RIGHT);
            reasoning = kvs_chat_split_last(reasoning, "<think>");
            reasoning = kvs_chat_strip_char(reasoning, '\n', KVS_CHAT_LEFT);
        }
        kvs_chat_buf_puts(b, "<|im_start|>assistant\n");
        if (i > last_query && (i == c->n - 1 || reasoning.n > 0)) {
            kvs_chat_buf_puts(b, "<think>\n");
            kvs_chat_buf_span(b, kvs_chat_strip_char(reasoning, '\n', KVS_CHAT_BOTH));
            kvs_chat_buf_puts(b, "\n</think>\n\n");
            kvs_chat_buf_span(b, kvs_chat_strip_char(content, '\n', KVS_CHAT_LEFT));
        } else {
            kvs_chat_buf_span(b, content);
        }
        kvs_chat_buf_puts(b, "<|im_end|>\n");
    }
    if (c->gen) {
        kvs_chat_buf_puts(b, "<|im_start|>assistant\n");
        if (c->disable_thinking)
            kvs_chat_buf_puts(b, "<think>\n\n</think>\n\n");
    }
    return KVS_OK;
}

kvs_status kvs_chat_render_gemma(const kvs_chat_ctx *c, kvs_chat_buf *b, kvs_error *err)
{
    if (c->roles[0] == KVS_ROLE_SYSTEM)
        return kvs_fail(err, KVS_E_INVALID, "System role not supported");
    for (size_t i = 0; i < c->n; i++)
        if ((c->roles[i] == KVS_ROLE_USER) != (i % 2 == 0))
            return kvs_fail(err, KVS_E_INVALID,
                            "Conversation roles must alternate user/assistant/user/assistant/..."
                            " (message %zu is '%s')",
                            i, c->msgs[i].role);
    kvs_chat_buf_puts(b, c->bos);
    for (size_t i = 0; i < c->n; i++) {
        kvs_chat_buf_puts(b, "<start_of_turn>");
        kvs_chat_buf_puts(b, c->roles[i] == KVS_ROLE_ASSISTANT ? "model"
                                                               : k_role_names[c->roles[i]]);
        kvs_chat_buf_puts(b, "\n");
        kvs_chat_buf_span(b, kvs_chat_py_strip(kvs_chat_span_of(c->msgs[i].content),
                                               KVS_CHAT_BOTH));
        kvs_chat_buf_puts(b, "<end_of_turn>\n");
    }
    if (c->gen)
        kvs_chat_buf_puts(b, "<start_of_turn>model\n");
    return KVS_OK;
}

kvs_status kvs_chat_render_phi3(const kvs_chat_ctx *c, kvs_chat_buf *b, kvs_error *err)
{
    static const char *const tags[] = {
        [KVS_ROLE_SYSTEM] = "<|system|>\n",
        [KVS_ROLE_USER] = "<|user|>\n",
        [KVS_ROLE_ASSISTANT] = "<|assistant|>\n",
    };
    for (size_t i = 0; i < c->n; i++) {
        const char *content = c->msgs[i].content;
        if (c->roles[i] == KVS_ROLE_SYSTEM && !*content)
            continue; /* `message['role'] == 'system' and message['content']` */
        kvs_chat_buf_puts(b, tags[c->roles[i]]);
        kvs_chat_buf_puts(b, content);
        kvs_chat_buf_puts(b, "<|end|>\n");
    }
    kvs_chat_buf_puts(b, c->gen ? "<|assistant|>\n" : c->eos);
    return KVS_OK;
}

kvs_status kvs_chat_render_deepseek_r1(const kvs_chat_ctx *c, kvs_chat_buf *b, kvs_error *err)
{
    /* The last system message, wherever it is, goes right after BOS. */
    const char *sys = "";
    for (size_t i = 0; i < c->n; i++)
        if (c->roles[i] == KVS_ROLE_SYSTEM)
            sys = c->msgs[i].content;
    kvs_chat_buf_puts(b, c->bos);
    kvs_chat_buf_puts(b, sys);
    for (size_t i = 0; i < c->n; i++) {
        kvs_chat_span content = kvs_chat_span_of(c->msgs[i].content);
        if (c->roles[i] == KVS_ROLE_USER) {
            kvs_chat_buf_puts(b, "<｜User｜>");
            kvs_chat_buf_span(b, content);
        } else if (c->roles[i] == KVS_ROLE_ASSISTANT) {
            /* Earlier reasoning is dropped: content.split('</think>')[-1].  The
             * end marker is a literal in the template, not eos_token. */
            kvs_chat_buf_puts(b, "<｜Assistant｜>");
            kvs_chat_buf_span(b, kvs_chat_split_last(content, "</think>"));
            kvs_chat_buf_puts(b, "<｜end▁of▁sentence｜>");
        }
    }
    if (c->gen)
        kvs_chat_buf_puts(b, "<｜Assistant｜><think>\n");
    return KVS_OK;
}
