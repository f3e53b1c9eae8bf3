/*
 * bench_model.c - CPU decode and prefill throughput of a GGUF model, and
 * how close decode comes to the memory-bandwidth roofline.
 *
 *   bench_model -m MODEL.gguf [-t THREADS] [--ctx N] [--batches 1,8,32] ...
 *
 * What it measures, in order:
 *   1. memory read bandwidth: THREADS threads stream a buffer far larger
 *      than the last-level cache (default 1 GiB); best of 10 runs, taken
 *      at the start, right after the first decode measurement and at the
 *      end; the best of the three counts (the machine may be shared).
 *   2. the model is started as `kvserve` starts it (kvs_launch: load,
 *      profile the largest step, KV cache), with max_num_batched_tokens =
 *      the prefill length.
 *   3. decode at each batch size B: B sequences whose contexts already hold
 *      --ctx tokens (the KV cache is filled with zeros rather than computed:
 *      the time of a step does not depend on the cached values) step one
 *      token each through the runner, logits for every sequence as the
 *      engine asks them.  Median and best step time over the measured
 *      steps; the aggregate rate is B / step time.
 *   4. the same at batch 1 through the engine proper (kvs_engine_add /
 *      kvs_engine_step, greedy, ignore_eos), which adds scheduling and
 *      sampling to the runner's forward.
 *   5. prefill: one sequence's --prefill-token prompt as one step (the
 *      chunk the scheduler makes with max_num_batched_tokens = that length),
 *      median and best over repetitions.
 *
 * Roofline: decode at batch 1 must read every weight it multiplies with
 * once per token, so it cannot beat (weight bytes per token) / bandwidth.
 * The fraction printed is that bound over the best measured time per
 * token (best against best: the bandwidth is a best of runs too); the
 * JSON also has it over the median.
 * Weight bytes count every matrix and norm of every layer plus the output
 * matrix (the whole token embedding when tied) and one embedding row; the
 * KV cache read per token is printed beside it but not counted.
 *
 * Output: a table, then one line of JSON starting with {"bench":"model".
 * Runs by hand only (never by the tests); keep the shared machine in mind.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/backend.h"
#include "bench_util.h"
#include "engine/engine.h"
#include "engine/kv_cache.h"
#include "engine/launch.h"
#include "model/model.h"
#include "model/runner.h"

#define MAX_BATCHES 8
#define MAX_STEPS 4096

typedef struct bench_opts {
    const char *model;
    int threads;
    int ctx;                 /* context already cached when decode starts */
    int batches[MAX_BATCHES];
    int n_batches;
    int prefill;             /* prompt tokens in the prefill step */
    int prefill_reps;
    int prefill_warmup;      /* unmeasured prefill steps first (0 or more) */
    int engine_prompt;       /* prompt tokens for the engine's batch-1 run */
    int max_steps;           /* measured decode steps per batch size */
    double seconds;          /* time cap per measurement */
    int bw_mib;
    const char *kv_dtype;
    const char *cpu_matmul;   /* NULL: the engine default (auto) */
} bench_opts;

/* ---------------- model facts ---------------- */

static uint64_t wbytes(const kvs_weight *w)
{
    uint64_t rb = 0;
    if (!w->data || w->ne0 <= 0 || !kvs_dtype_row_bytes(w->type, (uint64_t)w->ne0, &rb))
        return 0;
    return rb * (uint64_t)(w->ne1 > 0 ? w->ne1 : 1);
}

/* Weight bytes one decode token reads. */
static uint64_t weight_bytes_per_token(const kvs_model_model *m)
{
    uint64_t s = 0;
    for (int32_t l = 0; l < m->hp.n_layers; l++) {
        const kvs_model_layer *L = &m->layers[l];
        const kvs_weight *ws[] = {&L->attn_norm, &L->wq, &L->wk, &L->wv, &L->wo,
                                  &L->bq, &L->bk, &L->bv, &L->q_norm, &L->k_norm,
                                  &L->ffn_norm, &L->w_gate, &L->w_up, &L->w_down};
        for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++)
            s += wbytes(ws[i]);
    }
    s += wbytes(&m->output_norm) + wbytes(&m->output);
    uint64_t row = 0;
    kvs_dtype_row_bytes(m->tok_embd.type, (uint64_t)m->tok_embd.ne0, &row);
    return s + row;
}

