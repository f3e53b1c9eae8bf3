/*
 * bench_grammar.c - what structured output costs per generated token.
 *
 *   bench_grammar [VOCAB.gguf ...]      (default: the 32k SentencePiece and
 *                                        50k GPT-2 vocabularies in ../shared)
 *
 * For each vocabulary and each grammar (a typical extraction JSON schema,
 * any JSON object, a regex) it runs 16 sequences of up to 200 tokens: each
 * step asks the matcher for the mask, applies it to a row of logits (the
 * engine's hook: kvs_gmatcher_mask_logits) and advances by a token drawn
 * uniformly from the allowed ones (a stand-in for the model; uniform draws
 * make long strings, the state a JSON document spends most time in).  It
 * prints the mean and 99th-percentile microseconds per token, the cache
 * hit rate, and the same with the cache off (every step walks the trie),
 * which is the cost of a state's first visit.  Also the trie's build time
 * and size.  A vocabulary file may be any GGUF with a tokenizer (e.g.
 * `kvserve synth --vocab 128256 --header-only` for a made-up 128k one).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "grammar/matcher.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static const char *SCHEMA =
    "{\"type\":\"object\",\"properties\":{"
    "\"name\":{\"type\":\"string\"},"
    "\"age\":{\"type\":\"integer\",\"minimum\":0},"
    "\"email\":{\"type\":\"string\",\"maxLength\":40},"
    "\"role\":{\"enum\":[\"admin\",\"user\",\"guest\"]},"
    "\"tags\":{\"type\":\"array\",\"items\":{\"type\":\"string\",\"maxLength\":12},\"maxItems\":4},"
    "\"address\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"},"
    "\"zip\":{\"type\":\"string\",\"pattern\":\"^[0-9]{5}$\"}},\"required\":[\"city\"]}},"
    "\"required\":[\"name\",\"age\",\"role\"]}";

static uint64_t rs = 0x9E3779B97F4A7C15ull;
static uint32_t rnd32(void)
{
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return (uint32_t)rs;
}

typedef struct result {
    double mean_us, p50_us, p99_us, hit_rate;
    int tokens;
} result;

static int cmpd(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* 16 sequences of up to 200 tokens; the time per token is the mask (with
 * applying it to the logits) plus the advance, not the stand-in sampler. */
static result run(kvs_grammar *g, const kvs_gvocab *v, int32_t V, int cache_entries)
{
    kvs_gmatcher_limits lim = kvs_gmatcher_default_limits();
    lim.cache_entries = cache_entries;
    enum { SEQS = 16, MAXT = 200 };
    static double t[SEQS * MAXT];
    int n = 0;
    float *logits = malloc((size_t)V * sizeof *logits);
    uint64_t masks = 0, hits = 0;
    rs = 0x9E3779B97F4A7C15ull; /* the same token choices with and without the cache */
    for (int s = 0; s < SEQS; s++) {
        kvs_gmatcher *m;
        kvs_error err;
        if (kvs_gmatcher_new(&m, g, v, false, &lim, &err) != KVS_OK) {
            fprintf(stderr, "matcher: %s\n", err.msg);
            exit(1);
        }
        for (int k = 0; k < MAXT; k++) {
            memset(logits, 0, (size_t)V * sizeof *logits);
            double t0 = now_s();
            int32_t allowed = kvs_gmatcher_mask_logits(m, logits, V);
            double t1 = now_s();
            int32_t pick = -1;
            if (allowed > 0) {
                int32_t r = (int32_t)(rnd32() % (uint32_t)allowed);
                for (int32_t i = 0; i < V; i++)
                    if (logits[i] == 0.0f && r-- == 0) {
                        pick = i;
                        break;
                    }
            }
            double t2 = now_s();
            bool ok = pick >= 0 && kvs_gmatcher_accept_token(m, pick);
            double t3 = now_s();
            t[n++] = 1e6 * ((t1 - t0) + (t3 - t2));
            if (!ok || kvs_gmatcher_done(m))
                break;
        }
        kvs_gmatcher_stats st;
        kvs_gmatcher_get_stats(m, &st);
        masks += st.masks;
        hits += st.cache_hits;
        kvs_gmatcher_free(m);
    }
    free(logits);
    result r = {0};
    r.tokens = n;
    r.hit_rate = masks ? (double)hits / (double)masks : 0;
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += t[i];
    qsort(t, (size_t)n, sizeof *t, cmpd);
    r.mean_us = n ? sum / n : 0;
    r.p50_us = n ? t[n / 2] : 0;
    r.p99_us = n ? t[(int)(0.99 * (n - 1))] : 0;
    return r;
}

