/*
 * grammar.h - context-free grammars over bytes, written in GBNF.
 *
 * Structured output constrains generation to a language: a JSON schema, a
 * regular expression, a list of choices or a grammar the client wrote.
 * Every one of them is compiled to GBNF text (llama.cpp's grammar syntax)
 * and parsed here into one small representation that the matcher
 * (matcher.h) runs over the model's tokens:
 *
 *     root   ::= "{" ws "\"name\":" ws string "}"   # a rule: alternatives of sequences
 *     string ::= "\"" [^"\\]{0,20} "\""               # literals, classes, repetition
 *     ws     ::= [ \t\n]*                              # comments run to the end of the line
 *
 * GBNF, as llama.cpp reads it: `name ::= alternatives`, alternatives
 * separated by `|`, sequences of items; an item is a "literal" (escapes
 * \n \r \t \\ \" \xHH \uHHHH \UHHHHHHHH), a character class [a-z0-9_]
 * (negated with ^, ranges, the same escapes), `.` (any character), a rule
 * name, or a (group); each may be followed by `*`, `+`, `?`, `{m}`,
 * `{m,}` or `{m,n}`.  A rule ends at the end of a line unless the line ends
 * inside parentheses or right after `|` or `::=`.  The start rule is `root`.
 *
 * The compiled form works on bytes, not characters: a class of Unicode
 * code points becomes the alternatives of UTF-8 byte sequences that encode
 * exactly them (surrogates excluded), so that a token that ends in the
 * middle of a character is matched byte by byte like any other, and the
 * output is always valid UTF-8.  Each rule is a list of alternatives; each
 * alternative is a sequence of elements ending in END, where an element is
 * a set of bytes (a 256-bit set) or a reference to a rule.  Repetition is
 * rewritten with fresh rules (x* -> R ::= x R | ε, tail-recursive so the
 * matcher's stacks stay flat; x{m,n} -> m copies and n-m nested options).
 *
 * Left recursion (a rule that can reach itself before consuming a byte) is
 * rejected, as in llama.cpp: a top-down matcher could not expand it.
 * A compiled grammar is immutable and reference counted, so requests on
 * other threads can share it.
 */
#ifndef KVS_GRAMMAR_GRAMMAR_H
#define KVS_GRAMMAR_GRAMMAR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

/* ---- the compile arena ----
 *
 * Compiling a constraint (a schema to GBNF text, the text to a grammar)
 * allocates as it goes.  A server compiles into a fixed arena per
 * structured-output slot (gpool.h), so that a request's grammar can never
 * take more than the slot's bytes: every allocation of the compilers goes
 * through these calls, which bump-allocate from the arena (a block freed
 * or grown while it is the newest is popped or extended in place; others
 * stay until kvs_garena_reset) and return NULL, setting `full`, when it is
 * spent.  A NULL arena means malloc/realloc/free (tests, tools). */
typedef struct kvs_garena {
    unsigned char *base;
    size_t cap;                  /* bytes */
    size_t used, hwm;            /* bump offset now, and the most since the last reset */
    size_t last;                 /* offset of the newest block's header, or SIZE_MAX */
    bool full;                   /* an allocation did not fit */
} kvs_garena;

/* An arena over `cap` bytes at base (the caller's memory). */
void kvs_garena_init(kvs_garena *a, void *base, size_t cap);
void kvs_garena_reset(kvs_garena *a);
/* Bytes an arena uses for an allocation of n (its header and alignment). */
size_t kvs_garena_block_bytes(size_t n);
void *kvs_galloc(kvs_garena *a, size_t n);
void *kvs_gcalloc(kvs_garena *a, size_t n, size_t size);
void *kvs_grealloc(kvs_garena *a, void *p, size_t n);
void kvs_gfree(kvs_garena *a, void *p);
char *kvs_gstrdup(kvs_garena *a, const char *s);

typedef enum kvs_gelem_type {
    KVS_GE_END = 0,   /* end of an alternative */
    KVS_GE_SET,       /* one byte from sets[arg] */
    KVS_GE_REF,       /* rule arg */
} kvs_gelem_type;

typedef struct kvs_gelem {
    uint32_t type;    /* kvs_gelem_type */
    int32_t arg;
} kvs_gelem;

typedef struct kvs_grammar {
    int32_t n_rules;
    int32_t *alt_begin;          /* [n_rules + 1]: rule r's alternatives are alts[alt_begin[r] .. alt_begin[r+1]) */
    int32_t *alts;               /* element index where each alternative starts */
    int32_t n_alts;
    kvs_gelem *elems;            /* [n_elems] */
    int32_t n_elems;
    uint64_t (*sets)[4];         /* [n_sets] 256-bit byte sets */
    int32_t n_sets;
    int32_t root;                /* the start rule */
    char **rule_names;           /* [n_rules] (generated rules are named after their parent) */
    int refs;                    /* atomic reference count */
    kvs_garena *arena;           /* where it lives (NULL: malloc'ed) */
    void (*release)(void *ctx);  /* arena grammars: called when the last reference goes */
    void *release_ctx;
} kvs_grammar;

