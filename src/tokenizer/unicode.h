/*
 * unicode.h - the little Unicode the tokenizers need: UTF-8 decoding and
 * encoding with llama.cpp's error behaviour, the general-category class of
 * a code point (letter, number, punctuation, ...) and the White_Space
 * property.
 *
 * Categories come from a generated table of runs (unicode_data.c, made by
 * tools/gen_unicode_tables.py from Python's unicodedata); a lookup is a
 * binary search, with a direct table for ASCII.
 */
#ifndef KVS_TOKENIZER_UNICODE_H
#define KVS_TOKENIZER_UNICODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* General-category classes: the first letter of the Unicode category.
 * Unassigned code points (Cn) are in KVS_UCAT_C. */
enum kvs_ucat {
    KVS_UCAT_C = 0, /* control, format, private use, surrogate, unassigned */
    KVS_UCAT_L = 1, /* letter */
    KVS_UCAT_N = 2, /* number */
    KVS_UCAT_P = 3, /* punctuation */
    KVS_UCAT_S = 4, /* symbol */
    KVS_UCAT_M = 5, /* mark */
    KVS_UCAT_Z = 6, /* separator */
};

/* Generated tables (unicode_data.c). */
extern const char kvs_ucat_unicode_version[];
extern const size_t kvs_ucat_n_runs;
extern const uint32_t kvs_ucat_runs[];

/* Class of code point `cp` (KVS_UCAT_C for values past U+10FFFF). */
enum kvs_ucat kvs_ucat_of(uint32_t cp);
/* Unicode White_Space property (\s in the pre-tokenizer regexes). */
bool kvs_ucat_is_space(uint32_t cp);

/* Length of the UTF-8 sequence a lead byte announces, as llama.cpp's
 * unicode_len_utf8 (by the high nibble: 1, 2, 3 or 4; a stray
 * continuation byte counts 1). */
size_t kvs_utf8_len(uint8_t lead);

/* Decode one code point at s[*pos] (len bytes in all) and advance *pos.
 * Invalid or truncated sequences give U+FFFD and advance one byte. */
uint32_t kvs_utf8_decode(const char *s, size_t len, size_t *pos);

/* Encode cp (< 0x110000) into out (4 bytes); returns the length. */
size_t kvs_utf8_encode(uint32_t cp, char *out);

/* Strict UTF-8 check of the sequence starting at s[0] (len > 0 bytes
 * available): returns its length (1..4) when complete and valid, 0 when
 * the bytes so far are a valid start that needs more bytes, and -1 when
 * s[0] cannot start a valid sequence here (bad lead, bad continuation,
 * overlong form, surrogate or value past U+10FFFF). */
int kvs_utf8_check(const uint8_t *s, size_t len);

#endif
