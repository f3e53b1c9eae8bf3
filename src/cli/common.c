#include "cli/common.h"

#include <errno.h>
#include <jansson.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "server/engine_loop.h"
#include "server/oai_params.h"

int kvs_cli_prepare_launch(const char *cmd, kvs_launch_opts *lo)
{
    (void)cmd;
    /* One arena per thread would give every HTTP thread its own heap, each
     * with its own free pages; fixed thresholds stop glibc from moving them
     * with the load, so the heap grows the same way on every run. */
    mallopt(M_ARENA_MAX, 2);
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);
    mallopt(M_TRIM_THRESHOLD, 128 * 1024);
    lo->serving_reserve = kvs_serving_reserve_bytes(lo);
    return 0;
}

int kvs_cli_write_reports(const kvs_instance *in, const char *json_path, const char *svg_path)
{
    kvs_error err;
    if (json_path && kvs_report_write_json(&in->report, json_path, &err) != KVS_OK)
        return kvs_cli_error("memory-report", 1, err.msg);
    if (svg_path && kvs_report_write_svg(&in->report, svg_path, &err) != KVS_OK)
        return kvs_cli_error("memory-report", 1, err.msg);
    return 0;
}

/* One line of a batch file and what became of it. */
typedef struct batch_item {
    json_t *body;
    kvs_oai_request req;
    int32_t *prompt;
    size_t n_prompt;
    json_t *out_ids;
    char *text;
    size_t text_len;
    FILE *text_f;
    const char *finish;
    json_t *error;
} batch_item;

static json_t *error_obj(const char *msg, const char *param)
{
    return json_pack("{s:s, s:s, s:s?}", "message", msg, "type", "invalid_request_error", "param",
                     param && *param ? param : NULL);
}

static void prepare(kvs_instance *in, batch_item *it, size_t idx, const char *line)
{
    json_error_t jerr;
    kvs_error err;
    it->body = json_loads(line, 0, &jerr);
    if (!it->body) {
        char msg[300];
        snprintf(msg, sizeof msg, "line %zu: invalid JSON: %s", idx + 1, jerr.text);
        it->error = error_obj(msg, NULL);
        return;
    }
    kvs_oai_error oe;
    if (kvs_oai_parse(it->body, KVS_OAI_COMPLETION, &it->req, &oe) != KVS_OK) {
        it->error = error_obj(oe.message, oe.param);
        return;
    }
    if (it->req.n != 1) {
        it->error = error_obj("'n' must be 1 in a batch file", "n");
        return;
    }
    if (kvs_oai_prompt_tokens(&it->req, in->tok, &it->prompt, &it->n_prompt, &oe) != KVS_OK) {
        it->error = error_obj(oe.message, oe.param);
        return;
    }
    if (kvs_engine_add(in->engine, idx, it->prompt, it->n_prompt, &it->req.params, &err) != KVS_OK) {
        it->error = error_obj(err.msg, "prompt");
        return;
    }
    it->out_ids = json_array();
}

static int write_results(batch_item *items, size_t n, FILE *out)
{
    for (size_t i = 0; i < n; i++) {
        batch_item *it = &items[i];
        json_t *o;
        if (it->error) {
            o = json_pack("{s:I, s:O}", "id", (json_int_t)i, "error", it->error);
        } else {
            json_t *pids = json_array();
            for (size_t j = 0; j < it->n_prompt; j++)
                json_array_append_new(pids, json_integer(it->prompt[j]));
            o = json_pack("{s:I, s:o, s:O, s:s%, s:s?}", "id", (json_int_t)i, "prompt_token_ids", pids,
                          "output_token_ids", it->out_ids, "text", it->text ? it->text : "",
                          it->text ? it->text_len : (size_t)0, "finish_reason", it->finish);
        }
        char *s = o ? json_dumps(o, JSON_ENSURE_ASCII | JSON_COMPACT) : NULL;
        json_decref(o);
        if (!s)
            return kvs_cli_error("generate", 1, "cannot render a result as JSON");
        fprintf(out, "%s\n", s);
        free(s);
    }
    return 0;
}

int kvs_cli_run_batch_file(kvs_instance *in, const char *path, const char *out_path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        char msg[512];
        snprintf(msg, sizeof msg, "cannot open '%s': %s", path, strerror(errno));
        return kvs_cli_error("generate", 1, msg);
    }
    batch_item *items = NULL;
    size_t n = 0, cap = 0;
    char *line = NULL;
    size_t line_cap = 0;
    ssize_t len;
    int rc = 0;
    while ((len = getline(&line, &line_cap, f)) >= 0) {
        if (strspn(line, " \t\r\n") == (size_t)len)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            batch_item *grown = realloc(items, cap * sizeof *items);
            if (!grown) {
                rc = kvs_cli_error("generate", 1, "out of memory");
                goto done;
            }
            items = grown;
        }
        memset(&items[n], 0, sizeof items[n]);
        prepare(in, &items[n], n, line);
        n++;
    }
    /* The streams point into items[]: open them once it no longer moves. */
    for (size_t i = 0; i < n; i++)
        if (!items[i].error && !(items[i].text_f = open_memstream(&items[i].text, &items[i].text_len))) {
            rc = kvs_cli_error("generate", 1, "out of memory");
            goto done;
        }
    kvs_error err;
    while (kvs_engine_has_work(in->engine)) {
        const kvs_output *outs;
        size_t no;
        if (kvs_engine_step(in->engine, &outs, &no, &err) != KVS_OK) {
            rc = kvs_cli_error("generate", 1, err.msg);
            goto done;
        }
        for (size_t i = 0; i < no; i++) {
            batch_item *it = &items[outs[i].id];
            if (outs[i].token >= 0)
                json_array_append_new(it->out_ids, json_integer(outs[i].token));
            fwrite(outs[i].text, 1, outs[i].text_len, it->text_f);
            if (outs[i].finished)
                it->finish = kvs_finish_reason_name(outs[i].reason);
        }
    }
    for (size_t i = 0; i < n; i++)
        if (items[i].text_f) {
            fclose(items[i].text_f);
            items[i].text_f = NULL;
        }
    FILE *out = out_path ? fopen(out_path, "w") : stdout;
    if (!out) {
        char msg[512];
        snprintf(msg, sizeof msg, "cannot open '%s' for writing: %s", out_path, strerror(errno));
        rc = kvs_cli_error("generate", 1, msg);
        goto done;
    }
    rc = write_results(items, n, out);
    if (out != stdout && fclose(out) != 0) {
        char msg[512];
        snprintf(msg, sizeof msg, "cannot write '%s': %s", out_path, strerror(errno));
        rc = kvs_cli_error("generate", 1, msg);
    }
done:
    for (size_t i = 0; i < n; i++) {
        if (items[i].text_f)
            fclose(items[i].text_f);
        free(items[i].text);
        json_decref(items[i].out_ids);
        json_decref(items[i].error);
        free(items[i].prompt);
        kvs_oai_request_free(&items[i].req);
        json_decref(items[i].body);
    }
    free(items);
    free(line);
    fclose(f);
    return rc;
}

struct kvs_gguf *kvs_cli_open_gguf(const char *cmd, const char *path)
{
    kvs_gguf *g;
    kvs_error err;
    if (kvs_gguf_open(&g, path, &err) != KVS_OK) {
        kvs_cli_error(cmd, 1, err.msg);
        return NULL;
    }
    return g;
}