/* ---------------- runner steps ---------------- */

typedef struct step_buf {
    int32_t *tokens, *pos, *seq, *tables, *rows;
    int32_t max_blocks;
} step_buf;

/* Time decode at batch B from context ctx (seconds per step); false on error. */
static bool bench_decode(kvs_runner *r, const kvs_kv_cache *kv, step_buf *sb, int B, int ctx,
                         const bench_opts *o, timing *out, uint64_t *rng)
{
    kvs_error err;
    const int32_t nb = sb->max_blocks;
    for (int s = 0; s < B; s++)
        for (int32_t i = 0; i < nb; i++)
            sb->tables[s * nb + i] = s * nb + i < kv->n_blocks ? s * nb + i : -1;
    for (int s = 0; s < B; s++) {
        sb->seq[s] = s;
        sb->rows[s] = s;
    }
    kvs_batch bt = {B, B, sb->tokens, sb->pos, sb->seq, sb->tables, B, sb->rows};
    double times[MAX_STEPS];
    int n = 0;
    double t_start = now_s();
    for (int it = 0; it < o->max_steps + 2 && ctx + it < r->lim.max_model_len; it++) {
        for (int s = 0; s < B; s++) {
            sb->tokens[s] = (int32_t)(rng_next(rng) % (uint64_t)r->model->hp.n_vocab);
            sb->pos[s] = ctx + it;
        }
        double t0 = now_s();
        if (kvs_runner_forward(r, &bt, kv->views, &err) != KVS_OK) {
            fprintf(stderr, "bench_model: decode: %s\n", err.msg);
            return false;
        }
        double dt = now_s() - t0;
        if (it >= 2)                       /* two warm-up steps */
            times[n++] = dt;
        if (n >= 3 && now_s() - t_start > o->seconds)
            break;
    }
    *out = summarize(times, n);
    return n > 0;
}

/* CPU seconds of the process (all threads), user and system: prefill per
 * CPU-second moves less than wall time when neighbours take a core. */
static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Time a prefill step of `len` tokens (one sequence), wall and CPU; false on error. */
static bool bench_prefill(kvs_runner *r, const kvs_kv_cache *kv, step_buf *sb, int len,
                          const bench_opts *o, timing *out, timing *cpu_out, uint64_t *rng)
{
    kvs_error err;
    for (int32_t i = 0; i < sb->max_blocks; i++)
        sb->tables[i] = i < kv->n_blocks ? i : -1;
    for (int t = 0; t < len; t++) {
        sb->tokens[t] = (int32_t)(rng_next(rng) % (uint64_t)r->model->hp.n_vocab);
        sb->pos[t] = t;
        sb->seq[t] = 0;
    }
    sb->rows[0] = len - 1;
    kvs_batch bt = {len, 1, sb->tokens, sb->pos, sb->seq, sb->tables, 1, sb->rows};
    double times[64], cpu[64];
    int n = 0;
    double t_start = now_s();
    for (int it = 0; it < o->prefill_reps + o->prefill_warmup && n < 64; it++) {
        double t0 = now_s(), c0 = cpu_s();
        if (kvs_runner_forward(r, &bt, kv->views, &err) != KVS_OK) {
            fprintf(stderr, "bench_model: prefill: %s\n", err.msg);
            return false;
        }
        double dt = now_s() - t0;
        if (it >= o->prefill_warmup) {
            cpu[n] = cpu_s() - c0;
            times[n++] = dt;
        }
        if (n >= 1 && now_s() - t_start > o->seconds)
            break;
    }
    *out = summarize(times, n);
    *cpu_out = summarize(cpu, n);
    return n > 0;
}

/* Batch-1 decode through the engine: the steps after the first sampled
 * token and two warm-up steps; false on error. */
