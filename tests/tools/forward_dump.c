/*
 * forward_dump.c - run kvs_runner_forward step by step from a JSON spec and
 * write the logits, for tests that compare kvserve's forward pass with a
 * reference written elsewhere (tests/py/test_reference_forward.py).
 *
 *     kvs_forward_dump SPEC.json OUT.bin
 *
 * SPEC:
 *   { "model": "m.gguf" or a Hugging Face directory, "mmap": false, "kv_dtype": "f32" | "f16" | "bf16", "block_size": 16,
 *     "threads": 2, "shuffle_seed": 1, "cpu_matmul": "f32" | "int8" (optional; absent: f32,
 *     the exact path the reference tests hold to tight tolerances, unlike the engine's default int8),
 *     "steps": [ { "seqs": [ { "id": 0, "tokens": [5, 6, 7], "start_pos": 0 }, ... ],
 *                  "rows": [0, 2] }, ... ] }
 * A step's tokens are its sequences' tokens in the order listed; a sequence
 * continues where it stopped (start_pos must equal the tokens it already
 * has).  "rows" (optional) picks token indices of the step whose logits
 * are wanted; by default every token's.
 *
 * The KV cache holds exactly the blocks the sequences need plus a few, and
 * blocks are handed out in a shuffled order (seeded) as sequences grow, so
 * every block table is non-contiguous and interleaved with the others.
 *
 * OUT.bin: the requested logits rows of every step, in order, as
 * little-endian float32 [rows][n_vocab].  stdout: one JSON line
 * {"n_vocab", "n_rows", "n_blocks", "max_tokens"}.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/cpu/cpu_backend.h"
#include "engine/kv_cache.h"
#include "model/runner.h"
#include "model/source.h"

#define MAX_SEQS 4096

typedef struct seq_state {
    int64_t id;
    int32_t len;       /* tokens computed so far */
    int32_t total;     /* tokens over all steps */
    int32_t n_blocks;
    int32_t *blocks;   /* [max_blocks] */
    int64_t last_step; /* the last step that listed it (scan) */
} seq_state;

static int die(const char *what, const char *msg)
{
    fprintf(stderr, "kvs_forward_dump: %s: %s\n", what, msg);
    return 1;
}

static int find_seq(seq_state *s, int n, int64_t id)
{
    for (int i = 0; i < n; i++)
        if (s[i].id == id)
            return i;
    return -1;
}

