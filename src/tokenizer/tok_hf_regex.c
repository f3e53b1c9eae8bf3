/*
 * tok_hf_regex.c - tokenizer.json regexes on Oniguruma, the engine the
 * `tokenizers` library compiles them with (its default syntax, UTF-8,
 * no options), so \s, \p{L}, (?i:...) and lookaheads mean what they mean
 * there.  A compiled regex is read-only: searches from several threads
 * may share it (each search has its own region).
 */
#include <oniguruma.h>
#include <pthread.h>
#include <stdlib.h>

#include "tokenizer/tok_hf.h"

struct kvs_tok_rx {
    regex_t *re;
};

/* Oniguruma's one-time set-up of its encoding tables (process-wide, done
 * once by pthread_once: the only way to call it safely from threads). */
static pthread_once_t onig_once = PTHREAD_ONCE_INIT;
static void onig_setup(void)
{
    OnigEncoding enc = ONIG_ENCODING_UTF8;
    onig_initialize(&enc, 1);
}

kvs_status kvs_tok_rx_compile(kvs_tok_rx **out, const char *pat, size_t n, kvs_error *err)
{
    *out = NULL;
    pthread_once(&onig_once, onig_setup);
    kvs_tok_rx *rx = calloc(1, sizeof(*rx));
    if (!rx)
        return kvs_fail(err, KVS_E_NOMEM, "out of memory for a regex");
    OnigErrorInfo info;
    const UChar *p = (const UChar *)pat;
    int r = onig_new(&rx->re, p, p + n, ONIG_OPTION_NONE, ONIG_ENCODING_UTF8, ONIG_SYNTAX_DEFAULT,
                     &info);
    if (r != ONIG_NORMAL) {
        UChar msg[ONIG_MAX_ERROR_MESSAGE_LEN];
        onig_error_code_to_str(msg, r, &info);
        free(rx);
        return kvs_fail(err, KVS_E_FORMAT, "regex '%.80s%s' does not compile: %s", pat,
                        n > 80 ? "..." : "", (const char *)msg);
    }
    *out = rx;
    return KVS_OK;
}

void kvs_tok_rx_free(kvs_tok_rx *rx)
{
    if (!rx)
        return;
    onig_free(rx->re);
    free(rx);
}

bool kvs_tok_rx_search(const kvs_tok_rx *rx, const char *s, size_t len, size_t from, size_t *ms,
                       size_t *me)
{
    OnigRegion *region = onig_region_new();
    if (!region)
        return false;
    const UChar *b = (const UChar *)s;
    int r = onig_search(rx->re, b, b + len, b + from, b + len, region, ONIG_OPTION_NONE);
    bool found = r >= 0 && region->num_regs > 0;
    if (found) {
        *ms = (size_t)region->beg[0];
        *me = (size_t)region->end[0];
    }
    onig_region_free(region, 1);
    return found;
}