static bool bench_engine(kvs_instance *in, const bench_opts *o, timing *out, uint64_t *rng)
{
    kvs_error err;
    int np = o->engine_prompt;
    int32_t *prompt = malloc((size_t)np * sizeof *prompt);
    double times[MAX_STEPS];
    bool res = false;
    int n = 0, outs_seen = 0;
    if (!prompt)
        return false;
    for (int i = 0; i < np; i++)
        prompt[i] = (int32_t)(rng_next(rng) % (uint64_t)in->model->hp.n_vocab);
    kvs_request_params p = kvs_request_defaults();
    p.sampling.temperature = 0;
    p.ignore_eos = true;
    p.max_tokens = o->max_steps + 3;
    if (kvs_engine_add(in->engine, 1, prompt, (size_t)np, &p, &err) != KVS_OK) {
        fprintf(stderr, "bench_model: engine: %s\n", err.msg);
        goto done;
    }
    double t_start = 0;
    while (kvs_engine_has_work(in->engine)) {
        const kvs_output *outs;
        size_t no;
        double t0 = now_s();
        if (kvs_engine_step(in->engine, &outs, &no, &err) != KVS_OK) {
            fprintf(stderr, "bench_model: engine: %s\n", err.msg);
            goto done;
        }
        double dt = now_s() - t0;
        if (outs_seen >= 3 && n < MAX_STEPS)   /* prefill step and two warm-up steps done */
            times[n++] = dt;
        if (outs_seen == 3)
            t_start = t0;
        for (size_t i = 0; i < no; i++)
            outs_seen += outs[i].token >= 0;
        if (n >= 3 && now_s() - t_start > o->seconds) {
            kvs_engine_abort(in->engine, 1);
            t_start = 1e300;               /* no more measuring */
        }
    }
    *out = summarize(times, n);
    res = n > 0;
done:
    free(prompt);
    return res;
}

/* ---------------- main ---------------- */

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_model -m MODEL.gguf [options]\n"
            "  -t, --threads N        kernel threads (default 2)\n"
            "  --ctx N                cached context when decode starts (default 256)\n"
            "  --batches L            decode batch sizes, comma-separated (default 1,8,32)\n"
            "  --prefill N            prompt tokens in the prefill step (default 512)\n"
            "  --prefill-reps N       measured prefill steps (default 3)\n"
            "  --prefill-warmup N     unmeasured prefill steps before them (default 1)\n"
            "  --engine-prompt N      prompt of the engine batch-1 run (default 32; 0 = skip)\n"
            "  --steps N              measured decode steps per batch size (default 32)\n"
            "  --seconds S            time cap per measurement (default 10)\n"
            "  --bw-mib N             bandwidth buffer in MiB (default 1024)\n"
            "  --kv-dtype T           auto|f32|f16|bf16 (default auto)\n"
            "  --cpu-matmul M         auto|int8|f32 (default auto: quantized matmuls with 8-bit activations)\n");
}

static bool parse_int(const char *s, int lo, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < lo || v > 1 << 20)
        return false;
    *out = (int)v;
    return true;
}

