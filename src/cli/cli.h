/*
 * cli.h - the kvserve commands.  Each takes the arguments after its name
 * and returns the process exit code (0 ok, 1 runtime failure, 2 usage).
 * Results go to stdout; logs and errors to stderr.
 */
#ifndef KVS_CLI_CLI_H
#define KVS_CLI_CLI_H

int kvs_cmd_generate(int argc, char **argv);
int kvs_cmd_tokenize(int argc, char **argv);
int kvs_cmd_info(int argc, char **argv);
int kvs_cmd_synth(int argc, char **argv);
int kvs_cmd_plan(int argc, char **argv);
int kvs_cmd_serve(int argc, char **argv);
int kvs_cmd_chat_template(int argc, char **argv);
int kvs_cmd_convert(int argc, char **argv);

/* Print "kvserve CMD: error: MSG" to stderr and return the exit code. */
int kvs_cli_error(const char *cmd, int code, const char *msg);

#endif
