/* kvserve serve: the OpenAI-compatible HTTP server. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/args.h"
#include "cli/cli.h"
#include "cli/common.h"
#include "memory/host.h"
#include "server/server.h"

typedef struct serve_opts {
    kvs_launch_opts lo;
    const char *host, *api_key, *served_model_name;
    int32_t port;
    double drain_timeout;
    const char *memory_report, *memory_report_svg;
    bool quiet;
    /* the HTTP front end (--http-threads and --http-body-pool are engine
     * options: they size the serving reserve, so plan takes them too) */
    double idle_timeout, header_timeout;
    const char *allowed_origins;
    bool seen_idle, seen_header;
    const char *chat_template, *reasoning_parser, *tool_call_parser;
    bool auto_tool_choice;
} serve_opts;

static void build_spec(kvs_cmd_spec *c, serve_opts *o)
{
    *c = (kvs_cmd_spec){
        .name = "serve",
        .usage = "kvserve serve -m MODEL [--host 127.0.0.1] [--port 8000] [--api-key KEY] "
                 "[--served-model-name NAME] [options]",
        .summary = "Serve MODEL over OpenAI's HTTP API: /v1/completions, /v1/chat/completions (stream: true\n"
                   "for server-sent events), /v1/models, /health, /metrics, /tokenize, /detokenize.\n"
                   "--port 0 picks a free port; the bound address is printed as 'listening on http://...'.\n"
                   "SIGINT/SIGTERM answer new requests 503, let running ones finish (up to\n"
                   "--shutdown-timeout seconds) and exit 0; a second signal stops at once.\n"
                   "The API key may also come from $KVSERVE_API_KEY."};
    kvs_cmd_add(c, (kvs_opt){"--host", NULL, KVS_OPT_STR, &o->host, "ADDR", "address to bind (default 127.0.0.1)"});
    kvs_cmd_add(c, (kvs_opt){"--port", NULL, KVS_OPT_INT, &o->port, "N", "TCP port (default 8000; 0: any free port)"});
    kvs_cmd_add(c, (kvs_opt){"--api-key", NULL, KVS_OPT_STR, &o->api_key, "KEY",
                             "require 'Authorization: Bearer KEY' on /v1 (default $KVSERVE_API_KEY)"});
    kvs_cmd_add(c, (kvs_opt){"--served-model-name", NULL, KVS_OPT_STR, &o->served_model_name, "NAME",
                             "the model name clients use (default: the model file's name without extension)"});
    kvs_cmd_add(c, (kvs_opt){"--shutdown-timeout", NULL, KVS_OPT_FLOAT, &o->drain_timeout, "S",
                             "on SIGINT/SIGTERM, wait this long for running requests (default 30)"});
    kvs_cmd_add(c, (kvs_opt){"--memory-report", NULL, KVS_OPT_STR, &o->memory_report, "FILE.json",
                             "write the start-up memory table as JSON"});
    kvs_cmd_add(c, (kvs_opt){"--memory-report-svg", NULL, KVS_OPT_STR, &o->memory_report_svg, "FILE.svg",
                             "draw the memory budget as a stacked bar"});
    kvs_cmd_add(c, (kvs_opt){"--chat-template", NULL, KVS_OPT_STR, &o->chat_template, "FILE",
                             "chat template to use instead of the model's (.jinja, or a tokenizer_config.json)"});
    kvs_cmd_add(c, (kvs_opt){"--reasoning-parser", NULL, KVS_OPT_STR, &o->reasoning_parser, "NAME",
                             "deepseek_r1 or qwen3: <think>...</think> to message.reasoning_content"});
    kvs_cmd_add(c, (kvs_opt){"--enable-auto-tool-choice", NULL, KVS_OPT_FLAG, &o->auto_tool_choice, NULL,
                             "let the model call tools when tool_choice is auto (needs --tool-call-parser)"});
    kvs_cmd_add(c, (kvs_opt){"--tool-call-parser", NULL, KVS_OPT_STR, &o->tool_call_parser, "NAME",
                             "hermes, llama3_json or mistral: the model's tool-call format"});
    kvs_cmd_add(c, (kvs_opt){"--quiet", "-q", KVS_OPT_FLAG, &o->quiet, NULL, "no start-up lines"});
    /* HTTP front end (docs/serving.md, "Connections and limits") */
    kvs_cmd_add(c, (kvs_opt){"--http-idle-timeout", NULL, KVS_OPT_FLOAT, &o->idle_timeout, "S",
                             "close a connection idle this long, e.g. kept alive between requests (default 5)",
                             &o->seen_idle});
    kvs_cmd_add(c, (kvs_opt){"--http-header-timeout", NULL, KVS_OPT_FLOAT, &o->header_timeout, "S",
                             "a request head must arrive within this (default 10; 408 otherwise)", &o->seen_header});
    kvs_cmd_add(c, (kvs_opt){"--allowed-origins", NULL, KVS_OPT_STR, &o->allowed_origins, "LIST",
                             "CORS: comma-separated origins allowed to call from a browser, or '*' (default none)"});
    kvs_cmd_add_engine_opts(c, &o->lo);
}

/* Wait for a signal in `set` for at most ms milliseconds (< 0: forever). */
static int wait_signal(const sigset_t *set, int ms)
{
    if (ms < 0) {
        int sig = 0;
        return sigwait(set, &sig) == 0 ? sig : -1;
    }
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    return sigtimedwait(set, NULL, &ts);
}