static bool parse_args(int argc, char **argv, bench_opts *o)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool ok = v != NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help"))
            return false;
        if (!v) {
            fprintf(stderr, "bench_model: %s needs a value\n", a);
            return false;
        }
        i++;
        if (!strcmp(a, "-m") || !strcmp(a, "--model"))
            o->model = v;
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads"))
            ok = parse_int(v, 1, &o->threads);
        else if (!strcmp(a, "--ctx"))
            ok = parse_int(v, 0, &o->ctx);
        else if (!strcmp(a, "--prefill"))
            ok = parse_int(v, 1, &o->prefill);
        else if (!strcmp(a, "--prefill-reps"))
            ok = parse_int(v, 1, &o->prefill_reps);
        else if (!strcmp(a, "--prefill-warmup"))
            ok = parse_int(v, 0, &o->prefill_warmup);
        else if (!strcmp(a, "--engine-prompt"))
            ok = parse_int(v, 0, &o->engine_prompt);
        else if (!strcmp(a, "--steps"))
            ok = parse_int(v, 1, &o->max_steps) && o->max_steps <= MAX_STEPS;
        else if (!strcmp(a, "--bw-mib"))
            ok = parse_int(v, 1, &o->bw_mib);
        else if (!strcmp(a, "--kv-dtype"))
            o->kv_dtype = v;
        else if (!strcmp(a, "--cpu-matmul"))
            o->cpu_matmul = v;
        else if (!strcmp(a, "--seconds")) {
            char *end;
            o->seconds = strtod(v, &end);
            ok = *end == 0 && o->seconds > 0;
        } else if (!strcmp(a, "--batches")) {
            o->n_batches = 0;
            char tmp[128];
            snprintf(tmp, sizeof tmp, "%s", v);
            for (char *s = strtok(tmp, ","); s && ok; s = strtok(NULL, ",")) {
                ok = o->n_batches < MAX_BATCHES && parse_int(s, 1, &o->batches[o->n_batches]);
                o->n_batches++;
            }
        } else {
            fprintf(stderr, "bench_model: unknown option %s\n", a);
            return false;
        }
        if (!ok) {
            fprintf(stderr, "bench_model: bad value for %s: '%s'\n", a, v);
            return false;
        }
    }
    if (!o->model)
        fprintf(stderr, "bench_model: -m MODEL is required\n");
    return o->model != NULL;
}

