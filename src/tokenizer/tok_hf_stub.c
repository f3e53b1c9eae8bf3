/* Placeholders for the tokenizer.json support being built elsewhere; the
 * lead deletes this file when the real implementation merges. */
#include "tokenizer/tokenizer.h"

kvs_status kvs_tok_load_hf(kvs_tokenizer **out, const char *dir, kvs_error *err)
{
    *out = NULL;
    (void)dir;
    return kvs_fail(err, KVS_E_UNSUPPORTED, "tokenizer.json support is not built yet");
}

kvs_status kvs_tok_write_hf(const kvs_tokenizer *t, const char *dir, kvs_error *err)
{
    (void)t;
    (void)dir;
    return kvs_fail(err, KVS_E_UNSUPPORTED, "tokenizer.json support is not built yet");
}

kvs_status kvs_tok_write_gguf_meta(const kvs_tokenizer *t, kvs_gguf_writer *w, kvs_error *err)
{
    (void)t;
    (void)w;
    return kvs_fail(err, KVS_E_UNSUPPORTED, "tokenizer.json support is not built yet");
}