/* Limits that keep a hostile grammar from exhausting memory or time. */
#define KVS_GRAMMAR_MAX_ELEMS (1 << 20)   /* elements after expansion */
#define KVS_GRAMMAR_MAX_REPEAT 10000      /* m and n in {m,n} */

/* Parse GBNF text (len bytes, not necessarily NUL-terminated) into *out
 * (one reference, the caller's).  Errors name the line and column and
 * what was wrong ("line 3, col 7: undefined rule 'vaule'", "left
 * recursion in rule 'expr'"). */
kvs_status kvs_grammar_parse(kvs_grammar **out, const char *text, size_t len, kvs_error *err);
/* The same, everything allocated from arena ar (its temporaries too). */
kvs_status kvs_grammar_parse_in(kvs_garena *ar, kvs_grammar **out, const char *text, size_t len, kvs_error *err);

/* Take one more reference / drop one (the last frees; NULL: no-op). */
kvs_grammar *kvs_grammar_ref(kvs_grammar *g);
void kvs_grammar_unref(kvs_grammar *g);

/* Whether byte b is in byte set s. */
static inline bool kvs_gset_has(const uint64_t s[4], uint8_t b) { return (s[b >> 6] >> (b & 63)) & 1u; }

/* ---- compilers to GBNF (the output is malloc'ed, NUL-terminated; the
 * _in forms allocate it and their temporaries from an arena) ---- */

/* A regular expression (the full output must match it, as vLLM's
 * guided_regex does) -> GBNF.  Supported: literals and escapes, `.`,
 * classes with ranges and negation, \d \w \s \D \W \S, groups (capturing,
 * (?:...) and named), `|`, `*` `+` `?` `{m}` `{m,}` `{m,n}` (lazy and
 * possessive suffixes ignore their preference), `^` at the start and `$`
 * at the end.  Anything else (backreferences, lookaround, \b, inline
 * flags, anchors inside) is an error naming it. */
kvs_status kvs_regex_to_gbnf(const char *re, char **gbnf, kvs_error *err);
kvs_status kvs_regex_to_gbnf_in(kvs_garena *ar, const char *re, char **gbnf, kvs_error *err);

/* Append the regex as one GBNF expression (a group) to *expr.  With
 * json_string it describes the regex's strings as they are written inside
 * a JSON string (a schema's "pattern"): `"`, `\` and control characters
 * are written escaped where the regex names them literally and left out
 * of classes and `.`. */
struct kvs_gbuf;
kvs_status kvs_regex_to_gbnf_expr(const char *re, bool json_string, struct kvs_gbuf *expr, kvs_error *err);

/* guided_choice: an alternation of n literal strings -> GBNF. */
kvs_status kvs_choice_to_gbnf(const char *const *choices, size_t n, char **gbnf, kvs_error *err);
kvs_status kvs_choice_to_gbnf_in(kvs_garena *ar, const char *const *choices, size_t n, char **gbnf, kvs_error *err);

/* A JSON Schema (text) -> GBNF for the JSON texts that validate against
 * it.  See json_schema.c's top comment for what is supported; anything
 * else is an error naming the keyword ("unsupported schema keyword
 * 'patternProperties' at #/properties/a").  schema_text NULL means any
 * JSON object ({"type":"json_object"}). */
kvs_status kvs_json_schema_to_gbnf(const char *schema_text, size_t len, char **gbnf, kvs_error *err);
kvs_status kvs_json_schema_to_gbnf_in(kvs_garena *ar, const char *schema_text, size_t len, char **gbnf,
                                      kvs_error *err);

/* ---- code point ranges (character classes of GBNF and regex) ---- */
typedef struct kvs_cp_range {
    uint32_t lo, hi; /* inclusive */
} kvs_cp_range;

/* Sorts r[0, n) by lo and merges overlapping or adjacent ranges in place, so that r[0, k) are
 * disjoint, ascending and non-adjacent; returns k (<= n). */
size_t kvs_cp_ranges_merge(kvs_cp_range *r, size_t n);

/* ---- a small growable string (compilers' output) ---- */
typedef struct kvs_gbuf {
    char *s;
    size_t len, cap;
    bool oom;
    kvs_garena *ar;              /* where it grows (NULL: realloc) */
} kvs_gbuf;

void kvs_gbuf_put(kvs_gbuf *b, const char *s, size_t n);
void kvs_gbuf_puts(kvs_gbuf *b, const char *s);
void kvs_gbuf_printf(kvs_gbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Append s (n bytes of UTF-8) as a GBNF "literal", control characters
 * escaped. */
void kvs_gbuf_literal(kvs_gbuf *b, const char *s, size_t n);
void kvs_gbuf_free(kvs_gbuf *b);

#endif