int main(int argc, char **argv)
{
    bench_opts o = {.threads = 2, .ctx = 256, .batches = {1, 8, 32}, .n_batches = 3,
                    .prefill = 512, .prefill_reps = 3, .prefill_warmup = 1, .engine_prompt = 32, .max_steps = 32,
                    .seconds = 10, .bw_mib = 1024, .kv_dtype = "auto"};
    if (!parse_args(argc, argv, &o)) {
        usage();
        return 2;
    }
    int max_b = 1;
    for (int i = 0; i < o.n_batches; i++)
        max_b = o.batches[i] > max_b ? o.batches[i] : max_b;

    fprintf(stderr, "bench_model: measuring read bandwidth (%d threads, %d MiB)...\n", o.threads,
            o.bw_mib);
    double bw_at[3] = {measure_bandwidth(o.threads, o.bw_mib), 0, 0};

    /* Read the shape first to size the context and the engine's KV cache. */
    kvs_error err;
    kvs_gguf *g = NULL;
    kvs_model_hparams hp;
    if (kvs_gguf_open(&g, o.model, &err) != KVS_OK ||
        kvs_model_hparams_from_gguf(g, &hp, &err) != KVS_OK) {
        fprintf(stderr, "bench_model: %s\n", err.msg);
        kvs_gguf_close(g);
        return 1;
    }
    kvs_gguf_close(g);

    const int bsz = 16;
    int32_t need = o.ctx + o.max_steps + 3;
    if (o.prefill > need)
        need = o.prefill;
    if (o.engine_prompt + o.max_steps + 4 > need)
        need = o.engine_prompt + o.max_steps + 4;
    int32_t max_len = (need + bsz - 1) / bsz * bsz;
    kvs_dtype kvt;
    kvs_runner_limits lim0;
    kvs_launch_opts lo = kvs_launch_defaults();
    lo.model_path = o.model;
    lo.n_threads = o.threads;
    lo.max_model_len = max_len;
    lo.max_num_seqs = max_b;
    lo.max_num_batched_tokens = o.prefill > max_b ? o.prefill : max_b;
    lo.block_size = bsz;
    lo.kv_cache_dtype = o.kv_dtype;
    lo.cpu_matmul = o.cpu_matmul;
    lo.no_prefix_caching = true;
    if (kvs_launch_limits(&lo, &hp, &lim0, &kvt, &err) != KVS_OK) {
        fprintf(stderr, "bench_model: %s\n", err.msg);
        return 1;
    }
    uint64_t block_bytes = kvs_kv_block_bytes(&hp, bsz, kvt);
    lo.kv_cache_memory = block_bytes * (uint64_t)(max_len / bsz + 2);

    fprintf(stderr, "bench_model: loading %s...\n", o.model);
    kvs_instance *in = NULL;
    kvs_kv_cache *kv = NULL;
    step_buf sb = {0};
    int rc = 1;
    if (kvs_launch(&in, &lo, &err) != KVS_OK) {
        fprintf(stderr, "bench_model: %s\n", err.msg);
        return 1;
    }
    kvs_runner *r = in->runner;
    kvs_backend *b = in->backend;
    sb.max_blocks = r->max_blocks;
    int32_t n_blocks = max_b * r->max_blocks;
    if (kvs_kv_cache_new(&kv, b, &hp, n_blocks, bsz, kvt, &err) != KVS_OK) {
        fprintf(stderr, "bench_model: KV cache: %s\n", err.msg);
        goto done;
    }
    if (b->ops->touch)   /* commit every page so attention reads real memory */
        b->ops->touch(b, kv->buf.ptr, kv->buf.bytes);
    size_t nt = (size_t)r->lim.max_tokens;
    sb.tokens = calloc(nt, 4);
    sb.pos = calloc(nt, 4);
    sb.seq = calloc(nt, 4);
    sb.rows = calloc(nt, 4);
    sb.tables = calloc((size_t)max_b * (size_t)r->max_blocks, 4);
    if (!sb.tokens || !sb.pos || !sb.seq || !sb.rows || !sb.tables) {
        fprintf(stderr, "bench_model: out of memory\n");
        goto done;
    }

    const uint64_t wb = weight_bytes_per_token(in->model);
    const uint64_t kv_tok = block_bytes / (uint64_t)bsz;
    const char *wtype = kvs_dtype_name(hp.weight_type);
    uint64_t rng = 0x9e3779b97f4a7c15ull;

    timing dec[MAX_BATCHES], eng = {0, -1, -1}, pre, pre_cpu;
    for (int i = 0; i < o.n_batches; i++) {
        fprintf(stderr, "bench_model: decode batch %d...\n", o.batches[i]);
        if (!bench_decode(r, kv, &sb, o.batches[i], o.ctx, &o, &dec[i], &rng))
            goto done;
        if (i == 0)   /* again right beside the batch-1 decode the roofline is about */
            bw_at[1] = measure_bandwidth(o.threads, o.bw_mib);
    }
    if (o.engine_prompt > 0) {
        fprintf(stderr, "bench_model: engine decode batch 1...\n");
        if (!bench_engine(in, &o, &eng, &rng))
            goto done;
    }
    fprintf(stderr, "bench_model: prefill %d tokens...\n", o.prefill);
    if (!bench_prefill(r, kv, &sb, o.prefill, &o, &pre, &pre_cpu, &rng))
        goto done;
    /* Bandwidth a third time at the end; the best of the three counts (the
     * machine is shared, and others' traffic only ever lowers it). */
    bw_at[2] = measure_bandwidth(o.threads, o.bw_mib);
    double bw = 0;
    for (int i = 0; i < 3; i++)
        bw = bw_at[i] > bw ? bw_at[i] : bw;

    /* Batch-1 roofline, when batch 1 was measured: best against best. */
    const double t_roof = bw > 0 ? (double)wb / bw : 0;
    timing t1 = {0, -1, -1};
    for (int i = 0; i < o.n_batches; i++)
        if (o.batches[i] == 1)
            t1 = dec[i];
    const double frac = t1.best > 0 ? t_roof / t1.best : 0;
    const double frac_med = t1.med > 0 ? t_roof / t1.med : 0;

    printf("model        %s (%s, %d layers, dim %d, vocab %d)\n", o.model, wtype, hp.n_layers,
           hp.dim, hp.n_vocab);
    printf("threads      %d, KV cache %s\n", o.threads, kvs_dtype_name(kvt));
    printf("bandwidth    %.2f GB/s (read, %d MiB buffer; best of 10 runs at start, after "
           "decode, at end: %.1f %.1f %.1f)\n", bw / 1e9, o.bw_mib, bw_at[0] / 1e9, bw_at[1] / 1e9,
           bw_at[2] / 1e9);
    printf("weights/tok  %.1f MB  -> roofline %.2f ms/token = %.1f tok/s\n", (double)wb / 1e6,
           t_roof * 1e3, t_roof > 0 ? 1.0 / t_roof : 0);
    printf("KV/tok       %.1f KB per cached token, read by every later decode step\n",
           (double)kv_tok / 1e3);
    printf("\n%-24s %6s %10s %10s %10s %10s %9s\n", "", "steps", "ms median", "ms best",
           "tok/s med", "tok/s best", "roofline");
    for (int i = 0; i < o.n_batches; i++) {
        char name[64];
        const timing *t = &dec[i];
        const int B = o.batches[i];
        snprintf(name, sizeof name, "decode b=%d ctx=%d", B, o.ctx);
        printf("%-24s %6d %10.2f %10.2f %10.1f %10.1f", name, t->n, t->med * 1e3, t->best * 1e3,
               B / t->med, B / t->best);
        if (B == 1)
            printf(" %8.0f%%", 100 * frac);
        printf("\n");
    }
    if (eng.n > 0)
        printf("%-24s %6d %10.2f %10.2f %10.1f %10.1f %8.0f%%\n", "decode b=1 (engine)", eng.n,
               eng.med * 1e3, eng.best * 1e3, 1.0 / eng.med, 1.0 / eng.best,
               100 * t_roof / eng.best);
    char pname[64];
    snprintf(pname, sizeof pname, "prefill %d tokens", o.prefill);
    printf("%-24s %6d %10.2f %10.2f %10.1f %10.1f\n", pname, pre.n, pre.med * 1e3,
           pre.best * 1e3, o.prefill / pre.med, o.prefill / pre.best);
    printf("(roofline: weight bytes per token / bandwidth, over the best step time)\n");

    printf("{\"bench\":\"model\",\"model\":\"%s\",\"weight_type\":\"%s\",\"threads\":%d,"
           "\"kv_dtype\":\"%s\",\"bandwidth_gbs\":%.3f,\"bandwidth_runs_gbs\":[%.3f,%.3f,%.3f],\"weight_bytes_per_token\":%" PRIu64 ","
           "\"kv_bytes_per_cached_token\":%" PRIu64 ",\"ctx\":%d,\"decode\":[",
           o.model, wtype, o.threads, kvs_dtype_name(kvt), bw / 1e9, bw_at[0] / 1e9, bw_at[1] / 1e9,
           bw_at[2] / 1e9, wb, kv_tok, o.ctx);
    for (int i = 0; i < o.n_batches; i++)
        printf("%s{\"batch\":%d,\"steps\":%d,\"ms_median\":%.4f,\"ms_best\":%.4f,"
               "\"tokens_per_s\":%.3f,\"tokens_per_s_best\":%.3f}",
               i ? "," : "", o.batches[i], dec[i].n, dec[i].med * 1e3, dec[i].best * 1e3,
               o.batches[i] / dec[i].med, o.batches[i] / dec[i].best);
    printf("],\"engine_decode_b1_tokens_per_s\":%.3f,\"prefill_tokens\":%d,"
           "\"prefill_tokens_per_s\":%.3f,\"prefill_tokens_per_s_best\":%.3f,"
           "\"prefill_tokens_per_cpu_s\":%.3f,"
           "\"roofline_fraction_b1\":%.4f,\"roofline_fraction_b1_median\":%.4f}\n",
           eng.n > 0 ? 1.0 / eng.med : 0.0, o.prefill, o.prefill / pre.med, o.prefill / pre.best,
           o.prefill / pre_cpu.med, frac, frac_med);
    rc = 0;
done:
    free(sb.tokens);
    free(sb.pos);
    free(sb.seq);
    free(sb.rows);
    free(sb.tables);
    kvs_kv_cache_free(kv);
    kvs_instance_free(in);
    return rc;
}
