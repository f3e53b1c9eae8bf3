/* kvs_chat_apply driver for tests/py/test_chat_jinja.py: reads a JSON
 * array of cases on stdin, writes a JSON array of results on stdout.
 *
 * Case:   {"template": TEXT, "messages": [...], "tools": [...]|null,
 *          "documents": ..., "add_generation_prompt": bool,
 *          "continue_final_message": bool, "bos_token": S, "eos_token": S,
 *          "kwargs": {...}, "now": EPOCH_SECONDS}
 * Result: {"ok": TEXT} | {"raise": MESSAGE} | {"error": MESSAGE, "status": NAME}
 * Parsed templates are cached by text, so many cases may share one. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/chat.h"

#define CACHE 64

int main(void)
{
    json_error_t je;
    json_t *cases = json_loadf(stdin, 0, &je);
    if (!json_is_array(cases)) {
        fprintf(stderr, "stdin: not a JSON array: %s\n", je.text);
        return 2;
    }
    const char *keys[CACHE];
    kvs_chat_template *tmpls[CACHE];
    kvs_status load_st[CACHE];
    char load_msg[CACHE][512];
    size_t ncache = 0;
    json_t *results = json_array();
    size_t i;
    json_t *cs;
    json_array_foreach(cases, i, cs)
    {
        const char *text = json_string_value(json_object_get(cs, "template"));
        if (!text)
            text = "";
        size_t k;
        for (k = 0; k < ncache; k++)
            if (strcmp(keys[k], text) == 0)
                break;
        kvs_error err = {0};
        if (k == ncache) {
            if (ncache == CACHE) {
                for (size_t x = 0; x < ncache; x++)
                    kvs_chat_template_free(tmpls[x]);
                ncache = k = 0;
            }
            keys[k] = text;
            load_st[k] = kvs_chat_template_load(text, &tmpls[k], &err);
            snprintf(load_msg[k], sizeof load_msg[k], "%s", load_st[k] == KVS_OK ? "" : err.msg);
            ncache++;
        }
        json_t *r;
        if (load_st[k] != KVS_OK) {
            r = json_pack("{s:s, s:s}", "error", load_msg[k], "status", kvs_status_name(load_st[k]));
        } else {
            json_t *tools = json_object_get(cs, "tools"), *docs = json_object_get(cs, "documents");
            kvs_chat_input in = {
                .messages = json_object_get(cs, "messages"),
                .tools = json_is_null(tools) ? NULL : tools,
                .documents = json_is_null(docs) ? NULL : docs,
                .kwargs = json_object_get(cs, "kwargs"),
                .add_generation_prompt = json_is_true(json_object_get(cs, "add_generation_prompt")),
                .continue_final_message = json_is_true(json_object_get(cs, "continue_final_message")),
                .bos_token = json_string_value(json_object_get(cs, "bos_token")),
                .eos_token = json_string_value(json_object_get(cs, "eos_token")),
                .template_name = json_string_value(json_object_get(cs, "template_name")),
                .now = (time_t)json_integer_value(json_object_get(cs, "now")),
            };
            char *out;
            kvs_status st = kvs_chat_apply(tmpls[k], &in, &out, &err);
            if (st == KVS_OK) {
                r = json_pack("{s:s}", "ok", out);
                if (!r) /* not UTF-8: report it */
                    r = json_pack("{s:s, s:s}", "error", "output is not valid UTF-8", "status", "internal");
                free(out);
            } else if (in.raised) {
                r = json_pack("{s:s}", "raise", err.msg);
            } else {
                r = json_pack("{s:s, s:s}", "error", err.msg, "status", kvs_status_name(st));
            }
        }
        json_array_append_new(results, r);
    }
    json_dumpf(results, stdout, JSON_ENSURE_ASCII);
    fputc('\n', stdout);
    for (size_t x = 0; x < ncache; x++)
        kvs_chat_template_free(tmpls[x]);
    json_decref(results);
    json_decref(cases);
    return 0;
}
