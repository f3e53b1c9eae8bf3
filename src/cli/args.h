/*
 * args.h - table-driven command-line flags for the kvserve commands.
 *
 * Each command describes its flags as an array of kvs_opt (name, kind,
 * destination, help); kvs_args_parse() walks argv once, accepts
 * "--name value" and "--name=value", converts and range-checks each value,
 * and collects positional arguments.  Errors are one line naming the flag
 * ("--max-model-len: expected a positive integer or 'auto', got 'x'").
 * The same table prints --help, so the two never disagree.
 */
#ifndef KVS_CLI_ARGS_H
#define KVS_CLI_ARGS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "core/status.h"
#include "engine/launch.h"

typedef enum kvs_opt_kind {
    KVS_OPT_FLAG,      /* bool, no value */
    KVS_OPT_STR,       /* const char * */
    KVS_OPT_INT,       /* int32_t, >= 0 */
    KVS_OPT_INT_SIGNED,/* int32_t, any */
    KVS_OPT_U64,       /* uint64_t */
    KVS_OPT_FLOAT,     /* double */
    KVS_OPT_SIZE,      /* uint64_t bytes: 24GiB, 512MiB, 123 */
    KVS_OPT_LEN_AUTO,  /* int32_t: positive, or "auto" -> -1 */
    KVS_OPT_STR_LIST,  /* repeatable: appends to a kvs_str_list */
} kvs_opt_kind;

typedef struct kvs_str_list {
    const char *items[64];
    int n;
} kvs_str_list;

typedef struct kvs_opt {
    const char *name;      /* "--max-model-len" */
    const char *alias;     /* "-m" or NULL */
    kvs_opt_kind kind;
    void *dst;
    const char *metavar;   /* "N" */
    const char *help;
    bool *seen;            /* optional: set when given */
} kvs_opt;

#define KVS_MAX_OPTS 64
#define KVS_MAX_POSITIONAL 16

typedef struct kvs_cmd_spec {
    const char *name;          /* "generate" */
    const char *usage;         /* "kvserve generate -m MODEL -p PROMPT [options]" */
    const char *summary;
    kvs_opt opts[KVS_MAX_OPTS];
    int n_opts;
    const char *positional[KVS_MAX_POSITIONAL];
    int n_positional;
    int max_positional;
    bool help;
} kvs_cmd_spec;

void kvs_cmd_add(kvs_cmd_spec *c, kvs_opt o);
/* Add the engine and memory flags shared by generate, serve and plan. */
void kvs_cmd_add_engine_opts(kvs_cmd_spec *c, kvs_launch_opts *lo);
/* Parse argv (without the program and command names). */
kvs_status kvs_args_parse(kvs_cmd_spec *c, int argc, char **argv, kvs_error *err);
void kvs_args_help(const kvs_cmd_spec *c, FILE *f);

#endif