static uint64_t splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Check the spec's shape; fill the sequences' totals and the limits. */
static int scan(json_t *steps, seq_state *seqs, int *n_seqs, int32_t *max_tokens, int32_t *max_len)
{
    *n_seqs = 0;
    *max_tokens = 1;
    *max_len = 1;
    size_t i, j;
    json_t *step, *sq;
    json_array_foreach(steps, i, step) {
        json_t *list = json_object_get(step, "seqs");
        if (!json_is_array(list) || json_array_size(list) == 0)
            return die("spec", "every step needs a non-empty \"seqs\" array");
        int64_t n = 0;
        json_array_foreach(list, j, sq) {
            json_t *id = json_object_get(sq, "id"), *toks = json_object_get(sq, "tokens");
            if (!json_is_integer(id) || !json_is_array(toks) || json_array_size(toks) == 0 ||
                !json_is_integer(json_object_get(sq, "start_pos")))
                return die("spec", "a sequence needs an integer id, start_pos and non-empty tokens");
            size_t t;
            json_t *v;
            json_array_foreach(toks, t, v) if (!json_is_integer(v))
                return die("spec", "tokens must be integers");
            int k = find_seq(seqs, *n_seqs, json_integer_value(id));
            if (k < 0) {
                if (*n_seqs == MAX_SEQS)
                    return die("spec", "too many sequences");
                k = (*n_seqs)++;
                seqs[k] = (seq_state){.id = json_integer_value(id), .last_step = -1};
            }
            if (seqs[k].last_step == (int64_t)i)
                return die("spec", "a sequence appears twice in one step");
            seqs[k].last_step = (int64_t)i;
            if (json_integer_value(json_object_get(sq, "start_pos")) != seqs[k].total)
                return die("spec", "start_pos must continue where the sequence stopped");
            if (json_array_size(toks) > (1u << 20) - (size_t)seqs[k].total)
                return die("spec", "sequence too long");
            seqs[k].total += (int32_t)json_array_size(toks);
            n += (int64_t)json_array_size(toks);
            if (seqs[k].total > *max_len)
                *max_len = seqs[k].total;
        }
        if (n > (1 << 20))
            return die("spec", "step too large");
        if (n > *max_tokens)
            *max_tokens = (int32_t)n;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: kvs_forward_dump SPEC.json OUT.bin\n");
        return 2;
    }
    json_error_t jerr;
    json_t *spec = json_load_file(argv[1], 0, &jerr);
    if (!spec)
        return die(argv[1], jerr.text);
    int rc = 1;
    kvs_error err = {0};
    kvs_model_source *g = NULL;
    kvs_backend *b = NULL;
    kvs_model_model *m = NULL;
    kvs_runner *r = NULL;
    kvs_kv_cache *kv = NULL;
    FILE *out = NULL;
    seq_state *seqs = calloc(MAX_SEQS, sizeof *seqs);
    int32_t *perm = NULL, *tok = NULL, *pos = NULL, *seq = NULL, *tables = NULL, *rows = NULL;
    int n_seqs = 0;
    int64_t n_rows_total = 0;

    const char *model = json_string_value(json_object_get(spec, "model"));
    const char *kvname = json_string_value(json_object_get(spec, "kv_dtype"));
    json_t *steps = json_object_get(spec, "steps");
    json_int_t bs = json_integer_value(json_object_get(spec, "block_size"));
    json_int_t threads = json_object_get(spec, "threads") ? json_integer_value(json_object_get(spec, "threads")) : 2;
    uint64_t seed = (uint64_t)json_integer_value(json_object_get(spec, "shuffle_seed"));
    kvs_dtype kv_dtype = KVS_DTYPE_F32;
    if (!seqs || !model || !json_is_array(steps) || bs < 1 || bs > 4096 || threads < 1 || threads > 256 ||
        (kvname && !kvs_dtype_parse(kvname, &kv_dtype))) {
        rc = die(argv[1], "needs model, block_size (1..4096), steps; threads 1..256; a known kv_dtype");
        goto done;
    }
    int32_t max_tokens, max_len;
    if (scan(steps, seqs, &n_seqs, &max_tokens, &max_len))
        goto done;

    const char *mm = json_string_value(json_object_get(spec, "cpu_matmul"));
    kvs_cpu_options co = {.n_threads = (int)threads, .f32_matmul = !(mm && strcmp(mm, "int8") == 0),
                          .int8_all = mm && strcmp(mm, "int8") == 0};
    kvs_model_load_opts lo = {.use_mmap = json_is_true(json_object_get(spec, "mmap"))};
    if (kvs_source_open(&g, model, &err) || kvs_cpu_backend_new(&b, &co, &err) ||
        kvs_model_load_source(&m, g, b, &lo, &err)) {
        rc = die(model, err.msg);
        goto done;
    }
    /* max_seqs = max_tokens so that every token of a step may want logits */
    kvs_runner_limits lim = {max_tokens, max_tokens, max_len, (int32_t)bs};
    if (kvs_runner_new(&r, m, &lim, &err) || kvs_runner_profile(r, kv_dtype, &err)) {
        rc = die("runner", err.msg);
        goto done;
    }
    int32_t n_blocks = 3;
    for (int i = 0; i < n_seqs; i++)
        n_blocks += (seqs[i].total + (int32_t)bs - 1) / (int32_t)bs;
    if (kvs_kv_cache_new(&kv, b, &m->hp, n_blocks, (int32_t)bs, kv_dtype, &err)) {
        rc = die("kv cache", err.msg);
        goto done;
    }
    const int32_t mb = r->max_blocks, V = m->hp.n_vocab;
    perm = malloc((size_t)n_blocks * 4);
    tok = malloc((size_t)max_tokens * 4);
    pos = malloc((size_t)max_tokens * 4);
    seq = malloc((size_t)max_tokens * 4);
    rows = malloc((size_t)max_tokens * 4);
    tables = malloc((size_t)max_tokens * (size_t)mb * 4);
    out = fopen(argv[2], "wb");
    if (!perm || !tok || !pos || !seq || !rows || !tables || !out) {
        rc = die(argv[2], "out of memory or cannot open the output");
        goto done;
    }
    for (int i = 0; i < n_seqs; i++)
        if (!(seqs[i].blocks = malloc((size_t)mb * 4))) {
            rc = die("blocks", "out of memory");
            goto done;
        }
    /* Fisher-Yates over all block ids */
    for (int32_t i = 0; i < n_blocks; i++)
        perm[i] = i;
    for (int32_t i = n_blocks - 1; i > 0; i--) {
        int32_t k = (int32_t)(splitmix(&seed) % (uint64_t)(i + 1)), t = perm[i];
        perm[i] = perm[k];
        perm[k] = t;
    }
    int32_t next_block = 0;

    size_t si, j, t;
    json_t *step, *sq, *v;
    json_array_foreach(steps, si, step) {
        json_t *list = json_object_get(step, "seqs");
        int32_t n = 0, ns = 0;
        json_array_foreach(list, j, sq) {
            seq_state *s = &seqs[find_seq(seqs, n_seqs, json_integer_value(json_object_get(sq, "id")))];
            json_array_foreach(json_object_get(sq, "tokens"), t, v) {
                if (s->len % bs == 0) /* a new block */
                    s->blocks[s->n_blocks++] = perm[next_block++];
                tok[n] = (int32_t)json_integer_value(v);
                pos[n] = s->len++;
                seq[n] = ns;
                n++;
            }
            memcpy(tables + (size_t)ns * mb, s->blocks, (size_t)s->n_blocks * 4);
            for (int32_t k = s->n_blocks; k < mb; k++)
                tables[(size_t)ns * mb + k] = -1;
            ns++;
        }
        json_t *want = json_object_get(step, "rows");
        int32_t n_rows = 0;
        if (json_is_array(want)) {
            if (json_array_size(want) > (size_t)n) {
                rc = die("spec", "more rows than tokens in a step");
                goto done;
            }
            json_array_foreach(want, t, v) rows[n_rows++] = (int32_t)json_integer_value(v);
        } else {
            for (int32_t k = 0; k < n; k++)
                rows[n_rows++] = k;
        }
        kvs_batch bt = {n, ns, tok, pos, seq, tables, n_rows, rows};
        if (kvs_runner_forward(r, &bt, kv->views, &err)) {
            rc = die("forward", err.msg);
            goto done;
        }
        if (fwrite(r->logits, sizeof(float) * (size_t)V, (size_t)n_rows, out) != (size_t)n_rows) {
            rc = die(argv[2], "write failed");
            goto done;
        }
        n_rows_total += n_rows;
    }
    if (fclose(out) != 0) {
        out = NULL;
        rc = die(argv[2], "write failed");
        goto done;
    }
    out = NULL;
    printf("{\"n_vocab\": %d, \"n_rows\": %lld, \"n_blocks\": %d, \"max_tokens\": %d}\n", V,
           (long long)n_rows_total, n_blocks, max_tokens);
    rc = 0;
done:
    if (out)
        fclose(out);
    for (int i = 0; seqs && i < n_seqs; i++)
        free(seqs[i].blocks);
    free(seqs);
    free(perm);
    free(tok);
    free(pos);
    free(seq);
    free(rows);
    free(tables);
    kvs_kv_cache_free(kv);
    kvs_runner_free(r);
    kvs_model_free(m);
    kvs_backend_destroy(b);
    kvs_source_close(g);
    json_decref(spec);
    return rc;
}
