/*
 * chat_render_main.c - test driver for src/server/chat_template.c.
 *
 * Default mode reads one JSON object from stdin:
 *   {"template": "...", "messages": [{"role": "user", "content": "hi"}, ...],
 *    "add_generation_prompt": true, "bos": "<s>", "eos": "</s>",
 *    "date_string": "...", "date": "2025-01-05", "enable_thinking": false}
 * (all but template and messages optional; a null/absent role or content is
 * passed as NULL) and writes the rendered prompt to stdout, byte for byte.
 * Exit status: 0 ok, 2 the library refused (message on stderr as
 * "error: <status>: <message>"), 1 bad input to this driver.
 *
 * Other modes, for tests that need many renderings:
 *   --detect  print only the detected format name;
 *   --batch   stdin is an array of such objects; stdout an array of
 *             {"ok": true, "format": f, "text": t} or
 *             {"ok": false, "status": s, "error": msg};
 *   --scan    stdin is an array of template strings; stdout an array of
 *             booleans: does the template print text outside its tags;
 *   --tags    stdin is one template string; stdout a JSON array of its tags
 *             in order, as detection sees them (exit 2 when it prints text);
 *   --expr    stdin is an array of Jinja expressions (string literals and
 *             variables joined by "+", the one variable being today =
 *             "2024-07-26"); stdout an array of {"ok": true, "text": t} or
 *             {"ok": false, "status": s, "error": msg}, as kvs_chat_expr_value
 *             evaluates them.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/chat_internal.h"
#include "server/chat_template.h"

static const char *opt_string(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* Render one request.  Returns 0 and sets *text (malloc'ed), 2 and fills err
 * on a library failure, 1 with err->msg set on bad driver input. */
static int render_one(json_t *req, kvs_chat_format *fmt, char **text, kvs_error *err)
{
    *text = NULL;
    if (!json_is_object(req)) {
        snprintf(err->msg, sizeof err->msg, "request is not a JSON object");
        return 1;
    }
    kvs_status st = kvs_chat_detect(opt_string(req, "template"), fmt, err);
    if (st != KVS_OK)
        return 2;
    json_t *jm = json_object_get(req, "messages");
    if (!json_is_array(jm)) {
        snprintf(err->msg, sizeof err->msg, "messages is not an array");
        return 1;
    }
    size_t n = json_array_size(jm);
    kvs_chat_msg *msgs = calloc(n ? n : 1, sizeof *msgs);
    if (!msgs) {
        snprintf(err->msg, sizeof err->msg, "out of memory");
        return 1;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_array_get(jm, i);
        msgs[i].role = opt_string(m, "role");
        msgs[i].content = opt_string(m, "content");
    }
    kvs_chat_opts o = {
        .add_generation_prompt = json_is_true(json_object_get(req, "add_generation_prompt")),
        .bos = opt_string(req, "bos"),
        .eos = opt_string(req, "eos"),
        .date_string = opt_string(req, "date_string"),
        .disable_thinking = json_is_false(json_object_get(req, "enable_thinking")),
        .template_text = opt_string(req, "template"),
    };
    const char *date = opt_string(req, "date");
    int rc = 2;
    if (date && sscanf(date, "%d-%d-%d", &o.year, &o.month, &o.day) != 3) {
        snprintf(err->msg, sizeof err->msg, "date is not YYYY-MM-DD");
        rc = 1;
    } else if (kvs_chat_render_opts(*fmt, msgs, n, &o, text, err) == KVS_OK) {
        rc = 0;
    }
    free(msgs);
    return rc;
}

static int run_single(json_t *root, bool detect_only)
{
    kvs_error err = {0};
    kvs_chat_format fmt;
    if (detect_only) {
        kvs_status st = kvs_chat_detect(opt_string(root, "template"), &fmt, &err);
        if (st != KVS_OK) {
            fprintf(stderr, "error: %s: %s\n", kvs_status_name(st), err.msg);
            return 2;
        }
        printf("%s\n", kvs_chat_format_name(fmt));
        return 0;
    }
    char *text;
    int rc = render_one(root, &fmt, &text, &err);
    if (rc == 0) {
        fwrite(text, 1, strlen(text), stdout);
        free(text);
    } else if (rc == 2) {
        fprintf(stderr, "error: %s: %s\n", kvs_status_name(err.status), err.msg);
    } else {
        fprintf(stderr, "chat_render: %s\n", err.msg);
    }
    return rc;
}

