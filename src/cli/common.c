#include "cli/common.h"

#include <errno.h>
#include <inttypes.h>
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

/* One line of a batch file and what became of it.  A line is parsed when
 * the engine has a request slot for it (prepare, from feed): its output
 * buffers are sized then (max_tokens, the longest token), so that running
 * the batch allocates nothing per token, and a structured-output
 * constraint compiles into a lease of the structured-output slots
 * (grammar/gpool.h), as in the server; when every slot is taken the line
 * waits until a running one finishes and gives its lease back. */
typedef struct batch_item {
    char *line;                    /* the line, until it is prepared */
    bool prepared;
    json_t *body;
    kvs_oai_request req;
    int32_t *prompt;
    size_t n_prompt;
    int32_t *out_ids;
    size_t n_out, cap_out;
    char *text;
    size_t text_len, text_cap;
    const char *finish;
    json_t *error;
    bool added, done;
} batch_item;

static json_t *error_obj(const char *msg, const char *param)
{
    return json_pack("{s:s, s:s, s:s?}", "message", msg, "type", "invalid_request_error", "param",
                     param && *param ? param : NULL);
}

/* Parse line idx; false when the structured-output slots are all taken
 * (nothing is kept: prepare again later). */
static bool prepare(kvs_instance *in, batch_item *it, size_t idx)
{
    json_error_t jerr;
    const char *line = it->line ? it->line : "";
    it->prepared = true;
    it->body = json_loads(line, 0, &jerr);
    if (!it->body) {
        char msg[300];
        snprintf(msg, sizeof msg, "line %zu: invalid JSON: %s", idx + 1, jerr.text);
        it->error = error_obj(msg, NULL);
        return true;
    }
    kvs_oai_error oe;
    it->req.gpool = in->gpool; /* a constraint compiles into the structured-output slots */
    it->req.structured_off = !in->gpool;
    kvs_status st = kvs_oai_parse(it->body, KVS_OAI_COMPLETION, &it->req, &oe);
    if (st == KVS_E_BUDGET && kvs_engine_has_work(in->engine)) { /* every slot is taken: wait for one */
        kvs_oai_request_free(&it->req);
        memset(&it->req, 0, sizeof it->req);
        json_decref(it->body);
        it->body = NULL;
        it->prepared = false;
        return false;
    }
    if (st != KVS_OK) {
        it->error = error_obj(oe.message, oe.param);
        return true;
    }
    kvs_oai_apply_generation_config(it->body, &in->gen_defaults, &it->req);
    if (it->req.n != 1) {
        it->error = error_obj("'n' must be 1 in a batch file", "n");
        return true;
    }
    if (it->req.echo) { /* the results list output token ids and text only */
        it->error = error_obj("'echo' is not supported in a batch file", "echo");
        return true;
    }
    if (kvs_oai_prompt_tokens(&it->req, in->tok, &it->prompt, &it->n_prompt, &oe) != KVS_OK) {
        it->error = error_obj(oe.message, oe.param);
        return true;
    }
    const kvs_engine_config *cfg = kvs_engine_get_config(in->engine);
    size_t L = (size_t)cfg->max_model_len;
    size_t cap = it->req.params.max_tokens > 0 && (size_t)it->req.params.max_tokens < L
                     ? (size_t)it->req.params.max_tokens : L;
    it->cap_out = cap + 1;
    it->text_cap = it->cap_out * (kvs_tok_max_token_bytes(in->tok) + 4) + 16;
    it->out_ids = malloc(it->cap_out * sizeof *it->out_ids);
    it->text = malloc(it->text_cap);
    if (!it->out_ids || !it->text)
        it->error = error_obj("out of memory", NULL);
    return true;
}

/* A line is done: its request (and with it its structured-output lease) goes. */
static void release(batch_item *it)
{
    kvs_oai_request_free(&it->req);
    json_decref(it->body);
    it->body = NULL;
    free(it->line);
    it->line = NULL;
}

/* One JSON value to out (jansson writes it through stdio, in pieces). */
static bool dump_value(json_t *v, FILE *out)
{
    bool ok = v && json_dumpf(v, out, JSON_ENSURE_ASCII | JSON_COMPACT | JSON_ENCODE_ANY) == 0;
    json_decref(v);
    return ok;
}

static void dump_ids(const int32_t *ids, size_t n, FILE *out)
{
    fputc('[', out);
    for (size_t j = 0; j < n; j++)
        fprintf(out, j ? ",%d" : "%d", ids[j]);
    fputc(']', out);
}

/* The results, one JSON object a line, in input order: written straight to
 * out, so that the allocations do not grow with the outputs. */
