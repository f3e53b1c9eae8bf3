/* libFuzzer harness for the Jinja interpreter (src/chat/jinja.h).
 *
 * The input is split at the first NUL byte: before it a template, after it a
 * JSON object of variables (when it parses; else a small fixed conversation).
 * Parsing must either succeed or fail with a message; rendering must finish
 * within the sandbox's limits (small ones here, so that hostile loops end
 * fast) and fail only with a message.  Any crash, leak, hang or sanitizer
 * report is a bug. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "chat/jinja.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *src = (const char *)data;
    const char *nul = memchr(src, '\0', size);
    size_t tlen = nul ? (size_t)(nul - src) : size;
    json_t *vars = NULL;
    if (nul)
        vars = json_loadb(nul + 1, size - tlen - 1, 0, NULL);
    if (!json_is_object(vars)) {
        json_decref(vars);
        vars = json_pack("{s:[{s:s, s:s}, {s:s, s:[{s:s, s:s}]}], s:b, s:s, s:n}", "messages", "role", "user",
                         "content", "hi", "role", "assistant", "content", "type", "text", "text", "yo",
                         "add_generation_prompt", 1, "bos_token", "<s>", "tools");
    }
    kvs_jinja *t = NULL;
    kvs_error err = {0};
    if (kvs_jinja_parse(src, tlen, &t, &err) != KVS_OK) {
        if (!err.msg[0])
            abort();
    } else {
        kvs_jinja_opts o = {.max_output = 1 << 16, .max_memory = 16u << 20, .max_steps = 200000, .max_depth = 64};
        char *out = NULL;
        size_t n = 0;
        if (kvs_jinja_render(t, vars, &o, &out, &n, &err) == KVS_OK) {
            if (!out || strlen(out) > n)
                abort();
        } else if (!err.msg[0] || out) {
            abort();
        }
        free(out);
        kvs_jinja_free(t);
    }
    json_decref(vars);
    return 0;
}
