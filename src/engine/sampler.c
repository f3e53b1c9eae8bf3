#include "engine/sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

kvs_sampling_params kvs_sampling_defaults(void)
{
    return (kvs_sampling_params){.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .min_p = 0.0f,
                                 .repetition_penalty = 1.0f};
}

kvs_status kvs_sampling_validate(const kvs_sampling_params *p, kvs_error *err)
{
    if (!(p->temperature >= 0.0f && p->temperature <= 1e6f))
        return kvs_fail(err, KVS_E_INVALID, "temperature must be >= 0, got %g", p->temperature);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return kvs_fail(err, KVS_E_INVALID, "top_p must be in (0, 1], got %g", p->top_p);
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
        return kvs_fail(err, KVS_E_INVALID, "min_p must be in [0, 1], got %g", p->min_p);
    if (p->top_k < -1)
        return kvs_fail(err, KVS_E_INVALID, "top_k must be -1 (off) or >= 0, got %d", p->top_k);
    if (!(p->repetition_penalty > 0.0f && p->repetition_penalty <= 100.0f))
        return kvs_fail(err, KVS_E_INVALID, "repetition_penalty must be in (0, 100], got %g",
                        p->repetition_penalty);
    if (!(p->presence_penalty >= -2.0f && p->presence_penalty <= 2.0f))
        return kvs_fail(err, KVS_E_INVALID, "presence_penalty must be in [-2, 2], got %g",
                        p->presence_penalty);
    if (!(p->frequency_penalty >= -2.0f && p->frequency_penalty <= 2.0f))
        return kvs_fail(err, KVS_E_INVALID, "frequency_penalty must be in [-2, 2], got %g",
                        p->frequency_penalty);
    return KVS_OK;
}

