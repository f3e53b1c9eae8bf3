/*
 * tokenizer.h - text <-> token ids, built from a GGUF file's
 * `tokenizer.ggml.*` metadata or from a Hugging Face tokenizer.json
 * (kvs_tok_load_hf; the pipeline is described in tok_hf.h).
 *
 * Two families, chosen by `tokenizer.ggml.model`:
 *   "llama"  SentencePiece (BPE variant with scores): text is normalised
 *            (spaces -> U+2581, a leading U+2581 when add_space_prefix),
 *            split into UTF-8 characters, merged greedily by piece score;
 *            characters with no piece fall back to <0xXX> byte tokens.
 *   "gpt2"   byte-level BPE: the text is split by the pre-tokenizer named
 *            in `tokenizer.ggml.pre` (gpt2, llama3, deepseek-coder, ...),
 *            each piece's bytes are mapped to GPT-2's printable byte
 *            alphabet and merged by `tokenizer.ggml.merges` rank.
 * Special/control tokens in the text are only recognised when the caller
 * asks (parse_special), as llama.cpp does.
 *
 * Decoding is per token into bytes; a kvs_tok_stream holds back an
 * incomplete UTF-8 sequence so that a character split across tokens is
 * printed once, whole.
 */
#ifndef KVS_TOKENIZER_TOKENIZER_H
#define KVS_TOKENIZER_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "formats/gguf.h"

typedef struct kvs_tokenizer kvs_tokenizer;

/* Build the tokenizer from g's metadata (g may be closed afterwards). */
kvs_status kvs_tok_load(kvs_tokenizer **out, const kvs_gguf *g, kvs_error *err);
/* Build the tokenizer of a Hugging Face model directory: dir/tokenizer.json
 * (the `tokenizers` library's format; BPE models with the normalizers,
 * pre-tokenizers, post-processors and decoders listed in tok_hf.h) plus,
 * when present, dir/tokenizer_config.json (bos_token, eos_token,
 * pad_token, add_bos_token, add_eos_token, added_tokens_decoder,
 * chat_template) and
 * dir/generation_config.json (eos_token_id: more end-of-generation ids).
 * The result works with every kvs_tok_* function; kvs_tok_encode's
 * add_bos adds the post-processor's template (its BOS and any suffix such
 * as EOS), and added tokens marked special are control tokens (split out
 * of text only with parse_special) while the others always split.
 * Errors name the file and the JSON path of the problem. */
kvs_status kvs_tok_load_hf(kvs_tokenizer **out, const char *dir, kvs_error *err);
/* The same from memory: tokenizer.json text (len bytes) and an optional
 * tokenizer_config.json text (config NULL: none). */
kvs_status kvs_tok_load_hf_json(kvs_tokenizer **out, const char *json, size_t len,
                                const char *config, size_t config_len, kvs_error *err);
/* Write dir/tokenizer.json and dir/tokenizer_config.json (the token fields)
 * for t, so that kvs_tok_load_hf(dir) encodes as t does.  A GGUF
 * SentencePiece ("llama") vocabulary becomes a BPE with byte_fallback,
 * merges ordered by piece score and Prepend/Replace normalizers, as
 * transformers' LlamaConverter writes it; a "gpt2" one a ByteLevel BPE
 * whose Split regexes are its pre-tokenizer's.  dir must exist. */
kvs_status kvs_tok_write_hf(const kvs_tokenizer *t, const char *dir, kvs_error *err);
/* Set the tokenizer.ggml.* keys of a GGUF file for t (model, pre, tokens,
 * scores, token_type, merges, special ids, add_bos/add_eos/add_space_prefix).
 * A tokenizer.json tokenizer maps to "llama" when it is a byte-fallback BPE
 * without ByteLevel (scores: -rank of the merge that makes each piece), else
 * to "gpt2", whose pre-tokenizer must be one llama.cpp names (gpt-2,
 * llama-bpe, qwen2, default, falcon, starcoder, deepseek-coder).  What GGUF
 * cannot say is refused (KVS_E_UNSUPPORTED), except two losses llama.cpp's
 * converter makes too: an NFC normalizer is dropped, and Metaspace's
 * "first"/"always" prefix becomes add_space_prefix (which also prefixes
 * text that starts with a space, and text after special tokens). */
kvs_status kvs_tok_write_gguf_meta(const kvs_tokenizer *t, kvs_gguf_writer *w, kvs_error *err);
/* Free t (NULL: no-op). */
void kvs_tok_free(kvs_tokenizer *t);

