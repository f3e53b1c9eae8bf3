/* The forward step of every family in the architecture table, written once
 * against the backend ops; the family's deviations come from the
 * hyperparameters (model.h), not from tests of its name. */
#include "model/runner.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "memory/host.h"

#define ALLOC(ptr, bytes)                                                                 \
    do {                                                                                  \
        void *p_;                                                                         \
        if ((st = kvs_arena_alloc(&r->arena, (bytes), &p_, err)) != KVS_OK)               \
            goto done;                                                                    \
        (ptr) = p_;                                                                       \
    } while (0)

static uint64_t rnd(uint64_t b) { return kvs_arena_round(b ? b : 1); }

/* The step's activation peak for n tokens, s sequences, l logit rows and a
 * longest context of max_ctx; mirrors kvs_runner_forward's allocations. */
static uint64_t step_bytes(const kvs_model_hparams *hp, kvs_backend *b, int64_t n, int64_t s,
                           int64_t l, int64_t max_blocks, int32_t max_ctx)
{
    int64_t q_dim = (int64_t)hp->n_heads * hp->head_dim, kv_dim = (int64_t)hp->n_kv_heads * hp->head_dim;
    uint64_t meta = 4 * rnd(n * 4) + rnd(s * max_blocks * 4) + rnd(l * 4);
    uint64_t x = rnd(n * hp->dim * 4);
    uint64_t attn = rnd(n * hp->dim * 4) + rnd(n * q_dim * 4) + 2 * rnd(n * kv_dim * 4) +
                    rnd(n * q_dim * 4) +
                    rnd(b->ops->attention_scratch_bytes(b, hp->n_heads, max_ctx, n));
    uint64_t mlp = rnd(n * hp->dim * 4) + 2 * rnd(n * hp->hidden_dim * 4);
    uint64_t head = rnd(l * hp->dim * 4) + rnd(l * hp->n_vocab * 4);
    uint64_t peak = attn > mlp ? attn : mlp;
    return meta + x + (peak > head ? peak : head);
}

static int32_t max_logits(const kvs_runner_limits *lim)
{
    return lim->max_seqs < lim->max_tokens ? lim->max_seqs : lim->max_tokens;
}

static int32_t max_blocks(const kvs_runner_limits *lim)
{
    return (lim->max_model_len + lim->block_size - 1) / lim->block_size;
}

uint64_t kvs_runner_host_bytes(const kvs_model_hparams *hp, const kvs_runner_limits *lim)
{
    return (uint64_t)lim->max_tokens * 4 + (uint64_t)max_logits(lim) * (uint64_t)hp->n_vocab * 4;
}

uint64_t kvs_runner_activation_bytes(const kvs_model_hparams *hp, const kvs_runner_limits *lim,
                                     kvs_backend *b)
{
    int32_t l = max_logits(lim);
    return step_bytes(hp, b, lim->max_tokens, l, l, max_blocks(lim), lim->max_model_len);
}

kvs_status kvs_runner_new(kvs_runner **out, kvs_model_model *m, const kvs_runner_limits *lim,
                          kvs_error *err)
{
    *out = NULL;
    if (lim->max_tokens < 1 || lim->max_seqs < 1 || lim->max_model_len < 1 || lim->block_size < 1)
        return kvs_fail(err, KVS_E_INVALID, "runner limits must be positive");
    kvs_runner *r = calloc(1, sizeof *r);
    if (!r)
        return kvs_fail(err, KVS_E_NOMEM, "out of memory");
    r->model = m;
    r->backend = m->backend;
    r->lim = *lim;
    r->max_blocks = max_blocks(lim);
    r->max_logits = max_logits(lim);
    kvs_arena_init_profile(&r->arena, r->backend);
    /* Host buffers are made resident now, before the start-up measures the
     * runtime overhead (kvs_runner_host_bytes). */
    r->slots = calloc((size_t)lim->max_tokens, sizeof *r->slots);
    r->logits = calloc((size_t)r->max_logits * (size_t)m->hp.n_vocab, sizeof *r->logits);
    if (!r->slots || !r->logits) {
        kvs_runner_free(r);
        return kvs_fail(err, KVS_E_NOMEM, "out of memory for the runner's host buffers");
    }
    kvs_host_touch(r->slots, (size_t)lim->max_tokens * sizeof *r->slots);
    kvs_host_touch(r->logits, (size_t)r->max_logits * (size_t)m->hp.n_vocab * sizeof *r->logits);
    *out = r;
    return KVS_OK;
}

