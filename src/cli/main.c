/* kvserve: the command-line entry point. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *summary;
} COMMANDS[] = {
    {"generate", kvs_cmd_generate, "generate text from a prompt (or a JSONL file of requests)"},
    {"serve", kvs_cmd_serve, "run the OpenAI-compatible HTTP server"},
    {"plan", kvs_cmd_plan, "predict the memory split without loading weights"},
    {"tokenize", kvs_cmd_tokenize, "print the token ids of a text"},
    {"chat-template", kvs_cmd_chat_template, "print what a chat template makes of a conversation"},
    {"info", kvs_cmd_info, "print a GGUF file's or HF directory's metadata and tensors"},
    {"synth", kvs_cmd_synth, "write a GGUF model with random weights of a given shape"},
    {"convert", kvs_cmd_convert, "convert a Hugging Face directory to GGUF (or back)"},
};

int kvs_cli_error(const char *cmd, int code, const char *msg)
{
    fprintf(stderr, "kvserve %s: error: %s\n", cmd, msg);
    return code;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: kvserve COMMAND [options]   (kvserve COMMAND --help for its options)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++)
        fprintf(f, "  %-10s %s\n", COMMANDS[i].name, COMMANDS[i].summary);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        puts("kvserve 0.1.0");
        return 0;
    }
    for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++)
        if (strcmp(argv[1], COMMANDS[i].name) == 0)
            return COMMANDS[i].fn(argc - 2, argv + 2);
    fprintf(stderr, "kvserve: error: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