static int run_batch(json_t *root, bool scan)
{
    if (!json_is_array(root)) {
        fprintf(stderr, "chat_render: batch input is not an array\n");
        return 1;
    }
    json_t *results = json_array();
    for (size_t i = 0; i < json_array_size(root); i++) {
        json_t *req = json_array_get(root, i), *r;
        if (scan) {
            const char *t = json_string_value(req);
            r = t ? json_boolean(kvs_chat_template_tags(t, NULL, NULL) == 0) : json_null();
        } else {
            kvs_error err = {0};
            kvs_chat_format fmt;
            char *text;
            int rc = render_one(req, &fmt, &text, &err);
            if (rc == 0) {
                r = json_pack("{s:b, s:s, s:s}", "ok", 1, "format", kvs_chat_format_name(fmt),
                              "text", text);
                free(text);
            } else {
                r = json_pack("{s:b, s:s, s:s}", "ok", 0, "status",
                              rc == 2 ? kvs_status_name(err.status) : "driver", "error",
                              err.msg);
            }
        }
        json_array_append_new(results, r);
    }
    int rc = json_dumpf(results, stdout, JSON_ENSURE_ASCII) == 0 ? 0 : 1;
    json_decref(results);
    return rc;
}

/* --expr: the value of each expression of the array `root`. */
static int run_exprs(json_t *root)
{
    if (!json_is_array(root)) {
        fprintf(stderr, "chat_render: --expr input is not an array\n");
        return 1;
    }
    static const kvs_chat_var today = {"today", "2024-07-26"};
    json_t *results = json_array();
    for (size_t i = 0; i < json_array_size(root); i++) {
        json_t *e = json_array_get(root, i);
        kvs_chat_buf b = {0};
        kvs_error err = {0};
        kvs_status st = KVS_E_INVALID;
        if (json_is_string(e))
            st = kvs_chat_expr_value((kvs_chat_span){json_string_value(e), json_string_length(e)},
                                     &today, 1, &b, &err);
        else
            snprintf(err.msg, sizeof err.msg, "not a string");
        kvs_chat_buf_put(&b, "", 0);
        json_t *r;
        if (st == KVS_OK && !b.oom)
            r = json_pack("{s:b, s:s}", "ok", 1, "text", b.p ? b.p : "");
        else
            r = json_pack("{s:b, s:s, s:s}", "ok", 0, "status", kvs_status_name(st), "error",
                          err.msg);
        kvs_chat_buf_free(&b);
        json_array_append_new(results, r);
    }
    int rc = json_dumpf(results, stdout, JSON_ENSURE_ASCII) == 0 ? 0 : 1;
    json_decref(results);
    return rc;
}

/* --tags: the template's tags as a JSON array of strings. */
static int print_tags(const char *t)
{
    kvs_chat_span *tags = NULL;
    size_t n = 0;
    if (kvs_chat_template_tags(t, &tags, &n) != 1)
        return 2;
    json_t *arr = json_array();
    int rc = arr ? 0 : 1;
    for (size_t i = 0; rc == 0 && i < n; i++)
        if (json_array_append_new(arr, json_stringn(tags[i].p, tags[i].n)) != 0)
            rc = 1; /* not UTF-8, or out of memory */
    if (rc == 0)
        rc = json_dumpf(arr, stdout, JSON_ENSURE_ASCII) == 0 ? 0 : 1;
    json_decref(arr);
    free(tags);
    return rc;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";
    json_error_t jerr;
    json_t *root = json_loadf(stdin, JSON_DECODE_ANY, &jerr);
    if (!root) {
        fprintf(stderr, "chat_render: bad JSON input: %s\n", jerr.text);
        return 1;
    }
    int rc;
    if (strcmp(mode, "--tags") == 0) {
        rc = json_is_string(root) ? print_tags(json_string_value(root)) : 2;
    } else if (strcmp(mode, "--expr") == 0) {
        rc = run_exprs(root);
    } else if (strcmp(mode, "--batch") == 0 || strcmp(mode, "--scan") == 0) {
        rc = run_batch(root, strcmp(mode, "--scan") == 0);
    } else if (!json_is_object(root)) {
        fprintf(stderr, "chat_render: input is not a JSON object\n");
        rc = 1;
    } else {
        rc = run_single(root, strcmp(mode, "--detect") == 0);
    }
    json_decref(root);
    return rc;
}
