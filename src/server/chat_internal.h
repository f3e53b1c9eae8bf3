/*
 * chat_internal.h - pieces shared by the chat-template renderers (private to
 * src/server/chat_*.c).
 *
 * The renderers reproduce what Jinja2 computes, so the string helpers here
 * follow Python's str semantics exactly: kvs_chat_py_strip() removes the
 * characters for which Python's str.isspace() is true (ASCII whitespace,
 * \x1c-\x1f, NEL, NBSP, the Unicode space separators, ...), which is what both
 * str.strip() and Jinja's |trim do.  Spans point into the caller's strings;
 * nothing is copied until it is appended to a kvs_chat_buf.
 */
#ifndef KVS_SERVER_CHAT_INTERNAL_H
#define KVS_SERVER_CHAT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "server/chat_template.h"

/* A growable output string; `oom` latches the first allocation failure so
 * that renderers can append freely and check once at the end. */
typedef struct kvs_chat_buf {
    char *p;
    size_t len, cap;
    bool oom;
} kvs_chat_buf;

void kvs_chat_buf_put(kvs_chat_buf *b, const char *s, size_t n);
void kvs_chat_buf_puts(kvs_chat_buf *b, const char *s);
void kvs_chat_buf_free(kvs_chat_buf *b);

/* A slice of a string (not NUL-terminated). */
typedef struct kvs_chat_span {
    const char *p;
    size_t n;
} kvs_chat_span;

kvs_chat_span kvs_chat_span_of(const char *s);
void kvs_chat_buf_span(kvs_chat_buf *b, kvs_chat_span s);

enum { KVS_CHAT_LEFT = 1, KVS_CHAT_RIGHT = 2, KVS_CHAT_BOTH = 3 };

/* Python str.strip()/lstrip()/rstrip() with no argument (also Jinja |trim). */
kvs_chat_span kvs_chat_py_strip(kvs_chat_span s, int sides);
/* Python str.strip(c)/lstrip(c)/rstrip(c) for one ASCII character. */
kvs_chat_span kvs_chat_strip_char(kvs_chat_span s, char c, int sides);

/* Python `needle in s`, s.startswith(), s.endswith(). */
bool kvs_chat_contains(kvs_chat_span s, const char *needle);
bool kvs_chat_starts(kvs_chat_span s, const char *prefix);
bool kvs_chat_ends(kvs_chat_span s, const char *suffix);
/* s.split(sep)[0] and s.split(sep)[-1]. */
kvs_chat_span kvs_chat_split_first(kvs_chat_span s, const char *sep);
kvs_chat_span kvs_chat_split_last(kvs_chat_span s, const char *sep);

/* Scan a template as Jinja's lexer would (trim_blocks, lstrip_blocks; see
 * chat_scan.c).  Returns 0 when it can print literal text outside its
 * {{ }} / {% %} tags after whitespace control (or has something the scanner
 * does not model), 1 when all output comes from tags, -1 when out of memory.
 * On 1, if tags_out is not NULL, *tags_out is a malloc'ed array of the
 * template's {{ }} and {% %} tags in order (spans into `t`; comments and the
 * whitespace between tags, which prints nothing, left out) and *n_out their
 * number (*tags_out is NULL when there are none). */
int kvs_chat_template_tags(const char *t, kvs_chat_span **tags_out, size_t *n_out);

/*
 * Fingerprints.  A segment is a run of consecutive tags, stored only as its
 * length in tags, a 64-bit hash of their text and the number of its first
 * statement in the reference template (no template text is kept in the
 * source).  The hash of one tag is FNV-1a 64 of its bytes; the hash of a
 * run is h = KVS_CHAT_SEG_SEED, then h = kvs_chat_mix64(h ^ tag_hash) per tag
 * (tests/tools/gen_chat_markers.py computes the same in Python).
 */
#define KVS_CHAT_SEG_SEED UINT64_C(0x6a09e667f3bcc909)

typedef struct kvs_chat_segment {
    uint32_t ntags;
    uint64_t hash;
    uint32_t first; /* its first tag's statement number in the reference template */
} kvs_chat_segment;

typedef struct kvs_chat_fingerprint {
    const kvs_chat_segment *seg;
    size_t nseg;
} kvs_chat_fingerprint;

/* FNV-1a 64 of the bytes of `s`. */
uint64_t kvs_chat_tag_hash(kvs_chat_span s);
/* The splitmix64 finaliser (a bijection on 64-bit values). */
uint64_t kvs_chat_mix64(uint64_t z);
/* The hash of a run of n tags, given their kvs_chat_tag_hash values. */
uint64_t kvs_chat_seg_hash(const uint64_t *tag_hashes, size_t n);

/* Does the tag list (given by the hashes of its n tags) match fingerprint
 * `fp`: segment 0 at the start, the last segment at the end, the others in
 * order between them without overlap, each at a run of consecutive tags
 * (a segment of 0 tags at either end stands for a gap there)? */
bool kvs_chat_fingerprint_matches(const kvs_chat_fingerprint *fp, const uint64_t *tag_hashes,
                                  size_t n);
/* The same, and on a match, if `pos` is not NULL, pos[i] is the index of the
 * first tag of segment i (fp->nseg entries). */
bool kvs_chat_fingerprint_locate(const kvs_chat_fingerprint *fp, const uint64_t *tag_hashes,
                                 size_t n, size_t *pos);