static int write_results(batch_item *items, size_t n, FILE *out)
{
    for (size_t i = 0; i < n; i++) {
        batch_item *it = &items[i];
        bool ok = true;
        fprintf(out, "{\"id\":%zu,", i);
        if (it->error) {
            fputs("\"error\":", out);
            ok = dump_value(json_incref(it->error), out);
        } else {
            fputs("\"prompt_token_ids\":", out);
            dump_ids(it->prompt, it->n_prompt, out);
            fputs(",\"output_token_ids\":", out);
            dump_ids(it->out_ids, it->n_out, out);
            fputs(",\"text\":", out);
            ok = dump_value(json_stringn(it->text ? it->text : "", it->text_len), out);
            fputs(",\"finish_reason\":", out);
            if (it->finish)
                fprintf(out, "\"%s\"", it->finish);
            else
                fputs("null", out);
        }
        fputs("}\n", out);
        if (!ok)
            return kvs_cli_error("generate", 1, "cannot render a result as JSON");
    }
    return 0;
}

/* Queue the next lines while the engine has request slots (a line whose
 * request the engine refuses gets its error now). */
static void feed(kvs_instance *in, batch_item *items, size_t n, size_t *next)
{
    kvs_error err;
    while (*next < n && kvs_engine_free_slots(in->engine) > 0) {
        batch_item *it = &items[*next];
        if (!it->prepared && !prepare(in, it, *next))
            return; /* again when a running line has finished */
        if (!it->error && kvs_engine_add(in->engine, *next, it->prompt, it->n_prompt, &it->req.params, &err) != KVS_OK)
            it->error = error_obj(err.msg, "prompt");
        it->added = !it->error;
        if (!it->added)
            release(it);
        (*next)++;
    }
}

void kvs_cli_log_failed(const char *cmd, uint64_t id, const char *why)
{
    fprintf(stderr, "kvserve %s: error: request %" PRIu64 " failed: %s\n", cmd, id, why);
}

/* The engine failed: every line not finished gets the error; what finished
 * is kept and written. */
static void fail_unfinished(batch_item *items, size_t n, const char *msg)
{
    for (size_t i = 0; i < n; i++)
        if (!items[i].error && !items[i].done)
            items[i].error = json_pack("{s:s, s:s, s:n}", "message", msg, "type", "server_error", "param");
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
        if (!(items[n].line = strdup(line))) {
            rc = kvs_cli_error("generate", 1, "out of memory");
            goto done;
        }
        n++;
    }
    kvs_error err;
    size_t next = 0;
    feed(in, items, n, &next);
    while (kvs_engine_has_work(in->engine)) {
        const kvs_output *outs;
        size_t no;
        if (kvs_engine_step(in->engine, &outs, &no, &err) != KVS_OK) {
            char msg[600];
            snprintf(msg, sizeof msg, "engine step failed: %s", err.msg);
            rc = kvs_cli_error("generate", 1, msg);
            fail_unfinished(items, n, msg);
            break;
        }
        for (size_t i = 0; i < no; i++) {
            batch_item *it = &items[outs[i].id];
            if (outs[i].token >= 0 && it->n_out < it->cap_out)
                it->out_ids[it->n_out++] = outs[i].token;
            size_t room = it->text_cap - 1 - it->text_len, m = outs[i].text_len < room ? outs[i].text_len : room;
            memcpy(it->text + it->text_len, outs[i].text, m);
            it->text_len += m;
            it->text[it->text_len] = '\0';
            if (outs[i].finished) {
                it->finish = kvs_finish_reason_name(outs[i].reason);
                it->done = true;
                release(it);
                if (outs[i].error) { /* the engine ended it (a broken invariant): logged, and in its result */
                    kvs_cli_log_failed("generate", outs[i].id, outs[i].error);
                    it->error = json_pack("{s:s, s:s, s:n}", "message", outs[i].error, "type", "server_error",
                                          "param");
                }
            }
        }
        feed(in, items, n, &next);
    }
    FILE *out = out_path ? fopen(out_path, "w") : stdout;
    if (!out) {
        char msg[512];
        snprintf(msg, sizeof msg, "cannot open '%s' for writing: %s", out_path, strerror(errno));
        rc = kvs_cli_error("generate", 1, msg);
        goto done;
    }
    int wrc = write_results(items, n, out);
    if (wrc != 0)
        rc = wrc;
    if (out != stdout && fclose(out) != 0) {
        char msg[512];
        snprintf(msg, sizeof msg, "cannot write '%s': %s", out_path, strerror(errno));
        rc = kvs_cli_error("generate", 1, msg);
    }
done:
    for (size_t i = 0; i < n; i++) {
        free(items[i].text);
        free(items[i].out_ids);
        json_decref(items[i].error);
        free(items[i].prompt);
        release(&items[i]);
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
