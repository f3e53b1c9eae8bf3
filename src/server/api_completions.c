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
    int32_t *ids = NULL;
    size_t n = 0;
    kvs_oai_error oe;
    kvs_status st = kvs_oai_prompt_tokens(&r, s->inst->tok, &ids, &n, &oe);
    if (st != KVS_OK)
        ret = kvs_http_error(c, st == KVS_E_NOMEM ? 500 : 400, oe.param, NULL, "%s", oe.message);
    else
        ret = kvs_gen_run(s, c, &r, ids, n, "prompt");
    free(ids);
    kvs_oai_request_free(&r);
    json_decref(j);
    return ret;
}
