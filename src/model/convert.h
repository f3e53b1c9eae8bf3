/*
 * convert.h - converting between model sources: a Hugging Face directory
 * to a GGUF file (`kvserve convert DIR -o OUT.gguf --type T`), and a GGUF
 * file back to a Hugging Face directory (`--to hf`, for tests and for
 * sharing a model with tools that read safetensors).
 *
 * HF -> GGUF writes what llama.cpp's convert_hf_to_gguf.py writes for the
 * same checkpoint: the family's GGUF architecture and metadata keys, the
 * canonical tensor names, norm vectors (and biases) as f32 and the
 * matrices in the chosen type (a matrix whose rows are not a multiple of
 * the quantization block falls back to f16, as llama.cpp does), Llama's q/k
 * rows permuted to the interleaved-pair RoPE layout, and Gemma's norm
 * weights stored as 1 + w.  The tokenizer goes through
 * kvs_tok_write_gguf_meta and the chat template to tokenizer.chat_template.
 * Scalings GGUF has no key for here (llama3 and dynamic RoPE, Qwen2's
 * per-layer window) are refused rather than written wrong.
 *
 * GGUF -> HF undoes each of those (q/k back to the rotate-half layout, Gemma
 * norms - 1), writes config.json with the class and keys transformers uses,
 * the tensors as model.safetensors (or `shards` files and an index), the
 * tokenizer via kvs_tok_write_hf and the chat template as
 * chat_template.jinja.  Quantized tensors are dequantized to `type`.
 *
 * Each tensor is converted and held in its target type only, so the peak
 * memory is about the output's size.
 */
#ifndef KVS_MODEL_CONVERT_H
#define KVS_MODEL_CONVERT_H

#include <stdio.h>

#include "model/source.h"
#include "model/synth.h"

typedef struct kvs_convert_opts {
    bool type_set;         /* else: the source's type (HF: config dtype; GGUF -> HF: f32 for quantized) */
    kvs_dtype type;        /* matrices: F32, F16, BF16, Q8_0, Q4_0 (GGUF); F32, F16, BF16 (HF) */
    int shards;            /* GGUF -> HF: number of safetensors files (default 1) */
    kvs_synth_mix mix;     /* to GGUF: a llama-quantize mix (q4_k_m, ...) chooses each matrix's type
                              by llama-quantize's rules (model/synth.h); KVS_MIX_NONE: `type` */
    FILE *warn;            /* warnings (tokenizer not converted, fallbacks); NULL: silent */
} kvs_convert_opts;

/* Write src (any kind) as a GGUF file at out. */
kvs_status kvs_convert_to_gguf(const kvs_model_source *src, const char *out, const kvs_convert_opts *o,
                               kvs_error *err);
/* Write src as a Hugging Face directory at dir (created if absent). */
kvs_status kvs_convert_to_hf(const kvs_model_source *src, const char *dir, const kvs_convert_opts *o,
                             kvs_error *err);

/* Row permutation between the HF (rotate-half) and GGUF (interleaved)
 * layouts of one q or k matrix of n_head heads of head_dim rows each, rows
 * of row_bytes bytes.  to_gguf: HF -> GGUF; else the inverse. */
void kvs_convert_permute_qk(const void *src, void *dst, int32_t n_head, int32_t head_dim, uint64_t row_bytes,
                            bool to_gguf);

#endif
