/*
 * gpool.h - the structured-output reserve: a fixed number of grammar
 * matchers and compile arenas, made at start-up and counted in the budget.
 *
 * A request with structured output needs two things whose size does not
 * depend on the request's length: its compiled grammar (schema -> GBNF ->
 * the grammar of grammar.h) and one matcher per sequence it generates
 * (matcher.h, a few MiB at large vocabularies).  Left to malloc, N
 * concurrent structured requests would take N x that, outside every term
 * of the memory budget.  The pool fixes both when the server starts:
 *
 *     slots (--max-structured-seqs, default min(--max-num-seqs, 8))
 *       x (one matcher over the vocabulary + one compile arena of
 *          --max-grammar-bytes)
 *     + the vocabulary trie the matchers share
 *
 * and kvs_gpool_bytes() is their sum from the tokenizer and the limits
 * alone, so `plan` and a start count the same serving reserve.
 *
 * A request takes a lease (kvs_gpool_take) on the HTTP thread before it
 * compiles: one arena and n matchers (n = its sequences: prompts x n).
 * When no arena or not n matchers are free, the request is refused at
 * once (KVS_E_BUDGET: the server answers 503 with Retry-After; it is not
 * queued, as a full body pool is not); a request of more sequences than
 * the pool has is KVS_E_INVALID (400).  The constraint compiles into the
 * lease's arena (the _in compilers of grammar.h); one that does not fit
 * is KVS_E_INVALID naming --max-grammar-bytes.  kvs_glease_bind gives the
 * grammar its lease: from then on the engine takes the request's matchers
 * from it (kvs_gpool_matcher, on the engine thread, allocating nothing),
 * and when the grammar's last reference goes (the request is finished
 * and its handler done) the arena and any matcher not taken go back.
 * A matcher goes back when kvs_gmatcher_free is called on it.
 *
 *     kvs_glease *l = kvs_gpool_take(pool, n_seqs, &err);      // NULL: busy / too many
 *     kvs_json_schema_to_gbnf_in(kvs_glease_arena(l), ...); kvs_grammar_parse_in(...)
 *     kvs_glease_bind(l, g);            // or kvs_glease_cancel(l) on failure
 *     ... engine: kvs_gpool_matcher(g, strip, &m, &err) ... kvs_gmatcher_free(m)
 *     kvs_grammar_unref(g);             // the last one returns the lease
 *
 * Thread-safe (one mutex); take, matcher and the returns allocate nothing.
 */
#ifndef KVS_GRAMMAR_GPOOL_H
#define KVS_GRAMMAR_GPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "grammar/grammar.h"
#include "grammar/matcher.h"
#include "tokenizer/tokenizer.h"

#define KVS_GPOOL_DEFAULT_SLOTS_MAX 8             /* default slots: min(max_num_seqs, this) */
#define KVS_GPOOL_DEFAULT_ARENA ((size_t)512 << 10) /* --max-grammar-bytes */
#define KVS_GPOOL_MIN_ARENA ((size_t)16 << 10)

typedef struct kvs_gpool_limits {
    int32_t slots;                 /* matchers, and compile arenas (>= 1) */
    size_t arena_bytes;            /* one request's compile arena */
    kvs_gmatcher_limits matcher;
} kvs_gpool_limits;

typedef struct kvs_gpool kvs_gpool;
typedef struct kvs_glease kvs_glease;

/* The resident bytes a pool with limits l takes for tokenizer t (the
 * vocabulary trie, the matchers, the arenas and the bookkeeping). */
uint64_t kvs_gpool_bytes(const kvs_gpool_limits *l, const kvs_tokenizer *t);

/* Make the pool (every byte allocated and touched now). */
kvs_status kvs_gpool_new(kvs_gpool **out, const kvs_tokenizer *t, const kvs_gpool_limits *l, kvs_error *err);
/* Free it (NULL: no-op); every lease and matcher must be back. */
void kvs_gpool_free(kvs_gpool *p);
const kvs_gpool_limits *kvs_gpool_limits_of(const kvs_gpool *p);

/* A lease of one compile arena and n_seqs matchers into *out;
 * KVS_E_BUDGET when not enough are free now, KVS_E_INVALID when n_seqs is
 * more than the pool holds. */
kvs_status kvs_gpool_take(kvs_gpool *p, int32_t n_seqs, kvs_glease **out, kvs_error *err);
kvs_garena *kvs_glease_arena(kvs_glease *l);
/* g (compiled in the lease's arena, one reference) now owns the lease. */
void kvs_glease_bind(kvs_glease *l, kvs_grammar *g);
/* Give an unbound lease back (the compile failed). */
void kvs_glease_cancel(kvs_glease *l);
/* Whether the arena ran out during the compile (a KVS_E_NOMEM from a
 * compiler then means: does not fit --max-grammar-bytes). */
bool kvs_glease_full(const kvs_glease *l);

/* Whether g came from a pool's lease. */
bool kvs_gpool_owns(const kvs_grammar *g);
/* One of g's leased matchers, started at g (KVS_E_BUDGET if its lease has
 * no matcher left: more sequences than it was taken for). */
kvs_status kvs_gpool_matcher(kvs_grammar *g, bool strip_first_space, kvs_gmatcher **out, kvs_error *err);

typedef struct kvs_gpool_stats {
    int32_t slots;                 /* matchers (and arenas) */
    int32_t matchers_in_use;       /* taken by requests or held by leases */
    int32_t leases_in_use;         /* arenas in use */
    int32_t high_water;            /* most matchers in use at once */
    uint64_t refused_busy;         /* takes refused: not enough free */
    uint64_t refused_too_big;      /* compiles that did not fit the arena (counted by the caller) */
    size_t arena_high_water;       /* most bytes a compile used */
    uint64_t bytes;                /* kvs_gpool_bytes */
} kvs_gpool_stats;
void kvs_gpool_get_stats(kvs_gpool *p, kvs_gpool_stats *st);
/* Count a compile that did not fit (for the stats). */
void kvs_gpool_count_too_big(kvs_gpool *p);

#endif
