/*
 * fuzz_http_head - the gate's check of a request head (untrusted bytes
 * straight from the socket).  Any input must give a verdict: MORE, OK with
 * a head length inside the input, or BAD with a status and message; and a
 * refusal must not change when more bytes follow.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/http_head.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const kvs_http_head_limits lim = {.max_head = 4096, .max_target = 2048, .max_fields = 32, .max_body = 1 << 20};
    kvs_http_head_verdict v, w;
    kvs_head_result r = kvs_http_head_check((const char *)data, size, &lim, &v);
    if (r == KVS_HEAD_BAD && (v.status < 400 || v.status > 599 || !v.code || !v.msg[0]))
        abort();
    if (r == KVS_HEAD_OK && (v.head_len == 0 || v.head_len > size))
        abort();
    if (r == KVS_HEAD_BAD) { /* more bytes never change a refusal */
        char *more = malloc(size + 7);
        if (!more)
            return 0;
        memcpy(more, data, size);
        memcpy(more + size, "\r\n\r\nxyz", 7);
        kvs_head_result r2 = kvs_http_head_check(more, size + 7, &lim, &w);
        free(more);
        if (r2 != KVS_HEAD_BAD || w.status != v.status)
            abort();
    }
    return 0;
}
