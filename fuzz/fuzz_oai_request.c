/*
 * fuzz_oai_request - OpenAI request bodies (untrusted bytes from HTTP
 * clients) through jansson and kvserve's request parser, for both the
 * completions and the chat shapes.  Any input must give OK or a clear
 * error with a message, never a crash.
 */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/oai_params.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_error_t jerr;
    json_t *body = json_loadb((const char *)data, size, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr); /* as the server */
    if (!body)
        return 0;
    for (int kind = 0; kind < 2; kind++) {
        kvs_oai_request r;
        kvs_oai_error e;
        memset(&r, 0, sizeof r);
        kvs_status st = kvs_oai_parse(body, kind ? KVS_OAI_CHAT : KVS_OAI_COMPLETION, &r, &e);
        if (st != KVS_OK && e.message[0] == '\0')
            abort(); /* every rejection must explain itself */
        if (st == KVS_OK && kind == 0) { /* every prompt of a list is reachable */
            if (r.n_prompts < 1 || r.n_prompts > KVS_OAI_MAX_PROMPTS)
                abort();
            for (size_t i = 0; i < r.n_prompts; i++) {
                size_t len;
                const char *t = kvs_oai_prompt_text(&r, i, &len);
                if (t && memchr(t, 0, len + 1) == NULL)
                    abort(); /* a prompt's text is NUL-terminated after its length */
            }
        }
        kvs_oai_request_free(&r);
    }
    json_decref(body);
    return 0;
}