int kvs_cmd_serve(int argc, char **argv)
{
    serve_opts o = {.lo = kvs_launch_defaults(), .drain_timeout = 30.0};
    kvs_server_opts so = kvs_server_defaults();
    o.port = so.port;
    kvs_cmd_spec c;
    build_spec(&c, &o);
    kvs_error err;
    if (kvs_args_parse(&c, argc, argv, &err) != KVS_OK)
        return kvs_cli_error("serve", 2, err.msg);
    if (c.help) {
        kvs_args_help(&c, stdout);
        return 0;
    }
    if (!o.lo.model_path)
        return kvs_cli_error("serve", 2, "-m MODEL is required");
    if (o.port > 65535)
        return kvs_cli_error("serve", 2, "--port must be in 0..65535");
    if (!(o.drain_timeout >= 0))
        return kvs_cli_error("serve", 2, "--shutdown-timeout must be >= 0");
    if (!o.api_key)
        o.api_key = getenv("KVSERVE_API_KEY");
    if (o.api_key && !*o.api_key)
        return kvs_cli_error("serve", 2, "the API key is empty (--api-key \"\" or KVSERVE_API_KEY= set to nothing): "
                             "authentication would be off; give a non-empty key, or unset it to serve without one");
    if (!(o.idle_timeout >= 0) || o.idle_timeout > 86400 || (o.idle_timeout == 0 && o.seen_idle))
        return kvs_cli_error("serve", 2, "--http-idle-timeout must be in (0, 86400] seconds");
    if (!(o.header_timeout >= 0) || o.header_timeout > 86400 ||
        (o.header_timeout == 0 && o.seen_header))
        return kvs_cli_error("serve", 2, "--http-header-timeout must be in (0, 86400] seconds");

    /* Every thread started from here on inherits these signals blocked; this
     * thread takes them with sigwait. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    o.lo.log = o.quiet ? NULL : stderr;
    if (kvs_cli_prepare_launch("serve", &o.lo) != 0)
        return 2;
    kvs_instance *in;
    if (kvs_launch(&in, &o.lo, &err) != KVS_OK)
        return kvs_cli_error("serve", 1, err.msg);
    int rc = kvs_cli_write_reports(in, o.memory_report, o.memory_report_svg);
    if (rc != 0) {
        kvs_instance_free(in);
        return rc;
    }
    so.host = o.host ? o.host : so.host;
    so.port = o.port;
    so.api_key = o.api_key;
    so.served_model_name = o.served_model_name;
    so.model_path = o.lo.model_path;
    so.max_body_bytes = (size_t)o.lo.max_request_bytes; /* inside the serving reserve */
    so.max_connections = (unsigned)o.lo.max_connections;
    if (o.lo.http_threads)
        so.http_threads = (unsigned)o.lo.http_threads;
    if (o.idle_timeout > 0)
        so.connection_timeout_s = o.idle_timeout < 1 ? 1u : (unsigned)(o.idle_timeout + 0.5);
    if (o.header_timeout > 0)
        so.header_timeout_s = o.header_timeout;
    so.body_pool_bytes = (size_t)o.lo.http_body_pool;
    so.answer_pool_bytes = (size_t)o.lo.http_answer_pool;
    so.allowed_origins = o.allowed_origins;
    so.log = stderr;
    so.chat_template_path = o.chat_template;
    so.reasoning_parser = o.reasoning_parser;
    so.tool_call_parser = o.tool_call_parser;
    so.enable_auto_tool_choice = o.auto_tool_choice;
    kvs_server *srv;
    if (kvs_server_start(&srv, in, &so, &err) != KVS_OK) {
        kvs_instance_free(in);
        return kvs_cli_error("serve", 1, err.msg);
    }
    bool v6 = strchr(so.host, ':') != NULL;
    fprintf(stderr, "INFO kvserve: serving model '%s'%s; listening on http://%s%s%s:%d\n",
            kvs_server_model_name(srv), so.api_key ? " (API key required)" : "", v6 ? "[" : "", so.host,
            v6 ? "]" : "", kvs_server_port(srv));
    fflush(stderr);

    int sig = wait_signal(&sigs, -1);
    fprintf(stderr, "INFO kvserve: signal %d: draining (up to %.0f s; a second signal stops now)\n", sig,
            o.drain_timeout);
    fflush(stderr);
    kvs_server_drain(srv);
    double deadline = o.drain_timeout * 1000.0;
    for (double waited = 0; waited < deadline; waited += 100) {
        if (kvs_server_wait(srv, 0))
            break;
        if (wait_signal(&sigs, 100) > 0) {
            fprintf(stderr, "INFO kvserve: second signal: stopping now\n");
            break;
        }
    }
    kvs_server_stop(srv);
    /* The reports again, with the peak this run observed (VmHWM). */
    uint64_t rss, hwm;
    if ((o.memory_report || o.memory_report_svg) && kvs_launch_host_is_device(in->backend) && kvs_host_rss(&rss, &hwm)) {
        in->report.peak_process_bytes = hwm;
        kvs_cli_write_reports(in, o.memory_report, o.memory_report_svg);
        fprintf(stderr, "INFO kvserve: peak process memory %.2f MiB of the %.2f MiB budget\n", hwm / 1048576.0,
                in->report.budget_bytes / 1048576.0);
    }
    kvs_instance_free(in);
    fprintf(stderr, "INFO kvserve: stopped\n");
    return 0;
}
