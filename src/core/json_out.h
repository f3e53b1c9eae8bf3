/*
 * json_out.h - write JSON into a fixed buffer the caller owns, allocating nothing.
 *
 * A streamed response sends one small JSON document per generated token.
 * Building each as a tree (jansson) and dumping it costs a dozen mallocs
 * per token; this writer instead appends the text straight into a buffer
 * sized once, so the serving loop's HTTP side allocates nothing per token.
 *
 *     char buf[256];
 *     kvs_jw w;
 *     kvs_jw_init(&w, buf, sizeof buf);
 *     kvs_jw_obj(&w);
 *     kvs_jw_key(&w, "text");  kvs_jw_str(&w, "hi\n", 3);
 *     kvs_jw_key(&w, "n");     kvs_jw_int(&w, 3);
 *     kvs_jw_end(&w);                        // {"text":"hi\n","n":3}
 *     if (kvs_jw_overflow(&w)) ...           // kvs_jw_len(&w) bytes were needed
 *
 * Commas and colons are placed by the writer: it keeps, per open object or
 * array (at most KVS_JW_MAX_DEPTH), whether a member was written.
 *
 * Overflow.  The writer never writes past `cap`.  Once the text no longer
 * fits it stops storing but keeps counting, so kvs_jw_len tells the size
 * the whole document needs (like snprintf): a caller can size a buffer
 * with a dry run on cap 0, or report a clean error.  The text is not
 * NUL-terminated.
 *
 * The output is the same text jansson's json_dumps(JSON_COMPACT) gives for
 * the same values (kvserve's responses do not change with the writer):
 *   strings   UTF-8 passes through; '"' and '\' and the control characters
 *             below 0x20 are escaped (\b \f \n \r \t, others \u00XX in upper
 *             case); '/' and DEL are not.  kvs_jw_str expects valid UTF-8
 *             (NUL bytes included: \u0000); kvs_jw_str_lossy writes every
 *             byte that does not start a valid sequence as U+FFFD.
 *   integers  in decimal.
 *   doubles   "%.17g" (enough digits to read back the same double), made a
 *             JSON real as jansson does: ".0" appended when there is neither
 *             '.' nor 'e', and the exponent without '+' or leading zeros
 *             (1e+20 -> 1e20, 1e-05 -> 1e-5).  JSON has no NaN or infinity:
 *             they are written as null (callers that want a number map them
 *             first, as the API writes -9999.0 for a -inf logprob).
 */
#ifndef KVS_CORE_JSON_OUT_H
#define KVS_CORE_JSON_OUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KVS_JW_MAX_DEPTH 64

typedef struct kvs_jw {
    char *buf;
    size_t cap;
    size_t len;                    /* bytes written or (past cap) needed */
    uint64_t has_member;           /* bit d: level d has a member (level 0: the top) */
    uint64_t is_arr;               /* bit d: level d is an array (else an object) */
    unsigned depth;
    bool after_key;                /* a key was written, its value is next */
    bool bad;                      /* misuse (too deep, unbalanced): the text is not valid JSON */
} kvs_jw;

/* Start a document in buf (cap bytes; buf may be NULL when cap is 0). */
void kvs_jw_init(kvs_jw *w, char *buf, size_t cap);
/* Bytes the document needs so far (more than cap when it overflowed). */
size_t kvs_jw_len(const kvs_jw *w);
/* The text did not fit in cap (or the writer was misused). */
bool kvs_jw_overflow(const kvs_jw *w);

void kvs_jw_obj(kvs_jw *w);        /* { */
void kvs_jw_arr(kvs_jw *w);        /* [ */
void kvs_jw_end(kvs_jw *w);        /* } or ], whichever is open */
/* A member's key (NUL-terminated, valid UTF-8); its value comes next. */
void kvs_jw_key(kvs_jw *w, const char *key);
/* The same for a key of n bytes. */
void kvs_jw_keyn(kvs_jw *w, const char *key, size_t n);
/* Values. */
void kvs_jw_str(kvs_jw *w, const char *s, size_t n);
void kvs_jw_str_lossy(kvs_jw *w, const char *s, size_t n);
void kvs_jw_cstr(kvs_jw *w, const char *s);   /* NUL-terminated kvs_jw_str */
void kvs_jw_int(kvs_jw *w, long long v);
void kvs_jw_double(kvs_jw *w, double v);
void kvs_jw_bool(kvs_jw *w, bool v);
void kvs_jw_null(kvs_jw *w);
/* n bytes verbatim, outside the JSON structure (e.g. SSE's "data: ").  Use
 * between documents only: it places no comma. */
void kvs_jw_raw(kvs_jw *w, const char *s, size_t n);
/* Start a new document after the current one (same buffer, appended):
 * resets the nesting state, keeps the text. */
void kvs_jw_next(kvs_jw *w);

/* Length of the valid UTF-8 sequence at s (n bytes available), or 0 when
 * s[0] does not start one (overlong forms, surrogates and code points past
 * U+10FFFF are invalid, as in jansson). */
size_t kvs_jw_utf8_seq(const unsigned char *s, size_t n);
/* Whether all n bytes are valid UTF-8. */
bool kvs_jw_utf8_valid(const char *s, size_t n);

/* Worst-case bytes of a value: a string of n bytes (any bytes: each may
 * become \u00XX), a double, an integer. */
#define KVS_JW_STR_MAX(n) (6 * (size_t)(n) + 2)
#define KVS_JW_DOUBLE_MAX 26
#define KVS_JW_INT_MAX 21

#endif