/* tokenizer_config.json's chat_template (for a list of named templates,
 * the "default" one) of a kvs_tok_load_hf tokenizer; NULL when there is
 * none, and always for GGUF tokenizers (whose template is the file's
 * tokenizer.chat_template key).  Valid until kvs_tok_free. */
const char *kvs_tok_chat_template(const kvs_tokenizer *t);
/* Vocabulary size: valid ids are 0 .. n_vocab - 1. */
int32_t kvs_tok_n_vocab(const kvs_tokenizer *t);
int32_t kvs_tok_bos(const kvs_tokenizer *t);      /* -1 if none */
int32_t kvs_tok_eos(const kvs_tokenizer *t);      /* -1 if none */
bool kvs_tok_add_bos(const kvs_tokenizer *t);     /* tokenizer.ggml.add_bos_token (default: true for llama) */
/* tokenizer.ggml.add_eos_token (default false): callers that add special
 * tokens append EOS after the text. */
bool kvs_tok_add_eos(const kvs_tokenizer *t);
/* True when decoding drops the leading space of the first token
 * (SentencePiece with add_space_prefix): pass it to kvs_tok_stream_init. */
bool kvs_tok_strip_leading_space(const kvs_tokenizer *t);
/* The most bytes one token decodes to (size stream buffers with it + 8). */
size_t kvs_tok_max_token_bytes(const kvs_tokenizer *t);
/* True for tokens that end generation: EOS, EOT, EOM and similar. */
bool kvs_tok_is_eog(const kvs_tokenizer *t, int32_t id);
/* The raw vocabulary string of a token ("\u2581the", "<0x0A>", "Ġthe");
 * NULL for an id out of range. */
const char *kvs_tok_piece(const kvs_tokenizer *t, int32_t id);
/* Id of an exact piece string, or -1. */
int32_t kvs_tok_find_piece(const kvs_tokenizer *t, const char *piece);

/* Encode `len` bytes of text.  *ids is malloc'ed (caller frees); *n_ids
 * its length.  add_bos prepends BOS if the vocabulary has one. */
kvs_status kvs_tok_encode(const kvs_tokenizer *t, const char *text, size_t len, bool add_bos,
                          bool parse_special, int32_t **ids, size_t *n_ids, kvs_error *err);

/* The bytes that token `id` stands for (SentencePiece U+2581 -> ' ',
 * <0xXX> -> that byte, GPT-2 byte alphabet -> bytes; control tokens such
 * as BOS/EOS give "" unless render_special).  Writes at most cap bytes,
 * returns the full length. */
size_t kvs_tok_decode_token(const kvs_tokenizer *t, int32_t id, bool render_special, char *buf,
                            size_t cap);

/* Decode a whole sequence into a malloc'ed NUL-terminated string.  For
 * SentencePiece vocabularies the leading space of the first token after
 * BOS (or at the start) is removed, as SentencePiece's decoder does. */
char *kvs_tok_decode(const kvs_tokenizer *t, const int32_t *ids, size_t n);

/* Streaming detokenizer: push ids one at a time, get back only complete
 * UTF-8 text (bytes that can never form valid UTF-8 come out as U+FFFD;
 * control tokens print nothing).  Strips the SentencePiece leading space of the first token
 * when strip_leading_space is set (first output token after BOS). */
typedef struct kvs_tok_stream {
    char pending[8];
    size_t n_pending;
    bool at_start;
    bool strip_leading_space;
} kvs_tok_stream;

/* Start a stream with nothing pending; strip_leading_space drops one
 * space at the very start of the stream's text (SentencePiece's word mark). */
void kvs_tok_stream_init(kvs_tok_stream *s, bool strip_leading_space);
/* Write the text completed by `id` to out (capacity cap, NUL-terminated);
 * returns the number of bytes written (excluding NUL).  With cap of at
 * least kvs_tok_max_token_bytes() + 8 nothing is lost; a character that
 * does not fit is dropped whole. */
size_t kvs_tok_stream_push(const kvs_tokenizer *t, kvs_tok_stream *s, int32_t id, char *out,
                           size_t cap);
/* Emit what is left (an incomplete sequence becomes U+FFFD). */
size_t kvs_tok_stream_flush(kvs_tok_stream *s, char *out, size_t cap);

#endif
