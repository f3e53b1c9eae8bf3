/*
 * source.h - where a model comes from: one description for every format.
 *
 * A model source is opened from a path: a file is read as GGUF, a
 * directory as a Hugging Face checkpoint (config.json, model.safetensors
 * or model.safetensors.index.json with its shards, tokenizer.json,
 * tokenizer_config.json, generation_config.json).  Either way it yields
 *   - the hyperparameters (model.h), from GGUF metadata or config.json;
 *   - a table of tensors under canonical (GGUF) names (arch.h maps HF
 *     names), each with its kvserve dtype, ggml-order shape, the file it
 *     is in and its absolute byte offset there;
 *   - the tokenizer (tokenizer.ggml.* or tokenizer.json), the chat
 *     template, and generation defaults.
 * Opening reads headers only (config, safetensors headers): `plan` uses a
 * source without reading a weight.  kvs_source_read() reads one tensor's
 * bytes; the model loader (model.h) owns where they go.
 *
 * Loading a model reads gigabytes that are usually in the page cache
 * already, so the cost is the copy into fresh memory and the page faults
 * of that memory, not the disk.  kvs_source_read_many() reads many tensors
 * at once with several threads: every tensor is cut into pieces where its
 * destination crosses a multiple of KVS_SOURCE_READ_CHUNK (8 MiB: a whole
 * number of pages, 2 MiB huge ones included, so no two threads fault the
 * same page), the threads claim pieces in the jobs' order (the model loader
 * gives file order) and pread() them straight into place through one
 * descriptor per file.  Its errors are those of reading the jobs one by one
 * in that order: of the pieces that fail, the first one's is reported.
 *
 * Everything a source accepts has been checked: each file's header is
 * validated (formats/gguf.h, formats/safetensors.h), every shard the index
 * names exists and holds the tensors the index says, and errors name the
 * file and the problem ("config.json: \"hidden_size\" is missing").
 */
#ifndef KVS_MODEL_SOURCE_H
#define KVS_MODEL_SOURCE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/status.h"
#include "formats/gguf.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

typedef enum kvs_source_kind { KVS_SOURCE_GGUF, KVS_SOURCE_HF } kvs_source_kind;

typedef struct kvs_source_tensor {
    char name[96];          /* canonical name ("blk.0.attn_q.weight") */
    const char *file_name;  /* name in the file (HF "model.layers.0.self_attn.q_proj.weight") */
    uint32_t type;          /* kvserve (ggml) type id; see computable */
    const char *type_name;  /* the file's name for its type ("f32", "BF16", "I64") */
    bool known_type;        /* type is a kvserve type (else only type_name is meaningful) */
    uint32_t n_dims;
    uint64_t ne[4];         /* ggml order: ne[0] is contiguous */
    uint64_t nbytes;
    uint32_t file;          /* index into the source's files */
    uint64_t offset;        /* absolute byte offset in that file */
    bool plus_one;          /* add 1 to each value when loading (HF Gemma norms) */
} kvs_source_tensor;

/* Defaults from generation_config.json (vLLM's --generation-config auto). */
typedef struct kvs_gen_defaults {
    bool has_temperature, has_top_p, has_top_k, has_min_p, has_repetition_penalty, has_max_new_tokens;
    float temperature, top_p, min_p, repetition_penalty;
    int32_t top_k, max_new_tokens;
    int32_t n_eos;
    int32_t eos[16];        /* eos_token_id: one id or a list */
    int32_t bos;            /* -1 if absent */
} kvs_gen_defaults;

typedef struct kvs_model_source {
    kvs_source_kind kind;
    char *path;                    /* the file or directory given */
    const kvs_arch_info *arch;
    kvs_model_hparams hp;
    uint32_t n_files;
    char **files;                  /* paths of the files holding tensor data */
    uint64_t *file_sizes;
    size_t n_tensors;
    kvs_source_tensor *tensors;    /* only the tensors the family uses */
    size_t n_ignored;              /* HF tensors the family does not use (rotary inv_freq, ...) */
    const kvs_gguf *gguf;          /* GGUF: the file (tokenizer and metadata) */
    kvs_gguf *gguf_owned;
    char *chat_template;           /* or NULL */
    kvs_gen_defaults gen;
    char *config_dtype;            /* HF: torch_dtype / dtype, or NULL */
    void *priv;                    /* the implementation's state */
} kvs_model_source;

/* Open a model: a GGUF file, or a Hugging Face directory. */
kvs_status kvs_source_open(kvs_model_source **out, const char *path, kvs_error *err);
/* A source over an already open GGUF (borrowed: g must outlive it). */
kvs_status kvs_source_from_gguf(kvs_model_source **out, const kvs_gguf *g, kvs_error *err);
/* Free s (NULL: no-op). */
void kvs_source_close(kvs_model_source *s);

/* True when path is a directory. */
bool kvs_source_is_dir(const char *path);

/* The tensor of a canonical name, or NULL. */
const kvs_source_tensor *kvs_source_find(const kvs_model_source *s, const char *name);
/* Read tensor t's nbytes into dst. */
kvs_status kvs_source_read(const kvs_model_source *s, const kvs_source_tensor *t, void *dst,
                           kvs_error *err);
/* Many tensors into their destinations (see the top): n_threads threads
 * (the caller included; the caller alone for n_threads <= 1 or under two
 * pieces' worth of bytes).  progress, if not NULL, is called on the
 * caller's thread with the bytes read so far of the jobs' total, last with
 * the total.  On failure the destinations hold partial data. */
#define KVS_SOURCE_READ_CHUNK (8ull << 20)
typedef struct kvs_source_read_job {
    const kvs_source_tensor *t;
    void *dst;              /* t->nbytes bytes */
} kvs_source_read_job;
kvs_status kvs_source_read_many(const kvs_model_source *s, const kvs_source_read_job *jobs, size_t n_jobs,
                                int n_threads, kvs_load_progress_fn progress, void *progress_ctx,
                                kvs_error *err);
/* Bytes of tensor data in all files (for progress). */
uint64_t kvs_source_data_bytes(const kvs_model_source *s);

/* The model's tokenizer: GGUF metadata, or tokenizer.json. */
kvs_status kvs_source_tokenizer(const kvs_model_source *s, kvs_tokenizer **out, kvs_error *err);

/* Internal: the HF directory reader (source_hf.c). */
kvs_status kvs_source_open_hf(kvs_model_source *s, const char *dir, kvs_error *err);
/* Parse a config.json text into hyperparameters (no tensors needed;
 * tied_embeddings from tie_word_embeddings).  For tests and the fuzzer. */
kvs_status kvs_hf_config_parse(const char *text, size_t len, const kvs_arch_info **arch,
                               kvs_model_hparams *hp, char **dtype, kvs_error *err);

#endif
