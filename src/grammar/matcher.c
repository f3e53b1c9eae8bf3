/* The token-level grammar matcher (see matcher.h). */
#include "grammar/matcher.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- the vocabulary trie ---- */

enum { TOK_TEXT = 0, TOK_EOG = 1, TOK_NONE = 2 };

typedef struct tnode {
    int32_t end;                 /* first node after the subtree */
    int32_t tok;                 /* tokens ending here: sorted[tok .. tok + ntok) */
    uint16_t depth;
    uint16_t ntok;
    uint8_t byte;
} tnode;

struct kvs_gvocab {
    int32_t n_vocab;
    uint8_t *kind;               /* [n_vocab] TOK_* */
    int32_t *off, *len;          /* [n_vocab] each token's bytes in `bytes` */
    char *bytes;
    int32_t *sorted;             /* token ids sorted by their bytes */
    int32_t n_nodes;             /* node 0 is the root (no byte) */
    tnode *nodes;                /* [n_nodes] in depth-first order */
    int32_t max_len;
    size_t total_bytes;
};

static int cmp_tok(const void *x, const void *y, void *ctx)
{
    const kvs_gvocab *v = ctx;
    int32_t a = *(const int32_t *)x, b = *(const int32_t *)y;
    int32_t la = v->len[a], lb = v->len[b];
    int c = memcmp(v->bytes + v->off[a], v->bytes + v->off[b], (size_t)(la < lb ? la : lb));
    if (c)
        return c;
    if (la != lb)
        return la < lb ? -1 : 1;
    return a < b ? -1 : a > b;
}

void kvs_gvocab_free(kvs_gvocab *v)
{
    if (!v)
        return;
    free(v->kind);
    free(v->off);
    free(v->len);
    free(v->bytes);
    free(v->sorted);
    free(v->nodes);
    free(v);
}

int32_t kvs_gvocab_n_vocab(const kvs_gvocab *v) { return v->n_vocab; }
size_t kvs_gvocab_bytes(const kvs_gvocab *v) { return v->total_bytes; }

kvs_status kvs_gvocab_new(kvs_gvocab **out, const kvs_tokenizer *t, kvs_error *err)
{
    *out = NULL;
    kvs_gvocab *v = calloc(1, sizeof *v);
    int32_t V = kvs_tok_n_vocab(t);
    size_t cap = kvs_tok_max_token_bytes(t) + 8;
    char *buf = malloc(cap);
    if (!v || !buf || V < 1)
        goto nomem;
    v->n_vocab = V;
    v->kind = malloc((size_t)V);
    v->off = malloc((size_t)V * sizeof *v->off);
    v->len = malloc((size_t)V * sizeof *v->len);
    v->sorted = malloc((size_t)V * sizeof *v->sorted);
    if (!v->kind || !v->off || !v->len || !v->sorted)
        goto nomem;
    size_t total = 0;
    for (int32_t i = 0; i < V; i++) {
        size_t n = kvs_tok_decode_token(t, i, false, buf, cap);
        if (n > cap)
            n = cap;
        v->len[i] = (int32_t)n;
        total += n;
    }
    if (total > INT32_MAX - 1)
        return kvs_fail(err, KVS_E_INVALID, "grammar: the vocabulary is too large");
    v->bytes = malloc(total + 1);
    if (!v->bytes)
        goto nomem;
    size_t pos = 0;
    int32_t n_text = 0;
    for (int32_t i = 0; i < V; i++) {
        size_t n = kvs_tok_decode_token(t, i, false, buf, cap);
        if (n > cap)
            n = cap;
        memcpy(v->bytes + pos, buf, n);
        v->off[i] = (int32_t)pos;
        pos += n;
        v->kind[i] = kvs_tok_is_eog(t, i) ? TOK_EOG : n == 0 ? TOK_NONE : TOK_TEXT;
        if (v->kind[i] == TOK_TEXT) {
            v->sorted[n_text++] = i;
            if ((int32_t)n > v->max_len)
                v->max_len = (int32_t)n;
        }
    }
    qsort_r(v->sorted, (size_t)n_text, sizeof *v->sorted, cmp_tok, v);
    size_t max_nodes = total + 1;
    v->nodes = calloc(max_nodes, sizeof *v->nodes);
    int32_t *path = malloc(((size_t)v->max_len + 1) * sizeof *path);
    if (!v->nodes || !path) {
        free(path);
        goto nomem;
    }
    if (v->max_len > 65535) {
        free(path);
        free(buf);
        kvs_gvocab_free(v);
        return kvs_fail(err, KVS_E_UNSUPPORTED, "grammar: a token of more than 65535 bytes");
    }
    /* Preorder nodes from the sorted strings: each string adds the nodes
     * past its common prefix with the previous one. */
    int32_t n = 1;
    v->nodes[0].byte = 0;
    v->nodes[0].depth = 0;
    v->nodes[0].tok = 0;
    path[0] = 0;
    int32_t depth = 0, prev = -1;
    for (int32_t k = 0; k < n_text; k++) {
        int32_t id = v->sorted[k];
        const uint8_t *s = (const uint8_t *)v->bytes + v->off[id];
        int32_t l = 0;
        if (prev >= 0) {
            const uint8_t *p = (const uint8_t *)v->bytes + v->off[prev];
            int32_t m = v->len[prev] < v->len[id] ? v->len[prev] : v->len[id];
            while (l < m && p[l] == s[l])
                l++;
        }
        for (; depth > l; depth--)
            v->nodes[path[depth]].end = n;
        for (int32_t d = l; d < v->len[id]; d++) {
            v->nodes[n].byte = s[d];
            v->nodes[n].depth = (uint16_t)(d + 1);
            v->nodes[n].tok = k;
            path[++depth] = n++;
        }
        int32_t node = path[depth];
        if (v->nodes[node].ntok == 0)
            v->nodes[node].tok = k;
        if (v->nodes[node].ntok == UINT16_MAX) {
            free(path);
            free(buf);
            kvs_gvocab_free(v);
            return kvs_fail(err, KVS_E_UNSUPPORTED, "grammar: more than 65535 tokens with the same bytes");
        }
        v->nodes[node].ntok++;
        prev = id;
    }
    for (; depth >= 0; depth--)
        v->nodes[path[depth]].end = n;
    free(path);
    tnode *fit = realloc(v->nodes, (size_t)n * sizeof *v->nodes); /* room was for one node per byte */
    if (fit)
        v->nodes = fit;
    v->n_nodes = n;
    v->total_bytes = (size_t)V * (1 + 4 + 4 + 4) + total + (size_t)n * sizeof(tnode);
    free(buf);
    *out = v;
    return KVS_OK;
nomem:
    free(buf);
    kvs_gvocab_free(v);
    return kvs_fail(err, KVS_E_NOMEM, "grammar: out of memory for the vocabulary trie");
}

