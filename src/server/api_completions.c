/* POST /v1/completions */
#include <stdlib.h>
#include <string.h>

#include "server/server_internal.h"

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
        kvs_status st = kvs_oai_prompt_tokens_at(&r, k, s->inst->tok, &ids[k], &n[k], &oe);
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
