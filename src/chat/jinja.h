/*
 * jinja.h - a sandboxed Jinja2 interpreter for chat templates.
 *
 * Models ship their chat format as a Jinja2 template.  Hugging Face
 * transformers renders it with an ImmutableSandboxedEnvironment with
 * trim_blocks and lstrip_blocks on, the loopcontrols extension (break /
 * continue), a `tojson` filter that is json.dumps(ensure_ascii=False, indent,
 * separators, sort_keys), and the globals raise_exception(msg) and
 * strftime_now(fmt).  This module implements that language in C so that the
 * model's own template produces, byte for byte, what transformers feeds the
 * model:
 *
 *     kvs_jinja *t;
 *     if (kvs_jinja_parse(src, strlen(src), &t, &err) != KVS_OK) ...  // syntax error
 *     json_t *vars = json_pack("{s:o, s:b}", "messages", msgs, "add_generation_prompt", 1);
 *     char *out; size_t n;
 *     kvs_jinja_render(t, vars, NULL, &out, &n, &err);   // out is malloc'ed
 *     kvs_jinja_free(t);
 *
 * The pipeline is the classic one: a lexer (jinja_lex.c) that applies
 * Jinja2's whitespace rules while cutting the source into text and tag
 * tokens, a recursive-descent parser (jinja_parse.c) that builds an AST, and
 * a tree-walking evaluator (jinja_eval.c) over a small value model
 * (jinja_value.c: undefined, none, bool, int, float, string, list, dict,
 * callables) with Python's semantics: repr() printing of lists and dicts,
 * truthiness, comparisons, slicing, str/dict methods and Jinja2's filters
 * and tests (jinja_builtins.c).  Undefined values behave as Jinja2's default
 * Undefined: they print as "", iterate as empty, are false, and raise when an
 * attribute is taken from them.
 *
 * Sandbox: templates cannot reach files, the environment or the clock
 * (strftime_now reads the time given in the options).  Every render is
 * bounded: nesting depth, output bytes, memory, and evaluation steps (loop
 * iterations and calls), so a hostile template fails with a clean error.
 * All the memory of a render lives in one arena released at the end; inside
 * the interpreter errors unwind with longjmp to the entry point, which is
 * why no internal function returns a status.
 *
 * Errors: a syntax error is KVS_E_INVALID from kvs_jinja_parse ("line N:
 * ...").  At render time raise_exception(msg) fails with KVS_E_INVALID and
 * exactly `msg` as the message (kvs_jinja_render_opts.raised tells it apart
 * from other errors, which read like Jinja2's: "'foo' is undefined").
 * A limit that is hit is KVS_E_BUDGET.
 */
#ifndef KVS_CHAT_JINJA_H
#define KVS_CHAT_JINJA_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "core/status.h"

typedef struct kvs_jinja kvs_jinja;

typedef struct kvs_jinja_opts {
    time_t now;            /* what strftime_now formats (local time); 0 = 2024-07-26 13:05:00 */
    size_t max_output;     /* bytes of output; 0 = 16 MiB */
    size_t max_memory;     /* arena bytes; 0 = 256 MiB */
    uint64_t max_steps;    /* loop iterations + calls + outputs; 0 = 20 million */
    int max_depth;         /* nested macro calls / expression depth; 0 = 200 */
    bool raised;           /* out: the failure came from raise_exception */
} kvs_jinja_opts;

/* Parse template source (len bytes, need not be NUL-terminated).  On success
 * *out owns the compiled template (kvs_jinja_free).  A syntax error or an
 * unsupported tag (include, extends, import) is KVS_E_INVALID with the line. */
kvs_status kvs_jinja_parse(const char *src, size_t len, kvs_jinja **out, kvs_error *err);

/* Free a template; NULL is a no-op. */
void kvs_jinja_free(kvs_jinja *t);

/* Render `t` with the variables of JSON object `vars` (may be NULL).  JSON
 * types map to Python's (integers stay int, reals float, object key order is
 * kept).  `opts` may be NULL (defaults); when given, opts->raised is set.
 * On success *out is a malloc'ed NUL-terminated string of *out_len bytes
 * (out_len may be NULL); on failure *out is NULL.  A template is read-only
 * during rendering, so one template may be rendered by many threads. */
kvs_status kvs_jinja_render(const kvs_jinja *t, json_t *vars, kvs_jinja_opts *opts, char **out, size_t *out_len,
                            kvs_error *err);

/* json.dumps(v, ensure_ascii=False) as Python writes it (", " and ": "
 * separators, floats as repr()), malloc'ed; NULL when out of memory. */
char *kvs_jinja_json_dumps(const json_t *v);

#endif
