/*
 * tok_testlib.h - helpers shared by the tokenizer tests: reading shared
 * data (KVS_SHARED), loading a tokenizer from a GGUF, and parsing
 * llama.cpp's vocabulary test vectors.
 */
#ifndef KVS_TESTS_TOK_TESTLIB_H
#define KVS_TESTS_TOK_TESTLIB_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "formats/gguf.h"
#include "tokenizer/tokenizer.h"

#define SEP "\n__ggml_vocab_test__\n"

static inline const char *shared_dir(void)
{
    const char *d = getenv("KVS_SHARED");
    return d ? d : "../shared";
}

static inline char *read_all(const char *path, size_t *len)
{
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    for (size_t got; buf && (got = fread(buf + n, 1, cap - n, f)) > 0;) {
        n += got;
        if (n == cap) {
            char *b = realloc(buf, cap *= 2);
            if (!b) {
                free(buf);
                buf = NULL;
            }
            buf = b;
        }
    }
    fclose(f);
    if (buf) {
        buf[n] = 0;
        *len = n;
    }
    return buf;
}

static inline kvs_tokenizer *load_tok(const char *path)
{
    kvs_gguf *g = NULL;
    kvs_error err = {0};
    if (kvs_gguf_open(&g, path, &err) != KVS_OK) {
        print_error("open %s: %s\n", path, err.msg);
        return NULL;
    }
    kvs_tokenizer *t = NULL;
    kvs_status st = kvs_tok_load(&t, g, &err);
    kvs_gguf_close(g);
    if (st != KVS_OK)
        print_error("load %s: %s\n", path, err.msg);
    return t;
}

/* One vocabulary's vectors. */
typedef struct vectors {
    size_t n;
    char *text[64];
    size_t len[64];
    int32_t *ids[64];
    size_t n_ids[64];
    char *inp, *out;
} vectors;

static inline void vectors_free(vectors *v)
{
    for (size_t i = 0; i < v->n; i++)
        free(v->ids[i]);
    free(v->inp);
    free(v->out);
}

/* Parse NAME.inp (strings each ended by SEP) and NAME.out (one line of ids each). */
static inline void read_vectors(const char *base, vectors *v)
{
    char path[1100]; /* base is at most 1024 bytes */
    size_t inp_len, out_len;
    memset(v, 0, sizeof(*v));
    snprintf(path, sizeof(path), "%s.inp", base);
    v->inp = read_all(path, &inp_len);
    assert_non_null(v->inp);
    snprintf(path, sizeof(path), "%s.out", base);
    v->out = read_all(path, &out_len);
    assert_non_null(v->out);

    for (char *p = v->inp, *hit; (hit = strstr(p, SEP)) != NULL; p = hit + strlen(SEP)) {
        assert_true(v->n < 64);
        v->text[v->n] = p;
        v->len[v->n] = (size_t)(hit - p);
        v->n++;
    }
    size_t line = 0;
    for (char *p = v->out; *p; line++) {
        char *nl = strchr(p, '\n');
        assert_non_null(nl);
        *nl = 0;
        assert_true(line < v->n);
        v->ids[line] = malloc(sizeof(int32_t) * (strlen(p) / 2 + 1));
        for (char *q = p, *end; *q; q = end) {
            long id = strtol(q, &end, 10);
            assert_true(end != q);
            v->ids[line][v->n_ids[line]++] = (int32_t)id;
            while (*end == ' ')
                end++;
        }
        p = nl + 1;
    }
    assert_int_equal(line, v->n);
}

static inline kvs_tokenizer *load_shared(const char *rel)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", shared_dir(), rel);
    kvs_tokenizer *t = load_tok(path);
    assert_non_null(t);
    return t;
}

/* Read the ids after `label` in a file of shared/expected (a .tokens file). */
static inline size_t read_expected_ids(const char *file, const char *label, int32_t *ids, size_t cap)
{
    char path[1024];
    size_t len;
    snprintf(path, sizeof(path), "%s/expected/%s", shared_dir(), file);
    char *s = read_all(path, &len);
    assert_non_null(s);
    char *p = strstr(s, label);
    assert_non_null(p);
    p += strlen(label);
    size_t n = 0;
    for (char *end;; p = end) {
        long id = strtol(p, &end, 10);
        if (end == p)
            break;
        assert_true(n < cap);
        ids[n++] = (int32_t)id;
    }
    free(s);
    return n;
}

#endif
