/*
 * synth.h - writing GGUF models with random weights of any shape, so that
 * tests and benchmarks use realistic shapes without downloads.
 *
 * The file is a normal GGUF v3 of architecture llama, qwen2 or qwen3 with
 * the metadata a converter writes.  Weights are drawn from N(0, std^2)
 * with std = init_scale / sqrt(fan_in) (norm weights near 1), from a seeded
 * generator, and stored in the requested type.  The tokenizer is copied
 * from another GGUF (vocab_from) or made up: <unk> <s> </s>, 256 byte
 * tokens and filler pieces, SentencePiece-style.
 *
 * header_only writes real metadata and tensor infos but leaves the tensor
 * data as a hole in a sparse file (it reads as zeros): a multi-GiB model
 * header for `kvserve plan` costs no disk and no time.
 */
#ifndef KVS_MODEL_SYNTH_H
#define KVS_MODEL_SYNTH_H

#include <stdbool.h>
#include <stdint.h>

#include "core/dtype.h"
#include "core/status.h"
#include "formats/gguf.h"

typedef struct kvs_synth_opts {
    const char *arch;         /* "llama" (default), "qwen2", "qwen3" */
    const char *name;         /* general.name */
    int32_t dim, n_layers, n_heads, n_kv_heads, head_dim, hidden_dim, n_vocab, n_ctx;
    float rope_freq_base, norm_eps;
    kvs_dtype wtype;          /* type of the matrices */
    kvs_dtype embd_type;      /* type of token_embd (and output) */
    bool tied;                /* no output.weight */
    uint64_t seed;
    float init_scale;         /* default 1 */
    const char *vocab_from;   /* GGUF to copy tokenizer.* from, or NULL */
    const char *chat_template;/* tokenizer.chat_template text to store, or NULL */
    bool header_only;
} kvs_synth_opts;

/* Defaults: a tiny llama.  kvs_synth_preset fills a named real shape:
 * stories260k, llama2-110m, llama3.2-1b, llama3.1-8b, qwen2.5-7b, qwen3-0.6b. */
kvs_synth_opts kvs_synth_defaults(void);
bool kvs_synth_preset(const char *name, kvs_synth_opts *o);
const char *kvs_synth_preset_names(void);

kvs_status kvs_synth_write(const kvs_synth_opts *o, const char *path, kvs_error *err);

#endif