/* xoshiro256** seeded through splitmix64. */
void kvs_rng_seed(kvs_rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++) {
        uint64_t z = (seed += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        r->s[i] = z ^ (z >> 31);
    }
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t kvs_rng_next(kvs_rng *r)
{
    uint64_t *s = r->s, out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

double kvs_rng_uniform(kvs_rng *r) { return (double)(kvs_rng_next(r) >> 11) * 0x1.0p-53; }

kvs_status kvs_sampler_init(kvs_sampler *s, int32_t n_vocab, kvs_error *err)
{
    memset(s, 0, sizeof *s);
    s->n_vocab = n_vocab;
    s->idx = malloc((size_t)n_vocab * sizeof *s->idx);
    s->prob = malloc((size_t)n_vocab * sizeof *s->prob);
    s->count = calloc((size_t)n_vocab, sizeof *s->count);
    s->seen = calloc((size_t)n_vocab, 1);
    if (!s->idx || !s->prob || !s->count || !s->seen) {
        kvs_sampler_destroy(s);
        return kvs_fail(err, KVS_E_NOMEM, "out of memory for the sampler");
    }
    return KVS_OK;
}

void kvs_sampler_touch(kvs_sampler *s)
{
    memset(s->idx, 0, (size_t)s->n_vocab * sizeof *s->idx);
    memset(s->prob, 0, (size_t)s->n_vocab * sizeof *s->prob);
    memset(s->count, 0, (size_t)s->n_vocab * sizeof *s->count);
    memset(s->seen, 0, (size_t)s->n_vocab);
}

uint64_t kvs_sampler_host_bytes(int32_t n_vocab) { return (uint64_t)n_vocab * 13; }

void kvs_sampler_destroy(kvs_sampler *s)
{
    free(s->idx);
    free(s->prob);
    free(s->count);
    free(s->seen);
    memset(s, 0, sizeof *s);
}

static void apply_penalties(kvs_sampler *s, const kvs_sampling_params *p, float *logits,
                            const int32_t *prompt, size_t n_prompt, const int32_t *output,
                            size_t n_output)
{
    bool rep = p->repetition_penalty != 1.0f;
    bool pres = p->presence_penalty != 0.0f || p->frequency_penalty != 0.0f;
    if (!rep && !pres)
        return;
    const int32_t V = s->n_vocab;
    for (size_t i = 0; i < n_output; i++)
        if (output[i] >= 0 && output[i] < V)
            s->count[output[i]]++, s->seen[output[i]] = 1;
    if (rep)
        for (size_t i = 0; i < n_prompt; i++)
            if (prompt[i] >= 0 && prompt[i] < V)
                s->seen[prompt[i]] = 1;
    /* Apply once per distinct token, then clear the marks. */
    for (int pass = 0; pass < 2; pass++) {
        const int32_t *list = pass == 0 ? prompt : output;
        size_t n = pass == 0 ? n_prompt : n_output;
        for (size_t i = 0; i < n; i++) {
            int32_t t = list[i];
            if (t < 0 || t >= V || !s->seen[t])
                continue;
            if (rep)
                logits[t] = logits[t] > 0 ? logits[t] / p->repetition_penalty
                                          : logits[t] * p->repetition_penalty;
            if (pres && s->count[t] > 0) { /* vLLM's order: frequency, then presence */
                logits[t] -= p->frequency_penalty * (float)s->count[t];
                logits[t] -= p->presence_penalty;
            }
            s->seen[t] = 0;
            s->count[t] = 0;
        }
    }
}

static int32_t argmax(const float *x, int32_t n)
{
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

static int cmp_desc(const void *a, const void *b, void *ctx)
{
    const float *prob = ctx;
    float x = prob[*(const int32_t *)a], y = prob[*(const int32_t *)b];
    if (x != y)
        return x > y ? -1 : 1;
    return *(const int32_t *)a - *(const int32_t *)b;
}

/* Sift idx[i] down the heap idx[0..k) whose root is the candidate that
 * cmp_desc puts last (the worst kept so far). */
static void sift_down(int32_t *idx, int32_t k, int32_t i, const float *prob)
{
    for (;;) {
        int32_t worst = i, l = 2 * i + 1, r = l + 1;
        if (l < k && cmp_desc(&idx[l], &idx[worst], (void *)prob) > 0)
            worst = l;
        if (r < k && cmp_desc(&idx[r], &idx[worst], (void *)prob) > 0)
            worst = r;
        if (worst == i)
            return;
        int32_t t = idx[i];
        idx[i] = idx[worst];
        idx[worst] = t;
        i = worst;
    }
}

/* Sift idx[i] down the heap idx[0..k) whose root is the candidate that
 * cmp_desc puts first (the best). */
static void sift_best(int32_t *idx, int32_t k, int32_t i, const float *prob)
{
    for (;;) {
        int32_t best = i, l = 2 * i + 1, r = l + 1;
        if (l < k && cmp_desc(&idx[l], &idx[best], (void *)prob) < 0)
            best = l;
        if (r < k && cmp_desc(&idx[r], &idx[best], (void *)prob) < 0)
            best = r;
        if (best == i)
            return;
        int32_t t = idx[i];
        idx[i] = idx[best];
        idx[best] = t;
        i = best;
    }
}

/* Move the k candidates that come first under cmp_desc into idx[0..k), in
 * no particular order; returns k.  cmp_desc is a total order (ties by id),
 * so this keeps exactly the set a full sort would keep, in O(n log k). */
static int32_t select_top(int32_t *idx, int32_t n, int32_t k, const float *prob)
{
    for (int32_t i = k / 2 - 1; i >= 0; i--)
        sift_down(idx, k, i, prob);
    for (int32_t i = k; i < n; i++)
        if (cmp_desc(&idx[i], &idx[0], (void *)prob) < 0) {
            idx[0] = idx[i];
            sift_down(idx, k, 0, prob);
        }
    return k;
}

/* Sort idx[0..n) in cmp_desc's order, in place: a heapsort over the heap
 * whose root is the worst candidate, so that each step moves the worst
 * left to the end.  cmp_desc is a total order, so the result is the one
 * any correct sort gives; unlike qsort_r (which glibc may back with a
 * malloc'ed merge buffer of n elements) it allocates nothing. */
static void sort_desc(int32_t *idx, int32_t n, const float *prob)
{
    /* A heap whose root is the *best*: sift with the order reversed. */
    for (int32_t i = n / 2 - 1; i >= 0; i--)
        sift_best(idx, n, i, prob);
    for (int32_t end = n - 1; end > 0; end--) {
        int32_t t = idx[0];
        idx[0] = idx[end];
        idx[end] = t;
        sift_best(idx, end, 0, prob);
    }
    /* idx is now ascending under "best at the root, moved to the end":
     * reverse to put the best first. */
    for (int32_t i = 0, j = n - 1; i < j; i++, j--) {
        int32_t t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
    }
}

int32_t kvs_sample(kvs_sampler *s, const kvs_sampling_params *p, kvs_rng *rng, float *logits,
                   const int32_t *prompt, size_t n_prompt, const int32_t *output, size_t n_output)
{
    const int32_t V = s->n_vocab;
    apply_penalties(s, p, logits, prompt, n_prompt, output, n_output);
    if (p->temperature == 0.0f)
        return argmax(logits, V);

    /* Softmax at the temperature, into prob (indexed by token). */
    float mx = logits[argmax(logits, V)];
    for (int32_t i = 0; i < V; i++)
        s->prob[i] = expf((logits[i] - mx) / p->temperature);
    /* Candidates sorted by probability (descending, ids ascending on ties).
     * min_p keeps tokens whose probability is at least min_p times the most
     * likely one's; prob[] is relative to that token (its entry is exactly
     * expf(0) = 1), so the test needs no normalisation and always keeps it. */
    int32_t n = 0;
    for (int32_t i = 0; i < V; i++)
        if (s->prob[i] >= p->min_p)
            s->idx[n++] = i;
    if (n == 0) /* only with a NaN row */
        return argmax(logits, V);
    if (p->top_k > 0 && p->top_k < n)
        n = select_top(s->idx, n, p->top_k, s->prob);
    sort_desc(s->idx, n, s->prob);
    double kept = 0.0;
    for (int32_t i = 0; i < n; i++)
        kept += s->prob[s->idx[i]];
    if (p->top_p < 1.0f) {
        double cum = 0.0;
        for (int32_t i = 0; i < n; i++) {
            cum += s->prob[s->idx[i]];
            if (cum >= p->top_p * kept) {
                n = i + 1;
                break;
            }
        }
        kept = cum;
    }
    double u = kvs_rng_uniform(rng) * kept, acc = 0.0;
    for (int32_t i = 0; i < n; i++) {
        acc += s->prob[s->idx[i]];
        if (u < acc)
            return s->idx[i];
    }
    return s->idx[n - 1];
}

/* The n_top largest logits, descending, lowest id first on ties, by one
 * pass that keeps top_ids sorted (insertion into at most n_top entries). */
static void top_logits(const float *logits, int32_t V, int32_t n_top, int32_t *top_ids)
{
    int32_t cnt = 0;
    for (int32_t i = 0; i < V; i++) {
        float x = logits[i];
        if (cnt == n_top && !(x > logits[top_ids[cnt - 1]]))
            continue;
        int32_t j = cnt < n_top ? cnt++ : cnt - 1;
        for (; j > 0 && x > logits[top_ids[j - 1]]; j--)
            top_ids[j] = top_ids[j - 1];
        top_ids[j] = i;
    }
}

/* The same selection by repeated scans: rank k takes the first untaken id
 * no other untaken id beats.  Kept for rows with a NaN, where "beats" is
 * not an order and the insertion above could pick differently. */
static void top_logits_scan(const float *logits, int32_t V, int32_t n_top, int32_t *top_ids)
{
    for (int32_t k = 0; k < n_top; k++) {
        int32_t best = -1;
        for (int32_t i = 0; i < V; i++) {
            bool taken = false;
            for (int32_t j = 0; j < k && !taken; j++)
                taken = top_ids[j] == i;
            if (!taken && (best < 0 || logits[i] > logits[best]))
                best = i;
        }
        top_ids[k] = best;
    }
}

float kvs_logprobs(kvs_sampler *s, const float *logits, int32_t token, int32_t n_top,
                   int32_t *top_ids, float *top_logprobs)
{
    const int32_t V = s->n_vocab;
    float mx = logits[argmax(logits, V)];
    double sum = 0.0;
    bool has_nan = false;
    for (int32_t i = 0; i < V; i++) {
        sum += exp((double)logits[i] - mx);
        has_nan |= isnan(logits[i]);
    }
    float lse = mx + (float)log(sum);
    if (n_top > V)
        n_top = V;
    if (n_top > 0)
        (has_nan ? top_logits_scan : top_logits)(logits, V, n_top, top_ids);
    for (int32_t k = 0; k < n_top; k++)
        top_logprobs[k] = logits[top_ids[k]] - lse;
    return logits[token] - lse;
}