/* ---- the matcher ---- */

typedef struct frame {
    int32_t pos;                 /* element to continue at */
    int32_t parent;              /* frame to return to, -1: none */
    uint64_t hash;               /* of the whole stack */
} frame;

#define KEY_MAX 256              /* ints of a cacheable state's key */
#define MEMO_SLOTS 256           /* states a walk remembers self-loops of (power of two) */

/* One depth of the trie walk: its stacks are tops[begin, end); frames
 * and tops past frames / free belong to deeper levels. */
typedef struct level {
    int32_t begin, end, free, frames;
    uint64_t hash;               /* of the set of stacks and the accept flag */
    bool accept;
    int32_t sid;                 /* the walk's state, or -1 (not kept: out of room) */
} level;

/* The trie walk is a lazily built DFA: the states it meets are kept
 * (their stacks copied to the top ends of the frame and top arrays) and
 * each (state, byte) -> state transition is computed once per walk.
 * Inside a JSON string nearly every byte leads back to the same state, in
 * a bounded string to the state one count on, so most of the trie is
 * walked with a table lookup per node instead of an expansion. */
#define MAX_STATES 512            /* < 32768: transitions are int16 */

typedef struct wstate {
    int32_t begin, end;          /* tops */
    uint64_t hash;
    bool accept;
} wstate;



typedef struct state_slot {
    uint32_t gen;
    int32_t id;
} state_slot;
#define MAX_EXPAND_DEPTH 2048
#define MAX_EXPAND_WORK (1 << 16) /* expansions per byte: a grammar that needs more is refused */

struct kvs_gmatcher {
    kvs_grammar *g;
    const kvs_gvocab *v;
    kvs_gmatcher_limits lim;
    int32_t words;               /* mask words */

    frame *frames;
    int32_t n_frames;
    int32_t n_committed_frames;
    uint8_t *mark;               /* [max_frames] compaction */
    int32_t *remap;

    int32_t *tops;               /* [max_tops]: committed state at [0, n_cur), walk levels after */
    int32_t n_cur;
    bool cur_accept;
    bool strip_pending;

    /* the level being built by advance() */
    int32_t lv_begin, lv_end;
    bool lv_accept, lv_overflow;
    int32_t expand_depth;
    int32_t work;                /* expansions in this advance (bounded) */
    level *lvl;                  /* [max_len + 2] the trie walk's state at each depth */
    wstate *states;              /* [MAX_STATES] the walk's DFA states */
    int32_t n_states;
    state_slot *state_tab;       /* [2 * MAX_STATES] by hash */
    int16_t *trans;              /* [MAX_STATES][256] next state, -1: not computed yet */
    uint32_t gen;
    int32_t pf_low, pt_low;      /* kept states' frames / tops: [pf_low, max_frames), [pt_low, max_tops) */

