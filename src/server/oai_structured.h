/*
 * oai_structured.h - structured output fields of OpenAI / vLLM requests.
 *
 * A request may constrain its output in one of these ways (one only):
 *
 *     "response_format": {"type": "json_object"}                 any JSON object
 *     "response_format": {"type": "json_schema",
 *                         "json_schema": {"name": .., "schema": {..}, "strict": true}}
 *     "response_format": {"type": "text"}                        no constraint
 *     "structured_outputs": {"json": {..} | "regex": ".." | "choice": [..] |
 *                            "grammar": ".." | "json_object": true}   (vLLM)
 *     "guided_json", "guided_regex", "guided_choice", "guided_grammar"
 *                                                                (vLLM's older names)
 *
 * Each is compiled to a grammar (grammar/grammar.h) when the request is
 * parsed, so a schema kvserve cannot express is a 400 naming the field and
 * the feature before anything is queued.  With r->gpool set (the server)
 * the request first takes a lease of the structured-output slots
 * (grammar/gpool.h: one compile arena and a matcher per sequence) and
 * compiles into it: all slots busy is KVS_E_BUDGET (the server answers
 * 503), a constraint that does not fit --max-grammar-bytes a 400.  The engine masks the logits
 * with it at every step and stops the request when the output is
 * complete.
 */
#ifndef KVS_SERVER_OAI_STRUCTURED_H
#define KVS_SERVER_OAI_STRUCTURED_H

#include <jansson.h>
#include <stdbool.h>

#include "server/oai_params.h"

/* Whether `key` is one of the structured output fields (accepted by both
 * endpoints). */
bool kvs_oai_structured_field(const char *key);

/* Read the structured output fields of body into r->params.grammar (a new
 * reference that kvs_oai_request_free drops; NULL when there are none).
 * KVS_E_INVALID with e filled (param: the field) on a bad or unsupported
 * constraint, KVS_E_BUDGET when every slot is busy, KVS_E_NOMEM when out
 * of memory. */
kvs_status kvs_oai_structured_parse(json_t *body, kvs_oai_request *r, kvs_oai_error *e);

/* Compile a JSON schema (text) into r->params.grammar the same way (the
 * chat endpoint's tool_choice constraint); errors as above, named `param`. */
kvs_status kvs_oai_structured_schema(const char *schema_text, size_t len, kvs_oai_request *r, const char *param,
                                     kvs_oai_error *e);

#endif
