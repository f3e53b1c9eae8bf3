/*
 * matcher.h - which tokens keep the output inside a grammar.
 *
 * A request with structured output carries a matcher: the state of a
 * pushdown automaton over the grammar's bytes (grammar.h).  The state is a
 * set of stacks; a stack is a chain of frames "continue at element pos,
 * then return to the parent frame", and the top frame of each stack sits
 * on a byte set.  Advancing by a byte keeps the stacks whose top set holds
 * it and expands them (rule references push the rule's alternatives, the
 * end of an alternative pops to the parent) until every top sits on a byte
 * set again.  A reference that is the last element of its alternative
 * pushes nothing to return to (a tail call), so repetitions keep stacks
 * flat; frames are immutable and shared between stacks; equal stacks are
 * merged.  The grammar may end when some expansion popped the last frame.
 *
 * Each step the engine asks for a mask: the tokens whose bytes can follow.
 * Tokens are walked as a byte trie (kvs_gvocab, built once per tokenizer)
 * depth first, advancing the state byte by byte and skipping a whole
 * subtree as soon as no stack survives: most of the vocabulary is cut at
 * its first byte.  The mask of a state is kept in a per-request cache
 * keyed by the state itself (its stacks, exactly), so the states a JSON
 * document keeps coming back to (inside a string, between array items)
 * cost one lookup after their first visit.  End-of-generation tokens are
 * allowed exactly when the grammar can end; tokens that decode to no bytes
 * (other control tokens) never are.
 *
 * Memory: everything a matcher uses (frames, the per-depth states of the
 * trie walk, the mask, the cache) is allocated when it is made, sized by
 * kvs_gmatcher_limits; a step allocates nothing.  A state that would not
 * fit is treated as a dead end (the byte is refused), never an overflow.
 */
#ifndef KVS_GRAMMAR_MATCHER_H
#define KVS_GRAMMAR_MATCHER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "grammar/grammar.h"
#include "tokenizer/tokenizer.h"

/* The vocabulary as the matcher sees it: each token's bytes (what the
 * detokenizer prints for it) in a byte trie stored in depth-first order. */
typedef struct kvs_gvocab kvs_gvocab;

/* Build the trie of t's tokens.  Immutable afterwards (shareable). */
kvs_status kvs_gvocab_new(kvs_gvocab **out, const kvs_tokenizer *t, kvs_error *err);
void kvs_gvocab_free(kvs_gvocab *v);
int32_t kvs_gvocab_n_vocab(const kvs_gvocab *v);
/* Bytes the trie and token tables take. */
size_t kvs_gvocab_bytes(const kvs_gvocab *v);
/* The resident bytes kvs_gvocab_new(t) takes (every allocation it keeps,
 * page-rounded), measured on a trie built and freed here (a few ms at
 * 128k tokens); and (if not NULL) the longest token's bytes, which sizes
 * a matcher.  0 when out of memory. */
size_t kvs_gvocab_reserve_bytes(const kvs_tokenizer *t, size_t *max_token_bytes);

typedef struct kvs_gmatcher_limits {
    int32_t max_frames;          /* stack frames alive at once (committed + the trie walk) */
    int32_t max_tops;            /* stack tops over all depths of the trie walk */
    int32_t cache_entries;       /* masks kept per request */
} kvs_gmatcher_limits;

kvs_gmatcher_limits kvs_gmatcher_default_limits(void);

typedef struct kvs_gmatcher kvs_gmatcher;

typedef struct kvs_gmatcher_stats {
    uint64_t masks, cache_hits;  /* masks asked for, and answered from the cache */
    uint64_t nodes_visited;      /* trie nodes the walks visited */
    uint64_t overflows;          /* bytes refused because a state did not fit */
} kvs_gmatcher_stats;

/* A matcher at the start of g (which it references) over vocabulary v
 * (which must outlive it; NULL for a byte-only matcher that cannot make
 * masks).  strip_first_space: the first token's leading space is not part
 * of the output (the detokenizer drops it), so the grammar does not see
 * it.  lim NULL: the defaults. */
kvs_status kvs_gmatcher_new(kvs_gmatcher **out, kvs_grammar *g, const kvs_gvocab *v, bool strip_first_space,
                            const kvs_gmatcher_limits *lim, kvs_error *err);
void kvs_gmatcher_free(kvs_gmatcher *m);
/* The resident bytes a matcher over a vocabulary of n_vocab whose longest
 * token has max_token_bytes takes with limits lim (NULL: the defaults):
 * every allocation kvs_gmatcher_new makes, page-rounded. */
size_t kvs_gmatcher_bytes(int32_t n_vocab, size_t max_token_bytes, const kvs_gmatcher_limits *lim);

/* Reuse (the structured-output slots of gpool.h): a matcher made once
 * with no grammar, started at a grammar for each request and stopped
 * after it.  kvs_gmatcher_alloc makes (and touches) all its memory;
 * kvs_gmatcher_start references g and puts the matcher at its start
 * (allocating nothing; KVS_E_INVALID if the start state does not fit);
 * kvs_gmatcher_stop drops the grammar.  With a home set, kvs_gmatcher_free
 * stops the matcher and hands it to home(ctx, m) instead of freeing it. */
kvs_status kvs_gmatcher_alloc(kvs_gmatcher **out, const kvs_gvocab *v, const kvs_gmatcher_limits *lim,
                              kvs_error *err);
kvs_status kvs_gmatcher_start(kvs_gmatcher *m, kvs_grammar *g, bool strip_first_space, kvs_error *err);
void kvs_gmatcher_stop(kvs_gmatcher *m);
void kvs_gmatcher_set_home(kvs_gmatcher *m, void (*home)(void *ctx, kvs_gmatcher *m), void *ctx);

/* The allowed tokens now, as a bitset of n_vocab bits (bit i of word i/32);
 * *n_allowed gets their number.  Valid until the next call. */
const uint32_t *kvs_gmatcher_mask(kvs_gmatcher *m, int32_t *n_allowed);
/* Set the logits (a row of n_logits; ids past the vocabulary count as not
 * allowed) of tokens not allowed to -inf; returns how many are allowed
 * (0: a dead end, nothing can follow). */
int32_t kvs_gmatcher_mask_logits(kvs_gmatcher *m, float *logits, int32_t n_logits);
/* Advance by a token.  False (and the state unchanged) if the token is not
 * allowed.  An end-of-generation token is allowed when the grammar can end. */
bool kvs_gmatcher_accept_token(kvs_gmatcher *m, int32_t token);
/* Advance by raw bytes (tests, byte-only matchers); false and unchanged if
 * they leave the grammar. */
bool kvs_gmatcher_accept_bytes(kvs_gmatcher *m, const char *s, size_t n);
/* The output so far is a complete sentence of the grammar. */
bool kvs_gmatcher_can_end(const kvs_gmatcher *m);
/* Complete, and no byte can follow: generation is over. */
bool kvs_gmatcher_done(const kvs_gmatcher *m);
/* Make dst's state (not its cache) that of src; both over the same grammar
 * and limits (else KVS_E_INVALID).  Allocates nothing. */
kvs_status kvs_gmatcher_copy_state(kvs_gmatcher *dst, const kvs_gmatcher *src, kvs_error *err);
void kvs_gmatcher_get_stats(const kvs_gmatcher *m, kvs_gmatcher_stats *st);

#endif