    uint32_t *mask;              /* [words] */
    int32_t mask_count;

    /* cache */
    uint64_t *c_hash;
    int32_t *c_klen;             /* -1: empty */
    int32_t *c_key;              /* [entries][KEY_MAX] */
    uint32_t *c_mask;            /* [entries][words] */
    int32_t *c_count;
    int32_t c_next;
    int32_t key[KEY_MAX];

    kvs_gmatcher_stats stats;
    void (*home)(void *ctx, kvs_gmatcher *m); /* a pooled matcher: where kvs_gmatcher_free returns it */
    void *home_ctx;
};

kvs_gmatcher_limits kvs_gmatcher_default_limits(void)
{
    return (kvs_gmatcher_limits){.max_frames = 1 << 15, .max_tops = 1 << 13, .cache_entries = 32};
}

/* What malloc takes for n bytes, as resident memory: its header, rounded
 * up to whole pages (an upper bound for small blocks too). */
static size_t alloc_bytes(size_t n) { return (n + 16 + 4095) / 4096 * 4096; }

size_t kvs_gmatcher_bytes(int32_t n_vocab, size_t max_token_bytes, const kvs_gmatcher_limits *lim)
{
    kvs_gmatcher_limits d = kvs_gmatcher_default_limits();
    if (!lim)
        lim = &d;
    size_t W = ((size_t)n_vocab + 31) / 32, F = (size_t)(lim->max_frames < 16 ? 16 : lim->max_frames);
    size_t T = (size_t)(lim->max_tops < 16 ? 16 : lim->max_tops), E = (size_t)(lim->cache_entries < 0 ? 0 : lim->cache_entries);
    /* every allocation kvs_gmatcher_new makes, in its order */
    return alloc_bytes(sizeof(struct kvs_gmatcher)) + alloc_bytes(F * sizeof(frame)) + alloc_bytes(F) +
           alloc_bytes(F * 4) + alloc_bytes(T * 4) + alloc_bytes((max_token_bytes + 2) * sizeof(level)) +
           alloc_bytes(MAX_STATES * sizeof(wstate)) + alloc_bytes(2 * MAX_STATES * sizeof(state_slot)) +
           alloc_bytes(MAX_STATES * 256 * sizeof(int16_t)) + alloc_bytes((W + 1) * 4) +
           alloc_bytes((E + 1) * 8) + alloc_bytes((E + 1) * 4) + alloc_bytes((E * KEY_MAX + 1) * 4) +
           alloc_bytes((E * W + 1) * 4) + alloc_bytes((E + 1) * 4);
}

size_t kvs_gvocab_reserve_bytes(const kvs_tokenizer *t, size_t *max_token_bytes)
{
    /* built and measured: the node count is the trie's (a few ms at 128k tokens) */
    kvs_gvocab *v;
    kvs_error err;
    if (kvs_gvocab_new(&v, t, &err) != KVS_OK)
        return 0;
    size_t V = (size_t)v->n_vocab, total = 0;
    for (size_t i = 0; i < V; i++)
        total += (size_t)v->len[i];
    if (max_token_bytes)
        *max_token_bytes = (size_t)v->max_len;
    size_t b = alloc_bytes(sizeof *v) + alloc_bytes(V) + 3 * alloc_bytes(V * 4) + alloc_bytes(total + 1) +
               alloc_bytes((size_t)v->n_nodes * sizeof(tnode));
    kvs_gvocab_free(v);
    return b;
}

void kvs_gmatcher_set_home(kvs_gmatcher *m, void (*home)(void *ctx, kvs_gmatcher *m), void *ctx)
{
    m->home = home;
    m->home_ctx = ctx;
}

void kvs_gmatcher_stop(kvs_gmatcher *m)
{
    kvs_grammar *g = m->g;
    m->g = NULL;
    kvs_grammar_unref(g);
}

void kvs_gmatcher_free(kvs_gmatcher *m)
{
    if (!m)
        return;
    if (m->home) { /* pooled: back to its pool, not freed */
        kvs_gmatcher_stop(m);
        m->home(m->home_ctx, m);
        return;
    }
    kvs_grammar_unref(m->g);
    free(m->frames);
    free(m->mark);
    free(m->remap);
    free(m->tops);
    free(m->lvl);
    free(m->states);
    free(m->state_tab);
    free(m->trans);
    free(m->mask);
    free(m->c_hash);
    free(m->c_klen);
    free(m->c_key);
    free(m->c_mask);
    free(m->c_count);
    free(m);
}