void kvs_runner_free(kvs_runner *r)
{
    if (!r)
        return;
    kvs_arena_free(&r->arena);
    free(r->slots);
    free(r->logits);
    free(r);
}

static kvs_status check_batch(const kvs_runner *r, const kvs_batch *bt, kvs_error *err)
{
    if (bt->n_tokens < 1 || bt->n_tokens > r->lim.max_tokens)
        return kvs_fail(err, KVS_E_INVALID, "step of %d tokens (limit %d)", bt->n_tokens, r->lim.max_tokens);
    if (bt->n_seqs < 1 || bt->n_seqs > r->lim.max_seqs)
        return kvs_fail(err, KVS_E_INVALID, "step of %d sequences (limit %d)", bt->n_seqs, r->lim.max_seqs);
    if (bt->n_logits < 0 || bt->n_logits > r->max_logits)
        return kvs_fail(err, KVS_E_INVALID, "step asks %d logit rows (limit %d)", bt->n_logits, r->max_logits);
    for (int32_t i = 0; i < bt->n_logits; i++)
        if (bt->logit_rows[i] < 0 || bt->logit_rows[i] >= bt->n_tokens)
            return kvs_fail(err, KVS_E_INVALID, "logit row %d out of range", bt->logit_rows[i]);
    for (int32_t t = 0; t < bt->n_tokens; t++) {
        if (bt->seq[t] < 0 || bt->seq[t] >= bt->n_seqs || bt->pos[t] < 0 ||
            bt->pos[t] >= r->lim.max_model_len)
            return kvs_fail(err, KVS_E_INVALID, "token %d: sequence %d / position %d out of range", t,
                            bt->seq[t], bt->pos[t]);
        if (bt->tokens[t] < 0 || bt->tokens[t] >= r->model->hp.n_vocab)
            return kvs_fail(err, KVS_E_INVALID, "token id %d out of the vocabulary (%d)", bt->tokens[t],
                            r->model->hp.n_vocab);
        int32_t blk = bt->block_tables[(int64_t)bt->seq[t] * r->max_blocks + bt->pos[t] / r->lim.block_size];
        if (blk < 0)
            return kvs_fail(err, KVS_E_INVALID, "token %d: no KV block for position %d", t, bt->pos[t]);
    }
    return KVS_OK;
}

/* Which kernels a step runs: the layers [0, layers) and, with head, the
 * embedding lookup and the logits.  Everything else (the batch checks,
 * the metadata copies, every arena allocation and scratch size) is done
 * whatever it says, so a step that runs no kernel takes exactly the
 * allocations of one that runs them all. */
typedef struct step_kernels {
    int32_t layers;
    bool head;
} step_kernels;

