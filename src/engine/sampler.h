/*
 * sampler.h - choosing the next token from a row of logits.
 *
 * The order is vLLM's: penalties (repetition over prompt and output;
 * presence and frequency over the output), then temperature 0 = greedy
 * (argmax, lowest id on ties), else divide by the temperature, drop tokens
 * below min_p times the most likely one, keep the top_k of the rest, keep
 * the smallest set whose probability (renormalised over what is left)
 * reaches top_p, and draw from what remains.
 *
 * Randomness is per request: a kvs_rng seeded from the request's seed (or
 * from the engine when it has none), so the same seed gives the same
 * output whatever else is in the batch.
 *
 * Log-probabilities, when asked for, are of the model's distribution
 * (log-softmax of the raw logits), as vLLM returns by default.
 */
#ifndef KVS_ENGINE_SAMPLER_H
#define KVS_ENGINE_SAMPLER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

typedef struct kvs_sampling_params {
    float temperature;         /* 0: greedy */
    int32_t top_k;             /* <= 0: off */
    float top_p;               /* 1: off */
    float min_p;               /* 0: off */
    float repetition_penalty;  /* 1: off; > 1 discourages repeats */
    float presence_penalty;    /* 0: off */
    float frequency_penalty;   /* 0: off */
    bool has_seed;
    uint64_t seed;
} kvs_sampling_params;

/* The defaults: temperature 1, everything else off. */
kvs_sampling_params kvs_sampling_defaults(void);
/* Check ranges as vLLM does; names the bad field. */
kvs_status kvs_sampling_validate(const kvs_sampling_params *p, kvs_error *err);

typedef struct kvs_rng { uint64_t s[4]; } kvs_rng;
/* xoshiro256** seeded through splitmix64: the same seed, the same stream. */
void kvs_rng_seed(kvs_rng *r, uint64_t seed);
uint64_t kvs_rng_next(kvs_rng *r);
double kvs_rng_uniform(kvs_rng *r);   /* [0, 1) */

/* Scratch for one sampler (one engine): sized once for the vocabulary. */
typedef struct kvs_sampler {
    int32_t n_vocab;
    int32_t *idx;              /* [n_vocab] */
    float *prob;               /* [n_vocab] */
    int32_t *count;            /* [n_vocab] output-token counts (kept all zero between calls) */
    uint8_t *seen;             /* [n_vocab] prompt-or-output flags (kept zero) */
} kvs_sampler;

/* Allocate the scratch for n_vocab >= 1 tokens; on failure s is left zeroed. */
kvs_status kvs_sampler_init(kvs_sampler *s, int32_t n_vocab, kvs_error *err);
/* Free the scratch and zero s (safe on a zeroed sampler). */
void kvs_sampler_destroy(kvs_sampler *s);
/* Make the scratch resident; kvs_sampler_host_bytes is its size. */
void kvs_sampler_touch(kvs_sampler *s);
uint64_t kvs_sampler_host_bytes(int32_t n_vocab);

/* Pick a token.  logits (n_vocab) is modified.  prompt/output are the
 * request's tokens so far (for penalties). */
int32_t kvs_sample(kvs_sampler *s, const kvs_sampling_params *p, kvs_rng *rng, float *logits,
                   const int32_t *prompt, size_t n_prompt, const int32_t *output, size_t n_output);

/* Log-softmax of the row at `token`, and the top n (ids and logprobs,
 * descending).  Call before kvs_sample (which modifies logits). */
float kvs_logprobs(kvs_sampler *s, const float *logits, int32_t token, int32_t n_top,
                   int32_t *top_ids, float *top_logprobs);

#endif