static inline uint64_t mix(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static inline uint64_t stack_hash(const kvs_gmatcher *m, int32_t pos, int32_t parent)
{
    return mix((uint64_t)(uint32_t)pos * 0x9E3779B97F4A7C15ull + (parent >= 0 ? m->frames[parent].hash : 0x51ED));
}

static int32_t new_frame(kvs_gmatcher *m, int32_t pos, int32_t parent, uint64_t h)
{
    if (m->n_frames >= m->pf_low) {
        m->lv_overflow = true;
        m->stats.overflows++;
        return -2;
    }
    m->frames[m->n_frames] = (frame){pos, parent, h};
    return m->n_frames++;
}

static bool same_stack(const kvs_gmatcher *m, int32_t a, int32_t b)
{
    while (a != b) {
        if (a < 0 || b < 0)
            return false;
        const frame *fa = &m->frames[a], *fb = &m->frames[b];
        if (fa->pos != fb->pos || fa->hash != fb->hash)
            return false;
        a = fa->parent;
        b = fb->parent;
    }
    return true;
}

/* Add a stack whose top is the byte set at pos (merging an equal one). */
static void add_top(kvs_gmatcher *m, int32_t pos, int32_t parent)
{
    uint64_t h = stack_hash(m, pos, parent);
    for (int32_t i = m->lv_begin; i < m->lv_end; i++) {
        const frame *f = &m->frames[m->tops[i]];
        if (f->hash == h && f->pos == pos && same_stack(m, f->parent, parent))
            return;
    }
    if (m->lv_end >= m->pt_low) {
        m->lv_overflow = true;
        m->stats.overflows++;
        return;
    }
    int32_t fr = new_frame(m, pos, parent, h);
    if (fr < 0)
        return;
    m->tops[m->lv_end++] = fr;
}

/* Expand "continue at pos, then return to parent" until every path sits
 * on a byte set (added as a top) or has popped the last frame (accept). */
static void expand(kvs_gmatcher *m, int32_t pos, int32_t parent)
{
    const kvs_grammar *g = m->g;
    m->expand_depth++;
    if (++m->work > MAX_EXPAND_WORK || m->expand_depth > MAX_EXPAND_DEPTH) {
        m->lv_overflow = true;
        m->stats.overflows++;
        m->expand_depth--;
        return;
    }
    for (;;) {
        const kvs_gelem *e = &g->elems[pos];
        if (e->type == KVS_GE_SET) {
            add_top(m, pos, parent);
            break;
        }
        if (e->type == KVS_GE_END) {
            if (parent < 0) {
                m->lv_accept = true;
                break;
            }
            pos = m->frames[parent].pos;
            parent = m->frames[parent].parent;
            continue;
        }
        /* a rule reference: its alternatives, returning after it */
        int32_t ret = parent;
        if (g->elems[pos + 1].type != KVS_GE_END) {
            ret = new_frame(m, pos + 1, parent, stack_hash(m, pos + 1, parent));
            if (ret < 0)
                break;
        }
        int32_t r = e->arg;
        for (int32_t k = g->alt_begin[r]; k < g->alt_begin[r + 1]; k++)
            expand(m, g->alts[k], ret);
        break;
    }
    m->expand_depth--;
}

/* The stacks of tops[from, to) that take byte c, expanded, appended at
 * tops[at, ...): sets lv_begin/lv_end/lv_accept. */
static void advance_at(kvs_gmatcher *m, int32_t from, int32_t to, int32_t at, uint8_t c)
{
    const kvs_grammar *g = m->g;
    m->lv_begin = m->lv_end = at;
    m->lv_accept = false;
    m->work = 0;
    for (int32_t i = from; i < to; i++) {
        const frame *f = &m->frames[m->tops[i]];
        if (kvs_gset_has(g->sets[g->elems[f->pos].arg], c))
            expand(m, f->pos + 1, f->parent);
    }
}

static void advance(kvs_gmatcher *m, int32_t from, int32_t to, uint8_t c) { advance_at(m, from, to, to, c); }

/* Order-independent hash of the stacks tops[b, e) and the accept flag. */
static uint64_t set_hash(const kvs_gmatcher *m, int32_t b, int32_t e, bool accept)
{
    uint64_t h = accept ? 0xACCE97ull : 0x0B5E55ull;
    for (int32_t i = b; i < e; i++)
        h += mix(m->frames[m->tops[i]].hash);
    return h;
}

/* Whether the (deduplicated) sets of stacks tops[a, ae) and tops[b, be) are equal. */
static bool same_set(const kvs_gmatcher *m, int32_t a, int32_t ae, int32_t b, int32_t be)
{
    if (ae - a != be - b)
        return false;
    for (int32_t i = a; i < ae; i++) {
        const frame *f = &m->frames[m->tops[i]];
        bool found = false;
        for (int32_t j = b; j < be && !found; j++) {
            const frame *x = &m->frames[m->tops[j]];
            found = x->hash == f->hash && x->pos == f->pos && same_stack(m, x->parent, f->parent);
        }
        if (!found)
            return false;
    }
    return true;
}

/* The frame f copied into the kept region (frames below lo or already
 * kept are shared as they are); -1 when out of room. */
static int32_t keep_frame(kvs_gmatcher *m, int32_t f, int32_t lo)
{
    if (f < lo || f >= m->pf_low)
        return f;
    if (m->mark[f])
        return m->remap[f];
    int32_t p = m->frames[f].parent;
    if (p >= 0 && (p = keep_frame(m, p, lo)) < 0)
        return -1;
    if (m->pf_low - 1 <= m->n_frames)
        return -1;
    int32_t k = --m->pf_low;
    m->frames[k] = (frame){m->frames[f].pos, p, m->frames[f].hash};
    m->mark[f] = 1;
    m->remap[f] = k;
    return k;
}

/* The walk's state for the stacks tops[b, e) (whose new frames are
 * [lo, n_frames)): an equal kept one, or a new kept copy; -1 when out of
 * room. */
static int32_t keep_state(kvs_gmatcher *m, int32_t b, int32_t e, uint64_t h, bool accept, int32_t lo)
{
    uint32_t i = (uint32_t)(h >> 13) & (2 * MAX_STATES - 1);
    for (;; i = (i + 1) & (2 * MAX_STATES - 1)) {
        state_slot *sl = &m->state_tab[i];
        if (sl->gen != m->gen)
            break;
        const wstate *w = &m->states[sl->id];
        if (w->hash == h && w->accept == accept && same_set(m, w->begin, w->end, b, e))
            return sl->id;
    }
    if (m->n_states >= MAX_STATES || m->pt_low - (e - b) <= e)
        return -1;
    int32_t save_pf = m->pf_low, nt = e - b, ok = 1;
    for (int32_t k = 0; k < nt && ok; k++) {
        int32_t f = keep_frame(m, m->tops[b + k], lo);
        if (f < 0)
            ok = 0;
        else
            m->tops[m->pt_low - nt + k] = f;
    }
    memset(m->mark + lo, 0, (size_t)(m->n_frames - lo));
    if (!ok) {
        m->pf_low = save_pf;
        return -1;
    }
    m->pt_low -= nt;
    int32_t id = m->n_states++;
    m->states[id] = (wstate){m->pt_low, m->pt_low + nt, h, accept};
    m->state_tab[i] = (state_slot){m->gen, id};
    return id;
}


/* Keep only the frames the committed tops reach, in order (a parent is
 * always older than its children, so one forward pass renumbers them). */
static void compact(kvs_gmatcher *m)
{
    memset(m->mark, 0, (size_t)m->n_frames);
    for (int32_t i = 0; i < m->n_cur; i++)
        for (int32_t f = m->tops[i]; f >= 0 && !m->mark[f]; f = m->frames[f].parent)
            m->mark[f] = 1;
    int32_t k = 0;
    for (int32_t i = 0; i < m->n_frames; i++) {
        if (!m->mark[i])
            continue;
        frame f = m->frames[i];
        if (f.parent >= 0)
            f.parent = m->remap[f.parent];
        m->remap[i] = k;
        m->frames[k++] = f;
    }
    memset(m->mark, 0, (size_t)m->n_frames); /* the walk's keep_frame expects clear marks */
    for (int32_t i = 0; i < m->n_cur; i++)
        m->tops[i] = m->remap[m->tops[i]];
    m->n_frames = m->n_committed_frames = k;
}

kvs_status kvs_gmatcher_alloc(kvs_gmatcher **out, const kvs_gvocab *v, const kvs_gmatcher_limits *lim,
                              kvs_error *err)
{
    *out = NULL;
    kvs_gmatcher *m = calloc(1, sizeof *m);
    if (!m)
        return kvs_fail(err, KVS_E_NOMEM, "grammar: out of memory for a matcher");
    m->v = v;
    m->lim = lim ? *lim : kvs_gmatcher_default_limits();
    if (m->lim.max_frames < 16)
        m->lim.max_frames = 16;
    if (m->lim.max_tops < 16)
        m->lim.max_tops = 16;
    if (m->lim.cache_entries < 0)
        m->lim.cache_entries = 0;
    m->pf_low = m->lim.max_frames;
    m->pt_low = m->lim.max_tops;
    int32_t depth_cap = (v ? v->max_len : 0) + 2;
    size_t F = (size_t)m->lim.max_frames, E = (size_t)m->lim.cache_entries;
    m->words = v ? (v->n_vocab + 31) / 32 : 0;
    m->frames = malloc(F * sizeof *m->frames);
    m->mark = malloc(F);
    m->remap = malloc(F * sizeof *m->remap);
    m->tops = malloc((size_t)m->lim.max_tops * sizeof *m->tops);
    m->lvl = malloc((size_t)depth_cap * sizeof *m->lvl);
    if (v) { /* the trie walk's tables: only a matcher that makes masks needs them */
        m->states = calloc(MAX_STATES, sizeof *m->states);
        m->state_tab = calloc(2 * MAX_STATES, sizeof *m->state_tab);
        m->trans = malloc(MAX_STATES * 256 * sizeof *m->trans);
    }
    m->mask = calloc((size_t)m->words + 1, 4);
    m->c_hash = calloc(E + 1, sizeof *m->c_hash);
    m->c_klen = malloc((E + 1) * sizeof *m->c_klen);
    m->c_key = malloc((E * KEY_MAX + 1) * sizeof *m->c_key);
    m->c_mask = malloc((E * (size_t)m->words + 1) * 4);
    m->c_count = calloc(E + 1, sizeof *m->c_count);
    if (!m->frames || !m->mark || !m->remap || !m->tops || !m->lvl || (v && (!m->states || !m->state_tab || !m->trans)) || !m->mask ||
        !m->c_hash || !m->c_klen || !m->c_key || !m->c_mask || !m->c_count) {
        kvs_gmatcher_free(m);
        return kvs_fail(err, KVS_E_NOMEM, "grammar: out of memory for a matcher");
    }
    for (size_t i = 0; i < E; i++)
        m->c_klen[i] = -1;
    /* make the reserve resident now, not page by page during steps */
    memset(m->frames, 0, F * sizeof *m->frames);
    memset(m->tops, 0, (size_t)m->lim.max_tops * sizeof *m->tops);
    memset(m->mark, 0, F);
    memset(m->remap, 0, F * sizeof *m->remap);
    memset(m->c_key, 0, (E * KEY_MAX + 1) * sizeof *m->c_key);
    memset(m->c_mask, 0, (E * (size_t)m->words + 1) * 4);
    if (v) {
        memset(m->trans, 0xFF, MAX_STATES * 256 * sizeof *m->trans);
        memset(m->state_tab, 0, 2 * MAX_STATES * sizeof *m->state_tab);
        memset(m->states, 0, MAX_STATES * sizeof *m->states);
    }
    memset(m->lvl, 0, (size_t)depth_cap * sizeof *m->lvl);
    *out = m;
    return KVS_OK;
}

kvs_status kvs_gmatcher_start(kvs_gmatcher *m, kvs_grammar *g, bool strip_first_space, kvs_error *err)
{
    kvs_gmatcher_stop(m);
    m->g = kvs_grammar_ref(g);
    m->strip_pending = strip_first_space;
    m->n_frames = m->n_committed_frames = m->n_cur = 0;
    m->cur_accept = false;
    m->pf_low = m->lim.max_frames;
    m->pt_low = m->lim.max_tops;
    memset(&m->stats, 0, sizeof m->stats);
    m->c_next = 0;
    for (int32_t i = 0; i < m->lim.cache_entries; i++)
        m->c_klen[i] = -1;
    /* the start state: every alternative of the root */
    m->lv_begin = m->lv_end = 0;
    m->lv_accept = m->lv_overflow = false;
    for (int32_t k = g->alt_begin[g->root]; k < g->alt_begin[g->root + 1]; k++)
        expand(m, g->alts[k], -1);
    if (m->lv_overflow) {
        kvs_gmatcher_stop(m);
        return kvs_fail(err, KVS_E_INVALID, "grammar: the start state does not fit the matcher's limits");
    }
    m->n_cur = m->lv_end;
    m->cur_accept = m->lv_accept;
    compact(m);
    return KVS_OK;
}

kvs_status kvs_gmatcher_new(kvs_gmatcher **out, kvs_grammar *g, const kvs_gvocab *v, bool strip_first_space,
                            const kvs_gmatcher_limits *lim, kvs_error *err)
{
    kvs_gmatcher *m;
    kvs_status st = kvs_gmatcher_alloc(&m, v, lim, err);
    if (st != KVS_OK)
        return st;
    if ((st = kvs_gmatcher_start(m, g, strip_first_space, err)) != KVS_OK) {
        kvs_gmatcher_free(m);
        return st;
    }
    *out = m;
    return KVS_OK;
}

bool kvs_gmatcher_can_end(const kvs_gmatcher *m) { return m->cur_accept; }
bool kvs_gmatcher_done(const kvs_gmatcher *m) { return m->cur_accept && m->n_cur == 0; }
void kvs_gmatcher_get_stats(const kvs_gmatcher *m, kvs_gmatcher_stats *st) { *st = m->stats; }

kvs_status kvs_gmatcher_copy_state(kvs_gmatcher *dst, const kvs_gmatcher *src, kvs_error *err)
{
    if (dst->g != src->g || dst->v != src->v || dst->lim.max_frames != src->lim.max_frames ||
        dst->lim.max_tops != src->lim.max_tops)
        return kvs_fail(err, KVS_E_INVALID, "grammar: matchers of different grammars or limits");
    memcpy(dst->frames, src->frames, (size_t)src->n_committed_frames * sizeof *dst->frames);
    memcpy(dst->tops, src->tops, (size_t)src->n_cur * sizeof *dst->tops);
    dst->n_frames = dst->n_committed_frames = src->n_committed_frames;
    dst->n_cur = src->n_cur;
    dst->cur_accept = src->cur_accept;
    dst->strip_pending = src->strip_pending;
    return KVS_OK;
}

static bool advance_bytes(kvs_gmatcher *m, const uint8_t *s, size_t n)
{
    int32_t from = 0, to = m->n_cur;
    bool accept = m->cur_accept;
    m->lv_overflow = false;
    for (size_t i = 0; i < n; i++) {
        advance(m, from, to, s[i]);
        if (m->lv_overflow || (m->lv_end == m->lv_begin && !m->lv_accept)) {
            m->n_frames = m->n_committed_frames;
            return false;
        }
        /* slide the new level down next to the committed one */
        int32_t cnt = m->lv_end - m->lv_begin;
        if (m->n_cur + cnt > m->lim.max_tops) {
            m->n_frames = m->n_committed_frames;
            return false;
        }
        memmove(m->tops + m->n_cur, m->tops + m->lv_begin, (size_t)cnt * sizeof *m->tops);
        from = m->n_cur;
        to = m->n_cur + cnt;
        accept = m->lv_accept;
    }
    int32_t cnt = to - from;
    memmove(m->tops, m->tops + from, (size_t)cnt * sizeof *m->tops);
    m->n_cur = cnt;
    m->cur_accept = accept;
    compact(m);
    return true;
}

bool kvs_gmatcher_accept_bytes(kvs_gmatcher *m, const char *s, size_t n)
{
    return advance_bytes(m, (const uint8_t *)s, n);
}

bool kvs_gmatcher_accept_token(kvs_gmatcher *m, int32_t token)
{
    const kvs_gvocab *v = m->v;
    if (!v || token < 0 || token >= v->n_vocab)
        return false;
    if (v->kind[token] == TOK_EOG)
        return m->cur_accept;
    if (v->kind[token] == TOK_NONE)
        return false;
    const uint8_t *s = (const uint8_t *)v->bytes + v->off[token];
    size_t n = (size_t)v->len[token];
    if (m->strip_pending && n > 0 && s[0] == ' ') {
        s++;
        n--;
        if (n == 0)
            return false;
    }
    if (!advance_bytes(m, s, n))
        return false;
    m->strip_pending = false;
    return true;
}

/* ---- masks ---- */

/* The committed state as a key: each stack top to bottom, in hash order. */
static int32_t make_key(kvs_gmatcher *m, uint64_t *hash)
{
    int32_t n = m->n_cur;
    /* insertion sort of the tops by hash (few tops) */
    for (int32_t i = 1; i < n; i++) {
        int32_t t = m->tops[i], j = i;
        while (j > 0 && m->frames[m->tops[j - 1]].hash > m->frames[t].hash) {
            m->tops[j] = m->tops[j - 1];
            j--;
        }
        m->tops[j] = t;
    }
    int32_t k = 0;
    m->key[k++] = m->cur_accept;
    for (int32_t i = 0; i < n; i++) {
        for (int32_t f = m->tops[i]; f >= 0; f = m->frames[f].parent) {
            if (k >= KEY_MAX - 1)
                return -1;
            m->key[k++] = m->frames[f].pos;
        }
        m->key[k++] = -1;
    }
    *hash = mix(0x4B565347ull + (uint64_t)k);
    for (int32_t i = 0; i < k; i++)
        *hash = mix(*hash ^ (uint64_t)(uint32_t)m->key[i]);
    return k;
}

static void set_bit(uint32_t *mask, int32_t i) { mask[i >> 5] |= 1u << (i & 31); }

/* Walk the trie from the committed state into m->mask. */
static void walk(kvs_gmatcher *m)
{
    const kvs_gvocab *v = m->v;
    memset(m->mask, 0, (size_t)m->words * 4);
    if (++m->gen == 0) { /* generations wrapped: clear the table once */
        memset(m->state_tab, 0, 2 * MAX_STATES * sizeof *m->state_tab);
        m->gen = 1;
    }
    m->n_states = 0;
    m->pf_low = m->lim.max_frames;
    m->pt_low = m->lim.max_tops;
    int32_t count = 0;
    level *L = m->lvl;
    uint64_t h0 = set_hash(m, 0, m->n_cur, m->cur_accept);
    L[0] = (level){0, m->n_cur, m->n_cur, m->n_frames, h0, m->cur_accept, -1};
    L[0].sid = keep_state(m, 0, m->n_cur, h0, m->cur_accept, m->n_frames); /* committed frames: nothing to copy */
    const int32_t N = v->n_nodes;
    uint64_t visited = 0;
    const tnode *T = v->nodes;
    for (int32_t i = 1; i < N;) {
        const tnode *nd = &T[i];
        int32_t d = nd->depth;
        const uint8_t c = nd->byte;
        const level *P = &L[d - 1];
        level *C = &L[d];
        visited++;
        m->n_frames = P->frames;
        bool strip = d == 1 && m->strip_pending && c == ' ';
        int16_t *t = P->sid >= 0 ? &m->trans[P->sid * 256 + c] : NULL;
        if (strip) {
            *C = *P; /* the dropped space: the same state */
        } else if (t && *t >= 0) {
            const wstate *w = &m->states[*t];
            *C = (level){w->begin, w->end, P->free, P->frames, w->hash, w->accept, *t};
        } else {
            m->lv_overflow = false;
            advance_at(m, P->begin, P->end, P->free, c);
            *C = (level){m->lv_begin, m->lv_end, m->lv_end, m->n_frames,
                         set_hash(m, m->lv_begin, m->lv_end, m->lv_accept), m->lv_accept, -1};
            if (t && !m->lv_overflow) {
                int32_t to = keep_state(m, C->begin, C->end, C->hash, C->accept, P->frames);
                if (to >= 0) {
                    *t = (int16_t)to;
                    const wstate *w = &m->states[to];
                    *C = (level){w->begin, w->end, P->free, P->frames, w->hash, w->accept, to};
                    m->n_frames = P->frames;
                }
            }
        }
        if (C->end == C->begin && (strip || !C->accept)) {
            i = nd->end;
            continue;
        }
        if (!strip)
            for (int32_t k = 0; k < nd->ntok; k++) {
                set_bit(m->mask, v->sorted[nd->tok + k]);
                count++;
            }
        if (C->end == C->begin) /* accepted, but nothing can follow */
            i = nd->end;
        else
            i++;
    }
    m->n_frames = m->n_committed_frames;
    m->pf_low = m->lim.max_frames;
    m->pt_low = m->lim.max_tops;
    memset(m->trans, 0xFF, (size_t)m->n_states * 256 * sizeof *m->trans);
    if (m->cur_accept)
        for (int32_t t = 0; t < v->n_vocab; t++)
            if (v->kind[t] == TOK_EOG) {
                set_bit(m->mask, t);
                count++;
            }
    m->mask_count = count;
    m->stats.nodes_visited += visited;
}

const uint32_t *kvs_gmatcher_mask(kvs_gmatcher *m, int32_t *n_allowed)
{
    m->stats.masks++;
    if (!m->v) {
        *n_allowed = 0;
        return m->mask;
    }
    uint64_t h = 0;
    int32_t klen = m->strip_pending || m->lim.cache_entries == 0 ? -1 : make_key(m, &h);
    const size_t W = (size_t)m->words;
    if (klen > 0)
        for (int32_t e = 0; e < m->lim.cache_entries; e++)
            if (m->c_klen[e] == klen && m->c_hash[e] == h &&
                memcmp(m->c_key + (size_t)e * KEY_MAX, m->key, (size_t)klen * 4) == 0) {
                m->stats.cache_hits++;
                *n_allowed = m->c_count[e];
                return m->c_mask + (size_t)e * W;
            }
    walk(m);
    if (klen > 0) {
        int32_t e = m->c_next;
        m->c_next = (m->c_next + 1) % m->lim.cache_entries;
        m->c_klen[e] = klen;
        m->c_hash[e] = h;
        memcpy(m->c_key + (size_t)e * KEY_MAX, m->key, (size_t)klen * 4);
        memcpy(m->c_mask + (size_t)e * W, m->mask, W * 4);
        m->c_count[e] = m->mask_count;
    }
    *n_allowed = m->mask_count;
    return m->mask;
}

int32_t kvs_gmatcher_mask_logits(kvs_gmatcher *m, float *logits, int32_t n_logits)
{
    int32_t n;
    const uint32_t *mask = kvs_gmatcher_mask(m, &n);
    const int32_t V = m->v ? (m->v->n_vocab < n_logits ? m->v->n_vocab : n_logits) : 0;
    for (int32_t i = V; i < n_logits; i++)
        logits[i] = -INFINITY;
    for (int32_t w = 0; w * 32 < V; w++) {
        uint32_t bits = mask[w];
        if (bits == 0xFFFFFFFFu)
            continue;
        int32_t base = w * 32, end = base + 32 < V ? base + 32 : V;
        for (int32_t i = base; i < end; i++)
            if (!((bits >> (i - base)) & 1u))
                logits[i] = -INFINITY;
    }
    return n;
}
