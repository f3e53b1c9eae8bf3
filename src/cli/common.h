/*
 * common.h - pieces shared by the CLI commands.
 */
#ifndef KVS_CLI_COMMON_H
#define KVS_CLI_COMMON_H

#include "engine/launch.h"

/* Write the memory report as JSON / SVG where paths are given; exit code. */
/* Before a start or a plan: fix the serving reserve from the options and
 * the C library's heap settings that keep the serving host memory inside
 * it (at most two malloc arenas; fixed mmap and trim thresholds).  0, or
 * the exit code after printing an error. */
int kvs_cli_prepare_launch(const char *cmd, kvs_launch_opts *lo);
int kvs_cli_write_reports(const kvs_instance *in, const char *json_path, const char *svg_path);
/* Run every request of a JSONL file through the engine; one result line each. */
int kvs_cli_run_batch_file(kvs_instance *in, const char *path, const char *out_path);
/* Log a request the engine ended (kvs_output.error) to stderr, one line:
 * "kvserve CMD: error: request ID failed: WHY". */
void kvs_cli_log_failed(const char *cmd, uint64_t id, const char *why);
/* Open a GGUF for a command, printing the error; NULL on failure. */
struct kvs_gguf *kvs_cli_open_gguf(const char *cmd, const char *path);

#endif