static kvs_status forward(kvs_runner *r, const kvs_batch *bt, const kvs_kv_view *kv, step_kernels run,
                          kvs_error *err)
{
    kvs_status st = check_batch(r, bt, err);
    if (st != KVS_OK)
        return st;
    const kvs_model_model *m = r->model;
    const kvs_model_hparams *hp = &m->hp;
    kvs_backend *b = r->backend;
    const kvs_backend_ops *ops = b->ops;
    const int64_t n = bt->n_tokens, dim = hp->dim, hd = hp->head_dim;
    const int64_t q_dim = (int64_t)hp->n_heads * hd, kv_dim = (int64_t)hp->n_kv_heads * hd;
    const int32_t bs = r->lim.block_size;
    kvs_arena_mark m0 = kvs_arena_mark_now(&r->arena);

    /* Where each token's k/v go, and how far back each sequence looks. */
    int32_t max_ctx = 0;
    for (int64_t t = 0; t < n; t++) {
        const int32_t *row = bt->block_tables + (int64_t)bt->seq[t] * r->max_blocks;
        r->slots[t] = row[bt->pos[t] / bs] * bs + bt->pos[t] % bs;
        if (bt->pos[t] + 1 > max_ctx)
            max_ctx = bt->pos[t] + 1;
    }

    /* Step metadata on the device. */
    int32_t *d_tokens, *d_pos, *d_seq, *d_slots, *d_tables, *d_rows;
    ALLOC(d_tokens, n * 4);
    ALLOC(d_pos, n * 4);
    ALLOC(d_seq, n * 4);
    ALLOC(d_slots, n * 4);
    ALLOC(d_tables, (int64_t)bt->n_seqs * r->max_blocks * 4);
    ALLOC(d_rows, (int64_t)bt->n_logits * 4);
    ops->to_device(b, d_tokens, bt->tokens, n * 4);
    ops->to_device(b, d_pos, bt->pos, n * 4);
    ops->to_device(b, d_seq, bt->seq, n * 4);
    ops->to_device(b, d_slots, r->slots, n * 4);
    ops->to_device(b, d_tables, bt->block_tables, (size_t)bt->n_seqs * r->max_blocks * 4);
    ops->to_device(b, d_rows, bt->logit_rows, (size_t)bt->n_logits * 4);
    kvs_attn_meta meta = {
        .n_tokens = (int32_t)n, .tok_seq = d_seq, .tok_pos = d_pos, .slots = d_slots,
        .block_tables = d_tables, .max_blocks = r->max_blocks, .max_ctx = max_ctx,
    };
    const float scale = hp->attn_scale > 0.0f ? hp->attn_scale : 1.0f / sqrtf((float)hd);
    meta.softcap = hp->attn_softcap;

    float *x;                                   /* [n][dim] the residual stream */
    ALLOC(x, n * dim * 4);
    const bool embed = run.head || run.layers > 0;
    if (embed) {
        ops->get_rows(b, x, m->tok_embd.data, m->tok_embd.type, dim, d_tokens, n);
        if (hp->embed_scale > 0.0f)
            ops->scale(b, x, n * dim, hp->embed_scale);
    }

    for (int32_t l = 0; l < hp->n_layers; l++) {
        const kvs_model_layer *L = &m->layers[l];
        kvs_arena_mark ml = kvs_arena_mark_now(&r->arena);
        float *xb, *q, *k, *v, *att;            /* [n][dim], [n][q_dim], [n][kv_dim] x2, [n][q_dim] */
        void *scratch;
        ALLOC(xb, n * dim * 4);
        ALLOC(q, n * q_dim * 4);
        ALLOC(k, n * kv_dim * 4);
        ALLOC(v, n * kv_dim * 4);
        ALLOC(att, n * q_dim * 4);
        ALLOC(scratch, ops->attention_scratch_bytes(b, hp->n_heads, max_ctx, n));

        const bool on = l < run.layers;
        if (on) {
            ops->rms_norm(b, xb, x, L->attn_norm.data, n, dim, hp->norm_eps);
            ops->matmul(b, q, xb, L->wq.data, L->wq.type, n, dim, q_dim);
            ops->matmul(b, k, xb, L->wk.data, L->wk.type, n, dim, kv_dim);
            ops->matmul(b, v, xb, L->wv.data, L->wv.type, n, dim, kv_dim);
            if (hp->attn_bias) {
                ops->add_rows(b, q, L->bq.data, n, q_dim);
                ops->add_rows(b, k, L->bk.data, n, kv_dim);
                ops->add_rows(b, v, L->bv.data, n, kv_dim);
            }
            if (hp->qk_norm) {
                ops->rms_norm(b, q, q, L->q_norm.data, n * hp->n_heads, hd, hp->norm_eps);
                ops->rms_norm(b, k, k, L->k_norm.data, n * hp->n_kv_heads, hd, hp->norm_eps);
            }
            if (m->rope_inv_freq) {
                ops->rope_freqs(b, q, d_pos, n, hp->n_heads, (int32_t)hd, hp->rot_dim, m->rope_inv_freq,
                                m->rope_mscale, hp->rope_neox);
                ops->rope_freqs(b, k, d_pos, n, hp->n_kv_heads, (int32_t)hd, hp->rot_dim, m->rope_inv_freq,
                                m->rope_mscale, hp->rope_neox);
            } else {
                ops->rope(b, q, d_pos, n, hp->n_heads, (int32_t)hd, hp->rot_dim, hp->rope_freq_base,
                          hp->rope_freq_scale, hp->rope_neox);
                ops->rope(b, k, d_pos, n, hp->n_kv_heads, (int32_t)hd, hp->rot_dim, hp->rope_freq_base,
                          hp->rope_freq_scale, hp->rope_neox);
            }
            ops->kv_store(b, &kv[l], k, v, d_slots, n);
            meta.window = kvs_model_layer_window(hp, l);
            ops->attention(b, att, q, &kv[l], &meta, hp->n_heads, scale, scratch);
            ops->matmul(b, xb, att, L->wo.data, L->wo.type, n, q_dim, dim);
            if (hp->post_norms)
                ops->rms_norm(b, xb, xb, L->post_attn_norm.data, n, dim, hp->norm_eps);
            ops->add(b, x, x, xb, n * dim);
        }
        kvs_arena_release(&r->arena, ml);

        float *hb, *hb2;                        /* [n][hidden_dim] x2 */
        ALLOC(xb, n * dim * 4);
        ALLOC(hb, n * hp->hidden_dim * 4);
        ALLOC(hb2, n * hp->hidden_dim * 4);
        if (on) {
            ops->rms_norm(b, xb, x, L->ffn_norm.data, n, dim, hp->norm_eps);
            ops->matmul(b, hb, xb, L->w_gate.data, L->w_gate.type, n, dim, hp->hidden_dim);
            ops->matmul(b, hb2, xb, L->w_up.data, L->w_up.type, n, dim, hp->hidden_dim);
            if (hp->act == KVS_ACT_GELU_TANH)
                ops->gelu_mul(b, hb, hb, hb2, n * hp->hidden_dim);
            else
                ops->silu_mul(b, hb, hb, hb2, n * hp->hidden_dim);
            ops->matmul(b, xb, hb, L->w_down.data, L->w_down.type, n, hp->hidden_dim, dim);
            if (hp->post_norms)
                ops->rms_norm(b, xb, xb, L->post_ffw_norm.data, n, dim, hp->norm_eps);
            ops->add(b, x, x, xb, n * dim);
        }
        kvs_arena_release(&r->arena, ml);
    }

    if (bt->n_logits > 0) {
        float *xl, *logits;                     /* [n_logits][dim], [n_logits][n_vocab] */
        ALLOC(xl, (int64_t)bt->n_logits * dim * 4);
        ALLOC(logits, (int64_t)bt->n_logits * hp->n_vocab * 4);
        if (run.head) {
            ops->get_rows(b, xl, x, KVS_DTYPE_F32, dim, d_rows, bt->n_logits);
            ops->rms_norm(b, xl, xl, m->output_norm.data, bt->n_logits, dim, hp->norm_eps);
            ops->matmul(b, logits, xl, m->output.data, m->output.type, bt->n_logits, dim, hp->n_vocab);
            if (hp->final_softcap > 0.0f)
                ops->softcap(b, logits, (int64_t)bt->n_logits * hp->n_vocab, hp->final_softcap);
            ops->to_host(b, r->logits, logits, (size_t)bt->n_logits * hp->n_vocab * 4);
        }
    }
    if (ops->synchronize)
        st = ops->synchronize(b, err);
done:
    kvs_arena_release(&r->arena, m0);
    return st;
}

