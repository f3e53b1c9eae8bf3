/* kvs_chat_stream: drive the streaming reasoning / tool-call parser
 * (chat/chat_parse.h, kvs_chat_stream_step) over one synthetic output, for
 * tests/py/test_memory_allocs.py, which runs it under the allocation
 * counter.
 *
 *     kvs_chat_stream N KIND [nofinal]
 *
 * KIND 0: "<think>" + N bytes of reasoning + "</think>done" (deepseek_r1);
 * 1: content, then a Hermes call whose arguments string is N bytes long;
 * 2: a complete Hermes call, then a second one like 1's.  The output is
 * fed 4 bytes at a time as it grows in the caller's buffer (as the server
 * keeps it); with nofinal the last step (where a call is parsed whole) is
 * left out.  Prints the number of deltas and their bytes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/chat_parse.h"

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: kvs_chat_stream N KIND [nofinal]\n");
        return 2;
    }
    int n = atoi(argv[1]), kind = atoi(argv[2]);
    bool nofinal = argc > 3;
    char *t = malloc((size_t)(n > 0 ? n : 0) + 4096);
    if (!t)
        return 1;
    size_t len;
    if (kind == 0)
        len = (size_t)sprintf(t, "<think>");
    else if (kind == 1)
        len = (size_t)sprintf(t, "ok <tool_call>{\"name\": \"get_time\", \"arguments\": {\"city\": \"");
    else
        len = (size_t)sprintf(t, "<tool_call>{\"name\": \"a\", \"arguments\": {\"x\": 1}}</tool_call><tool_call>"
                                 "{\"name\": \"b\", \"arguments\": {\"q\": \"");
    for (int i = 0; i < n; i++)
        t[len++] = (char)('a' + i % 26);
    len += (size_t)sprintf(t + len, kind == 0 ? "</think>done" : "\"}}</tool_call>");
    kvs_chat_parse_cfg cfg = {.reasoning = kind == 0 ? KVS_REASONING_DEEPSEEK_R1 : KVS_REASONING_NONE,
                              .tools = KVS_TOOLS_HERMES, .mode = KVS_TOOL_MODE_AUTO, .id_seed = 1};
    kvs_chat_stream *s = kvs_chat_stream_new(&cfg);
    if (!s)
        return 1;
    size_t nd = 0, bytes = 0;
    for (size_t i = 4;; i += 4) {
        bool fin = i >= len;
        if (fin && nofinal)
            break;
        const kvs_chat_delta *d;
        size_t k;
        if (!kvs_chat_stream_step(s, t, fin ? len : i, fin, &d, &k))
            return 1;
        nd += k;
        for (size_t j = 0; j < k; j++)
            bytes += d[j].len;
        if (fin)
            break;
    }
    printf("%zu %zu\n", nd, bytes);
    kvs_chat_stream_free(s);
    free(t);
    return 0;
}