static kvs_grammar *compile(const char *what, const char *src)
{
    char *gbnf = NULL;
    kvs_error err;
    kvs_status st;
    if (strcmp(what, "json_schema") == 0)
        st = kvs_json_schema_to_gbnf(src, strlen(src), &gbnf, &err);
    else if (strcmp(what, "json_object") == 0)
        st = kvs_json_schema_to_gbnf(NULL, 0, &gbnf, &err);
    else
        st = kvs_regex_to_gbnf(src, &gbnf, &err);
    kvs_grammar *g = NULL;
    if (st == KVS_OK)
        st = kvs_grammar_parse(&g, gbnf, strlen(gbnf), &err);
    free(gbnf);
    if (st != KVS_OK) {
        fprintf(stderr, "%s: %s\n", what, err.msg);
        exit(1);
    }
    return g;
}

int main(int argc, char **argv)
{
    const char *defaults[] = {"../shared/vocab/ggml-vocab-llama-spm.gguf", "../shared/vocab/ggml-vocab-gpt-2.gguf"};
    const char **files = argc > 1 ? (const char **)argv + 1 : defaults;
    int n_files = argc > 1 ? argc - 1 : 2;
    const char *kinds[][2] = {{"json_schema", SCHEMA}, {"json_object", NULL},
                              {"regex", "(\\+1 )?\\(?[0-9]{3}\\)?[ -][0-9]{3}-[0-9]{4}|[a-z]+( [a-z]+)*\\."}};
    printf("%-28s %7s %-12s %7s %9s %9s %9s %6s %14s\n", "vocabulary", "n_vocab", "grammar", "tokens", "mean_us",
           "p50_us", "p99_us", "hits", "no-cache mean");
    for (int f = 0; f < n_files; f++) {
        kvs_gguf *gg;
        kvs_tokenizer *tok;
        kvs_error err;
        if (kvs_gguf_open(&gg, files[f], &err) != KVS_OK || kvs_tok_load(&tok, gg, &err) != KVS_OK) {
            fprintf(stderr, "%s: %s\n", files[f], err.msg);
            return 1;
        }
        kvs_gguf_close(gg);
        double t0 = now_s();
        kvs_gvocab *v;
        if (kvs_gvocab_new(&v, tok, &err) != KVS_OK) {
            fprintf(stderr, "%s: %s\n", files[f], err.msg);
            return 1;
        }
        double build_ms = 1e3 * (now_s() - t0);
        int32_t V = kvs_tok_n_vocab(tok);
        const char *base = strrchr(files[f], '/') ? strrchr(files[f], '/') + 1 : files[f];
        for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
            kvs_grammar *g = compile(kinds[k][0], kinds[k][1]);
            result c = run(g, v, V, kvs_gmatcher_default_limits().cache_entries);
            result nc = run(g, v, V, 0);
            printf("%-28.28s %7d %-12s %7d %9.1f %9.1f %9.1f %5.0f%% %14.1f\n", base, V, kinds[k][0], c.tokens,
                   c.mean_us, c.p50_us, c.p99_us, 100 * c.hit_rate, nc.mean_us);
            fflush(stdout);
            kvs_grammar_unref(g);
        }
        printf("  trie: %.1f ms to build, %.1f MiB; matcher reserve per request: %.2f MiB\n", build_ms,
               (double)kvs_gvocab_bytes(v) / (1 << 20), (double)kvs_gmatcher_bytes(V, kvs_tok_max_token_bytes(tok), NULL) / (1 << 20));
        kvs_gvocab_free(v);
        kvs_tok_free(tok);
    }
    return 0;
}