kvs_status kvs_runner_forward(kvs_runner *r, const kvs_batch *bt, const kvs_kv_view *kv,
                              kvs_error *err)
{
    return forward(r, bt, kv, (step_kernels){r->model->hp.n_layers, true}, err);
}

/* A step over the dummy cache: n tokens spread over s sequences, every
 * block-table entry block 0, the first sequence's last token at position
 * last_pos (so attention sees that context), one logit row per sequence. */
typedef struct profile_batch {
    int32_t *tokens, *pos, *seq, *tables, *rows;
    kvs_batch bt;
} profile_batch;

static void profile_batch_fill(profile_batch *p, int32_t n, int32_t s, int32_t max_model_len, int32_t last_pos)
{
    for (int32_t t = 0; t < n; t++) {
        p->tokens[t] = 0;
        p->seq[t] = t % s;
        p->pos[t] = (t / s) % max_model_len;
    }
    p->pos[0] = last_pos;
    for (int32_t i = 0; i < s; i++)
        p->rows[i] = i;
    p->bt = (kvs_batch){n, s, p->tokens, p->pos, p->seq, p->tables, s, p->rows};
}

kvs_status kvs_runner_profile(kvs_runner *r, kvs_dtype kv_dtype, kvs_error *err)
{
    const kvs_model_hparams *hp = &r->model->hp;
    kvs_backend *b = r->backend;
    const int32_t n = r->lim.max_tokens, s = r->max_logits, bs = r->lim.block_size;
    kvs_status st = KVS_OK;
    kvs_dbuf dummy = {0};
    kvs_kv_view *views = NULL;
    profile_batch pb = {
        .tokens = calloc((size_t)n, 4), .pos = calloc((size_t)n, 4), .seq = calloc((size_t)n, 4),
        .tables = calloc((size_t)s * r->max_blocks, 4), .rows = calloc((size_t)s, 4),
    };
    views = calloc((size_t)hp->n_layers, sizeof *views);
    if (!pb.tokens || !pb.pos || !pb.seq || !pb.tables || !pb.rows || !views) {
        st = kvs_fail(err, KVS_E_NOMEM, "out of memory");
        goto done;
    }
    /* One block of the real layout, shared by every layer and every block-table entry. */
    uint64_t block_bytes = (uint64_t)hp->n_kv_heads * bs * hp->head_dim * kvs_dtype_block_bytes(kv_dtype);
    if ((st = kvs_backend_alloc(b, KVS_MEM_WORKSPACE, 2 * block_bytes, &dummy, err)) != KVS_OK)
        goto done;
    for (int32_t l = 0; l < hp->n_layers; l++)
        views[l] = (kvs_kv_view){(char *)dummy.ptr, (char *)dummy.ptr + block_bytes, kv_dtype, bs,
                                 hp->n_kv_heads, hp->head_dim};
    /* The largest step: every sequence, every token, the longest context. */
    profile_batch_fill(&pb, n, s, r->lim.max_model_len, r->lim.max_model_len - 1);
    bool full = r->profile_mode == KVS_PROFILE_FULL;
    step_kernels run = full ? (step_kernels){hp->n_layers, true} : (step_kernels){0, false};

    kvs_ledger_reset_peaks(&b->ledger);
    kvs_ledger before;
    kvs_ledger_snapshot(&b->ledger, &before);
    r->arena.n_allocs = 0;
    r->arena.trace = 0;
    if ((st = forward(r, &pb.bt, views, run, err)) != KVS_OK)
        goto done;
    kvs_ledger after;
    kvs_ledger_snapshot(&b->ledger, &after);
    r->profiled_peak = after.peak[KVS_MEM_ACTIVATIONS] - before.cur[KVS_MEM_ACTIVATIONS];
    r->profile_allocs = r->arena.n_allocs;
    r->profile_trace = r->arena.trace;
    r->profile_high_water = r->arena.high_water;
    kvs_arena_free(&r->arena);
    if ((st = kvs_arena_init_fixed(&r->arena, b, r->profiled_peak, err)) != KVS_OK)
        goto done;
    /* The walk ran no kernel: run a small real step now, inside the fixed
     * arena (a few tokens through the embedding and the first layer; the
     * head's matmul is the same kernel, and reading the whole output matrix
     * would cost more than the rest), so that the kernels' code, the
     * threads' stacks and the backend's scratch are resident when start-up
     * measures the runtime overhead, as after a full profile. */
    if (!full) {
        int32_t nw = n < KVS_PROFILE_WARMUP_TOKENS ? n : KVS_PROFILE_WARMUP_TOKENS;
        int32_t sw = s < 2 ? s : 2;
        if (sw > nw)
            sw = nw;
        profile_batch_fill(&pb, nw, sw, r->lim.max_model_len, 0);
        st = forward(r, &pb.bt, views, (step_kernels){hp->n_layers < 1 ? hp->n_layers : 1, false}, err);
    }
done:
    kvs_backend_release(b, &dummy);
    free(pb.tokens);
    free(pb.pos);
    free(pb.seq);
    free(pb.tables);
    free(pb.rows);
    free(views);
    return st;
}