/* The tag of template `tmpl` that is statement `stmt` (numbered from 1 as in
 * chat_markers.c) of format f's reference template: found through the
 * fingerprint, so it is byte for byte that statement.  Fails with
 * KVS_E_INVALID when `tmpl` is not a template of format f (or stmt is not a
 * statement the fingerprint pins), KVS_E_NOMEM when out of memory.  *out
 * points into `tmpl`. */
kvs_status kvs_chat_template_statement(const char *tmpl, kvs_chat_format f, uint32_t stmt,
                                       kvs_chat_span *out, kvs_error *err);

/*
 * Values of template statements (chat_literal.c).  Some formats print text
 * that lives in the template itself (a default system message); the renderer
 * takes it from the model's template at render time instead of keeping a copy.
 * Supported statements: "{{ EXPR }}" and "{% set NAME = EXPR %}" (whitespace
 * control modifiers allowed) where EXPR is string literals and variable names
 * joined by "+" (adjacent literals are joined, as Jinja does).  A literal is
 * unescaped exactly as Jinja2's lexer does it: newlines normalised to "\n",
 * then Python's "unicode-escape" codec on the text with non-ASCII characters
 * backslash-escaped.  Escapes that cannot be represented in a C string (NUL,
 * lone surrogates) and "\N{name}" are refused with KVS_E_UNSUPPORTED.
 */
typedef struct kvs_chat_var {
    const char *name, *value;
} kvs_chat_var;

/* Append the value of one Jinja string literal `lit` (with its quotes) to b. */
kvs_status kvs_chat_literal_value(kvs_chat_span lit, kvs_chat_buf *b, kvs_error *err);

/* Append the value of EXPR (see above) to b; names are looked up in vars. */
kvs_status kvs_chat_expr_value(kvs_chat_span expr, const kvs_chat_var *vars, size_t nvars,
                               kvs_chat_buf *b, kvs_error *err);

/* Append the value of the tag `tag`: "{{ EXPR }}" when set_name is NULL, else
 * "{% set <set_name> = EXPR %}".  Any other statement is KVS_E_INVALID. */
kvs_status kvs_chat_tag_value(kvs_chat_span tag, const char *set_name,
                              const kvs_chat_var *vars, size_t nvars, kvs_chat_buf *b,
                              kvs_error *err);

/* Message roles after validation. */
typedef enum kvs_chat_role { KVS_ROLE_SYSTEM, KVS_ROLE_USER, KVS_ROLE_ASSISTANT } kvs_chat_role;

/* What the renderers get: validated messages with parsed roles, and the
 * options with NULL strings replaced by "" and the date formatted. */
typedef struct kvs_chat_ctx {
    const kvs_chat_msg *msgs;
    const kvs_chat_role *roles;
    size_t n;
    bool gen;              /* add_generation_prompt */
    const char *bos, *eos; /* never NULL */
    const char *date_string; /* NULL when not passed */
    char date_dmy[48];     /* strftime_now("%d %b %Y"), e.g. "26 Jul 2024" */
    char date_iso[48];     /* strftime_now("%Y-%m-%d"), e.g. "2024-07-26" */
    bool disable_thinking;
    kvs_chat_format format;
    const char *template_text; /* the model's template; NULL when not passed */
} kvs_chat_ctx;

/* Append the value of statement `stmt` of c->template_text (see
 * kvs_chat_template_statement and kvs_chat_tag_value). */
kvs_status kvs_chat_template_value(const kvs_chat_ctx *c, uint32_t stmt, const char *set_name,
                                   const kvs_chat_var *vars, size_t nvars, kvs_chat_buf *b,
                                   kvs_error *err);

/* Per format, the fingerprint of its template (generated chat_markers.c),
 * see kvs_chat_detect. */
extern const kvs_chat_fingerprint kvs_chat_fingerprints[KVS_CHAT_FORMAT_COUNT];

/* Renderers: append the prompt to `b`, or fail with the template's error. */
kvs_status kvs_chat_render_llama2(const kvs_chat_ctx *c, kvs_chat_buf *b, kvs_error *err);
kvs_status kvs_chat_render_llama3(const kvs_chat_ctx *c, bool dated, kvs_chat_buf *b,
                                  kvs_error *err);
kvs_status kvs_chat_render_mistral_v3(const kvs_chat_ctx *c, kvs_chat_buf *b, kvs_error *err);
kvs_status kvs_chat_render_mistral_nemo(const kvs_chat_ctx *c, kvs_chat_buf *b, kvs_error *err);
kvs_status kvs_chat_render_mistral_small3(const kvs_chat_ctx *c, kvs_chat_buf *b,
                                          kvs_error *err);
kvs_status kvs_chat_render_chatml(const kvs_chat_ctx *c, kvs_chat_buf *b, kvs_error *err);
kvs_status kvs_chat_render_qwen2_5(const kvs_chat_ctx *c, kvs_chat_buf *b, kvs_error *err);
kvs_status kvs_chat_render_qwen3(const kvs_chat_ctx *c, kvs_chat_buf *b, kvs_error *err);
kvs_status kvs_chat_render_gemma(const kvs_chat_ctx *c, kvs_chat_buf *b, kvs_error *err);
kvs_status kvs_chat_render_phi3(const kvs_chat_ctx *c, kvs_chat_buf *b, kvs_error *err);
kvs_status kvs_chat_render_deepseek_r1(const kvs_chat_ctx *c, kvs_chat_buf *b, kvs_error *err);

#endif
