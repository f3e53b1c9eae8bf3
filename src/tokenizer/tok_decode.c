/*
 * tok_decode.c - token ids back to bytes.
 *
 * Every token's bytes are computed once at load (kvs_tok_build_decoder):
 * SentencePiece pieces turn U+2581 into spaces and <0xXX> into that byte;
 * byte-level BPE pieces map each code point back through GPT-2's byte
 * alphabet (a code point outside it passes through as UTF-8); user-defined
 * and unknown tokens are their text; control tokens are their text but
 * only rendered on request; unused and undefined tokens are empty.
 */
#include <stdlib.h>
#include <string.h>

#include "core/chars.h"
#include "tokenizer/tok_internal.h"
#include "tokenizer/unicode.h"

#define N_ALPHABET 324 /* GPT-2's byte alphabet lies below U+0144 */

int kvs_tok_byte_piece(const char *s, size_t len)
{
    if (len != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>')
        return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        int d = kvs_hex_digit((unsigned char)s[i]);
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

/* Write the decoded bytes of piece s[0, len) to out; returns the length
 * (never more than len). */
static size_t decode_piece(const kvs_tokenizer *t, const int16_t *inv, uint8_t type,
                           const char *s, size_t len, char *out)
{
    if (type == KVS_TT_UNUSED || type == KVS_TT_UNDEFINED)
        return 0;
    if (type == KVS_TT_CONTROL || type == KVS_TT_USER || type == KVS_TT_UNKNOWN) {
        memcpy(out, s, len);
        return len;
    }
    size_t k = 0;
    if (t->kind == KVS_TOK_SPM) {
        int b = type == KVS_TT_BYTE ? kvs_tok_byte_piece(s, len) : -1;
        if (b >= 0) {
            out[0] = (char)b;
            return 1;
        }
        for (size_t i = 0; i < len; i++) {
            if (i + 2 < len && memcmp(s + i, "\xe2\x96\x81", 3) == 0) {
                out[k++] = ' ';
                i += 2;
            } else {
                out[k++] = s[i];
            }
        }
        return k;
    }
    for (size_t pos = 0; pos < len;) {
        size_t start = pos;
        uint32_t cp = kvs_utf8_decode(s, len, &pos);
        if (cp < N_ALPHABET && inv[cp] >= 0) {
            out[k++] = (char)inv[cp];
        } else {
            memcpy(out + k, s + start, pos - start);
            k += pos - start;
        }
    }
    return k;
}

kvs_status kvs_tok_build_decoder(kvs_tokenizer *t, kvs_error *err)
{
    int16_t inv[N_ALPHABET];
    for (int i = 0; i < N_ALPHABET; i++)
        inv[i] = -1;
    for (int b = 0; b < 256; b++)
        inv[t->byte_cpt[b]] = (int16_t)b;
    const kvs_tok_span *last = &t->piece[t->n_vocab - 1];
    size_t total = (size_t)last->off + last->len + 1;
    t->dec_pool = malloc(total);
    t->dec = malloc((size_t)t->n_vocab * sizeof(*t->dec));
    if (!t->dec_pool || !t->dec)
        return kvs_fail(err, KVS_E_NOMEM, "out of memory for the token decoder");
    uint32_t off = 0;
    for (int32_t i = 0; i < t->n_vocab; i++) {
        size_t n = decode_piece(t, inv, t->type[i], t->pool + t->piece[i].off, t->piece[i].len,
                                t->dec_pool + off);
        t->dec[i] = (kvs_tok_span){.off = off, .len = (uint32_t)n};
        off += (uint32_t)n;
    }
    return KVS_OK;
}

/* The bytes of `id` as decoded, or NULL/0 for nothing. */
static const char *token_bytes(const kvs_tokenizer *t, int32_t id, bool render_special,
                               size_t *len)
{
    *len = 0;
    if (id < 0 || id >= t->n_vocab || (t->type[id] == KVS_TT_CONTROL && !render_special))
        return NULL;
    *len = t->dec[id].len;
    return t->dec_pool + t->dec[id].off;
}

size_t kvs_tok_decode_token(const kvs_tokenizer *t, int32_t id, bool render_special, char *buf,
                            size_t cap)
{
    size_t len;
    const char *s = token_bytes(t, id, render_special, &len);
    if (len)
        memcpy(buf, s, len < cap ? len : cap);
    return len;
}

char *kvs_tok_decode(const kvs_tokenizer *t, const int32_t *ids, size_t n)
{
    size_t total = 1;
    for (size_t i = 0; i < n; i++) {
        size_t len;
        token_bytes(t, ids[i], false, &len);
        total += len;
    }
    char *out = malloc(total);
    if (!out)
        return NULL;
    bool strip = kvs_tok_strip_leading_space(t), first = true;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const char *s = token_bytes(t, ids[i], false, &len);
        if (len == 0)
            continue;
        if (first && strip && s[0] == ' ') {
            s++;
            len--;
        }
        first = false;
        memcpy(out + k, s, len);
        k += len;
    }
    out[k] = 0;
    return out;
}

void kvs_tok_stream_init(kvs_tok_stream *s, bool strip_leading_space)
{
    memset(s, 0, sizeof(*s));
    s->at_start = true;
    s->strip_leading_space = strip_leading_space;
}

static void emit(char *out, size_t cap, size_t *k, const void *src, size_t n)
{
    if (*k + n + 1 > cap) /* no room: dropped whole, never split */
        return;
    memcpy(out + *k, src, n);
    *k += n;
    out[*k] = 0;
}

size_t kvs_tok_stream_push(const kvs_tokenizer *t, kvs_tok_stream *s, int32_t id, char *out,
                           size_t cap)
{
    size_t k = 0, len;
    if (cap > 0)
        out[0] = 0;
    const char *data = token_bytes(t, id, false, &len);
    if (len == 0)
        return 0;
    if (s->at_start && s->strip_leading_space && data[0] == ' ') {
        data++;
        len--;
    }
    s->at_start = false;
    /* walk pending + data as one byte sequence, emitting whole characters */
    size_t np = s->n_pending, total = np + len;
    for (size_t i = 0; i < total;) {
        uint8_t win[4];
        size_t wn = total - i < 4 ? total - i : 4;
        for (size_t j = 0; j < wn; j++)
            win[j] = (uint8_t)(i + j < np ? s->pending[i + j] : data[i + j - np]);
        int r = kvs_utf8_check(win, wn);
        if (r > 0) {
            emit(out, cap, &k, win, (size_t)r);
            i += (size_t)r;
        } else if (r == 0) { /* an incomplete character ends the data: keep it */
            memcpy(s->pending, win, wn);
            s->n_pending = wn;
            return k;
        } else {
            emit(out, cap, &k, "\xef\xbf\xbd", 3);
            i++;
        }
    }
    s->n_pending = 0;
    return k;
}

size_t kvs_tok_stream_flush(kvs_tok_stream *s, char *out, size_t cap)
{
    size_t k = 0;
    if (cap > 0)
        out[0] = 0;
    if (s->n_pending > 0)
        emit(out, cap, &k, "\xef\xbf\xbd", 3);
    s->n_pending = 0;
    return k;
}
