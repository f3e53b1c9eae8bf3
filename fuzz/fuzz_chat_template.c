/* fuzz_chat_template.c - libFuzzer harness for chat-template detection and
 * rendering.  Input: NUL-separated pieces; the first is a template given to
 * kvs_chat_detect, the rest are messages (first byte picks the role, the
 * rest is the content) rendered in every format. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/chat_template.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const roles[] = {"system", "user", "assistant", "tool", "x"};
    char *buf = malloc(size + 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    buf[size] = '\0';

    kvs_chat_msg msgs[16];
    size_t n = 0;
    char *p = buf + strlen(buf) + 1;
    while (p <= buf + size && n < 16) {
        size_t len = strlen(p);
        msgs[n].role = roles[(len ? (unsigned char)p[0] : 0) % 5];
        msgs[n].content = len ? p + 1 : p;
        n++;
        p += len + 1;
    }

    kvs_error err;
    kvs_chat_format f;
    (void)kvs_chat_detect(buf, &f, &err);
    for (int i = 0; i < KVS_CHAT_FORMAT_COUNT; i++) {
        kvs_chat_opts o = {.add_generation_prompt = n % 2, .bos = "<s>", .eos = "</s>",
                           .disable_thinking = n % 3 == 0};
        char *out = NULL;
        if (kvs_chat_render_opts((kvs_chat_format)i, msgs, n, &o, &out, &err) == KVS_OK)
            free(out);
    }
    free(buf);
    return 0;
}
