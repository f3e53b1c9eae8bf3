#include "tokenizer/tok_hf.h"
kvs_status kvs_tok_write_hf(const kvs_tokenizer *t, const char *dir, kvs_error *err)
{ (void)t; (void)dir; return kvs_fail(err, KVS_E_UNSUPPORTED, "todo"); }
kvs_status kvs_tok_write_gguf_meta(const kvs_tokenizer *t, kvs_gguf_writer *w, kvs_error *err)
{ (void)t; (void)w; return kvs_fail(err, KVS_E_UNSUPPORTED, "todo"); }
