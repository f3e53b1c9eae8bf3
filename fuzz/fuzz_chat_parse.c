/* libFuzzer harness for the reasoning and tool-call parsers of model output
 * (src/chat/chat_parse.h).  The first byte picks the parsers and the chunk
 * size; the rest is the output, parsed whole and fed to the streaming parser
 * in chunks.  Both must finish without a sanitizer report; every delta is a
 * JSON object; content and reasoning deltas concatenate to no more bytes
 * than the output has (nothing is sent twice). */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "chat/chat_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t sel = data[0];
    const char *text = (const char *)data + 1;
    size_t n = size - 1;
    kvs_chat_parse_cfg cfg = {.reasoning = (kvs_reasoning_kind)(sel % 3),
                              .tools = (kvs_tool_kind)((sel / 3) % 4),
                              .mode = (kvs_tool_mode)((sel / 12) % 4),
                              .id_seed = 7};
    memcpy(cfg.named, "f", 2);
    json_t *m = kvs_chat_parse_message(&cfg, text, n);
    if (!m || !json_is_object(m))
        abort();
    json_decref(m);
    size_t step = (size_t)(sel >> 6) * 7 + 1;
    kvs_chat_stream *s = kvs_chat_stream_new(&cfg);
    size_t sent = 0;
    for (size_t i = 0; i <= n; i += step) {
        size_t k = i + step <= n ? step : n - i;
        json_t *d = kvs_chat_stream_feed(s, text + i, k, i + step > n);
        if (!d)
            abort();
        size_t j;
        json_t *delta;
        json_array_foreach(d, j, delta)
        {
            if (!json_is_object(delta))
                abort();
            json_t *c = json_object_get(delta, "content"), *r = json_object_get(delta, "reasoning_content");
            sent += json_is_string(c) ? json_string_length(c) : 0;
            sent += json_is_string(r) ? json_string_length(r) : 0;
        }
        json_decref(d);
    }
    /* invalid UTF-8 bytes become U+FFFD (3 bytes each) */
    if (sent > 3 * n)
        abort();
    kvs_chat_stream_free(s);
    return 0;
}
