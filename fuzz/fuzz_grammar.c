/*
 * fuzz_grammar - the structured-output compilers (untrusted bytes from
 * HTTP clients: guided_grammar, guided_json / response_format schemas,
 * guided_regex) and the byte-level matcher over what they accept.
 *
 * Input: a mode byte, then the grammar source, then optionally a NUL and
 * bytes to feed the matcher.  Mode % 3: 0 GBNF, 1 JSON Schema, 2 regex.
 * A rejected source must come with an error message; an accepted one must
 * parse as GBNF (the compilers' output always does) and the matcher must
 * take the bytes without crashing, refusing a byte only by returning
 * false with its state unchanged (checked: can_end/done stay the same).
 * Then the token mask over stories260K's 512-token vocabulary (from
 * $KVS_SHARED, when it is there) must agree with trying every token on a
 * copy of the state.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grammar/matcher.h"

/* The vocabulary, loaded once (NULL when the shared data is missing). */
static const kvs_gvocab *vocab(void)
{
    static kvs_gvocab *v;
    static int tried;
    if (!tried) {
        tried = 1;
        const char *dir = getenv("KVS_SHARED");
        char path[1024];
        snprintf(path, sizeof path, "%s/models/stories260K.gguf", dir ? dir : "../shared");
        kvs_gguf *g;
        kvs_tokenizer *t;
        kvs_error err;
        if (kvs_gguf_open(&g, path, &err) == KVS_OK) {
            if (kvs_tok_load(&t, g, &err) == KVS_OK) {
                kvs_gvocab_new(&v, t, &err); /* the trie keeps what it needs */
                kvs_tok_free(t);
            }
            kvs_gguf_close(g);
        }
    }
    return v;
}

static void check_mask(kvs_grammar *g, const char *feed, size_t n)
{
    const kvs_gvocab *v = vocab();
    if (!v)
        return;
    kvs_gmatcher_limits lim = {.max_frames = 4096, .max_tops = 1024, .cache_entries = 2};
    kvs_gmatcher *m = NULL, *tmp = NULL;
    kvs_error err;
    if (kvs_gmatcher_new(&m, g, v, n & 1, &lim, &err) != KVS_OK ||
        kvs_gmatcher_new(&tmp, g, v, n & 1, &lim, &err) != KVS_OK)
        goto done;
    for (size_t i = 0; i < n && i < 4; i++)
        kvs_gmatcher_accept_bytes(m, feed + i, 1);
    int32_t count;
    const uint32_t *mask = kvs_gmatcher_mask(m, &count);
    kvs_gmatcher_stats st;
    kvs_gmatcher_get_stats(m, &st);
    if (st.overflows)
        goto done; /* a refused byte may hide tokens: not comparable */
    for (int32_t t = 0; t < kvs_gvocab_n_vocab(v); t++) {
        if (kvs_gmatcher_copy_state(tmp, m, &err) != KVS_OK)
            abort();
        bool ok = kvs_gmatcher_accept_token(tmp, t), bit = (mask[t >> 5] >> (t & 31)) & 1u;
        if (ok != bit)
            abort(); /* the trie walk and brute force disagree */
    }
done:
    kvs_gmatcher_free(tmp);
    kvs_gmatcher_free(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 65536)
        return 0;
    int mode = data[0] % 3;
    const char *src = (const char *)data + 1;
    size_t n = size - 1;
    const char *nul = memchr(src, 0, n);
    size_t src_len = nul ? (size_t)(nul - src) : n;
    const char *feed = nul ? nul + 1 : NULL;
    size_t feed_len = nul ? n - src_len - 1 : 0;

    char *text = malloc(src_len + 1);
    if (!text)
        return 0;
    memcpy(text, src, src_len);
    text[src_len] = '\0';
    kvs_error err = {0};
    char *gbnf = NULL;
    kvs_status st = KVS_OK;
    if (mode == 1)
        st = kvs_json_schema_to_gbnf(text, src_len, &gbnf, &err);
    else if (mode == 2)
        st = kvs_regex_to_gbnf(text, &gbnf, &err);
    if (st != KVS_OK) {
        if (!err.msg[0])
            abort(); /* every rejection explains itself */
        free(text);
        return 0;
    }
    const char *g_src = mode == 0 ? text : gbnf;
    size_t g_len = mode == 0 ? src_len : strlen(gbnf);
    kvs_grammar *g = NULL;
    err.msg[0] = '\0';
    st = kvs_grammar_parse(&g, g_src, g_len, &err);
    if (st != KVS_OK) {
        if (!err.msg[0] || (mode != 0 && st != KVS_E_NOMEM && !strstr(err.msg, "elements") &&
                            !strstr(err.msg, "limited") && !strstr(err.msg, "empty string") &&
                            !strstr(err.msg, "left recursion")))
            abort(); /* compiler output that is not GBNF is a bug */
    } else {
        kvs_gmatcher *m = NULL;
        kvs_gmatcher_limits lim = {.max_frames = 4096, .max_tops = 1024, .cache_entries = 0};
        if (kvs_gmatcher_new(&m, g, NULL, false, &lim, &err) == KVS_OK) {
            for (size_t i = 0; i < feed_len; i++) {
                bool end = kvs_gmatcher_can_end(m), done = kvs_gmatcher_done(m);
                if (!kvs_gmatcher_accept_bytes(m, feed + i, 1) &&
                    (kvs_gmatcher_can_end(m) != end || kvs_gmatcher_done(m) != done))
                    abort(); /* a refused byte changed the state */
            }
            kvs_gmatcher_free(m);
        }
        check_mask(g, feed, feed_len);
        kvs_grammar_unref(g);
    }
    free(gbnf);
    free(text);
    return 0;
}
