/* POST /v1/completions */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/server_internal.h"
#include "tokenizer/tokenizer.h"

/* The vocabulary's fill-in-the-middle tokens, found by their text as
 * llama.cpp finds them when the GGUF names none (Qwen2.5-Coder, StarCoder,
 * Refact, CodeLlama, DeepSeek-Coder spellings); false when there are none. */
static bool fim_tokens(const kvs_tokenizer *t, int32_t *pre, int32_t *suf, int32_t *mid)
{
    static const char *const PRE[] = {"<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<PRE>", "\xe2\x96\x81<PRE>",
                                      "<\xef\xbd\x9c" "fim\xe2\x96\x81" "begin\xef\xbd\x9c>"};
    static const char *const SUF[] = {"<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<SUF>", "\xe2\x96\x81<SUF>",
                                      "<\xef\xbd\x9c" "fim\xe2\x96\x81" "hole\xef\xbd\x9c>"};
    static const char *const MID[] = {"<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<MID>", "\xe2\x96\x81<MID>",
                                      "<\xef\xbd\x9c" "fim\xe2\x96\x81" "end\xef\xbd\x9c>"};
    *pre = *suf = *mid = -1;
    for (size_t i = 0; i < sizeof PRE / sizeof PRE[0]; i++) {
        int32_t a = kvs_tok_find_piece(t, PRE[i]), b = kvs_tok_find_piece(t, SUF[i]), c = kvs_tok_find_piece(t, MID[i]);
        if (a >= 0 && b >= 0 && c >= 0) {
            *pre = a, *suf = b, *mid = c;
            return true;
        }
    }
    return false;
}

/* prompt i with r->suffix as llama.cpp's infill builds it (prefix, suffix,
 * middle): [BOS] FIM_PRE prompt FIM_SUF suffix FIM_MID.  The completion is
 * the middle. */
static kvs_status fim_prompt(kvs_oai_request *r, size_t i, const kvs_tokenizer *t, int32_t **ids, size_t *n,
                             kvs_oai_error *e)
{
    int32_t pre, suf, mid;
    *ids = NULL;
    *n = 0;
    if (!fim_tokens(t, &pre, &suf, &mid)) {
        snprintf(e->param, sizeof e->param, "suffix");
        snprintf(e->message, sizeof e->message, "'suffix' needs a model with fill-in-the-middle (infill) tokens; "
                                                "this server's model has none");
        return KVS_E_INVALID;
    }
    size_t plen;
    const char *ptext = kvs_oai_prompt_text(r, i, &plen);
    int32_t *a = NULL, *b = NULL;
    size_t na = 0, nb = 0;
    kvs_error err;
    kvs_status st = kvs_tok_encode(t, ptext, plen, false, false, &a, &na, &err);
    if (st == KVS_OK)
        st = kvs_tok_encode(t, r->suffix, r->suffix_len, false, false, &b, &nb, &err);
    bool bos = kvs_tok_add_bos(t) && kvs_tok_bos(t) >= 0;
    int32_t *out = st == KVS_OK ? malloc((na + nb + 4) * sizeof *out) : NULL;
    if (!out) {
        snprintf(e->param, sizeof e->param, st == KVS_OK ? "prompt" : "suffix");
        snprintf(e->message, sizeof e->message, "%s", st == KVS_OK ? "out of memory" : err.msg);
        free(a);
        free(b);
        return st == KVS_OK || st == KVS_E_NOMEM ? KVS_E_NOMEM : KVS_E_INVALID;
    }
    size_t k = 0;
    if (bos)
        out[k++] = kvs_tok_bos(t);
    out[k++] = pre;
    memcpy(out + k, a, na * sizeof *out);
    k += na;
    out[k++] = suf;
    memcpy(out + k, b, nb * sizeof *out);
    k += nb;
    out[k++] = mid;
    free(a);
    free(b);
    *ids = out;
    *n = k;
    r->params.strip_leading_space = false;
    return KVS_OK;
}

enum MHD_Result kvs_api_completions(kvs_server *s, struct MHD_Connection *c, const char *body, size_t len)
{
    enum MHD_Result ret;
    kvs_oai_request r;
    json_t *j = kvs_api_parse_request(s, c, body, len, KVS_OAI_COMPLETION, &r, &ret);
    if (!j)
        return ret;
    /* One prompt or a list of them (at most KVS_OAI_MAX_PROMPTS): each is
     * tokenized here, and its choices are numbered prompt-major. */
    const size_t P = r.n_prompts;
    int32_t *ids[KVS_OAI_MAX_PROMPTS] = {0};
    size_t n[KVS_OAI_MAX_PROMPTS] = {0};
    bool strip[KVS_OAI_MAX_PROMPTS] = {0};
    bool ok = true;
    for (size_t k = 0; k < P && ok; k++) {
        kvs_oai_error oe;
        memset(&oe, 0, sizeof oe);
        kvs_status st = r.suffix ? fim_prompt(&r, k, s->inst->tok, &ids[k], &n[k], &oe)
                                 : kvs_oai_prompt_tokens_at(&r, k, s->inst->tok, &ids[k], &n[k], &oe);
        if (st != KVS_OK) {
            ret = kvs_http_error(c, st == KVS_E_NOMEM ? 500 : 400, oe.param, NULL, "%s", oe.message);
            ok = false;
        }
        strip[k] = r.params.strip_leading_space;
    }
    if (ok)
        ret = kvs_gen_run_batch(s, c, &r, (const int32_t *const *)ids, n, strip, (int32_t)P, "prompt");
    for (size_t k = 0; k < P; k++)
        free(ids[k]);
    kvs_oai_request_free(&r);
    json_decref(j);
    return ret;
}
