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
 * Quantization mixes (kvs_synth_mix): llama-quantize's file types (Q4_K_M,
 * Q4_K_S, Q5_K_M, Q5_K_S, Q3_K_M, Q2_K, Q6_K and the legacy Q4_0 .. Q8_0)
 * give each tensor the type llama-quantize's per-tensor rules give it
 * (llama_tensor_get_type of llama.cpp b4747, for dense llama-family
 * models): e.g. Q4_K_M stores attn_v and ffn_down of the first and last
 * eighth of the layers and of every third layer between in Q6_K, output in
 * Q6_K, the rest in Q4_K; a row length that the type's block does not
 * divide falls back as llama-quantize does (Q4_K -> Q5_0, Q5_K -> Q5_1,
 * Q6_K -> Q8_0, then F16; Q2_K/Q3_K, which llama-quantize sends to
 * IQ4_NL, kvserve sends to Q4_0).  Norms and biases stay F32.
 *
 * kvs_synth_requantize converts an existing model file instead of making
 * weights up (llama-quantize's job, from any computable type): metadata
 * is copied, tensors are dequantized to f32 and stored in the mix's types.
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

typedef enum kvs_synth_mix {
    KVS_MIX_NONE = 0, /* wtype for matrices, embd_type for the embeddings */
    KVS_MIX_Q4_0, KVS_MIX_Q4_1, KVS_MIX_Q5_0, KVS_MIX_Q5_1, KVS_MIX_Q8_0,
    KVS_MIX_Q2_K, KVS_MIX_Q3_K_M, KVS_MIX_Q4_K_S, KVS_MIX_Q4_K_M, KVS_MIX_Q5_K_S,
    KVS_MIX_Q5_K_M, KVS_MIX_Q6_K,
} kvs_synth_mix;

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
    kvs_synth_mix mix;        /* a llama-quantize file type, or KVS_MIX_NONE */
} kvs_synth_opts;

/* Parse a mix name, case-insensitively: q4_k_m, q4_k_s, q5_k_m, q5_k_s,
 * q3_k_m, q2_k, q6_k, q4_0, q4_1, q5_0, q5_1, q8_0; false if unknown. */
bool kvs_synth_mix_parse(const char *name, kvs_synth_mix *out);
const char *kvs_synth_mix_names(void);
/* llama.cpp's general.file_type (llama_ftype) of a mix; 0 for KVS_MIX_NONE. */
uint32_t kvs_synth_mix_file_type(kvs_synth_mix mix);

/* The type a mix gives the tensor `name` ("token_embd.weight",
 * "blk.3.attn_v.weight", ...) of row length ne0, in a model of n_layers
 * layers whose query heads share each KV head n_gqa ways, with or without
 * an output.weight (without, token_embd is also the output matrix). */
kvs_dtype kvs_synth_mix_type(kvs_synth_mix mix, const char *name, int64_t ne0, int32_t n_layers,
                             int32_t n_gqa, bool has_output);

/* Defaults: a tiny llama.  kvs_synth_preset fills a named real shape:
 * stories260k, llama2-110m, llama3.2-1b, llama3.1-8b, qwen2.5-7b, qwen3-0.6b. */
kvs_synth_opts kvs_synth_defaults(void);
bool kvs_synth_preset(const char *name, kvs_synth_opts *o);
const char *kvs_synth_preset_names(void);

kvs_status kvs_synth_write(const kvs_synth_opts *o, const char *path, kvs_error *err);

/* Write `src`'s model to `path` with its matrices converted: to o->mix's
 * types, or (KVS_MIX_NONE) to o->wtype, token_embd/output to o->embd_type.
 * Only o->mix, o->wtype and o->embd_type are read.  Fails, naming the
 * tensor, when a plain type's block does not divide a row. */
kvs_status kvs_synth_requantize(const kvs_synth_opts *o, const char *src, const char *path,
                                kvs_error *err);

#endif
