/*
 * chat_parse.h - the model's raw output turned into an OpenAI chat message:
 * reasoning (vLLM's --reasoning-parser) and tool calls (--tool-call-parser).
 *
 * Reasoning models write their thoughts between <think> and </think>
 * before the answer.  deepseek_r1: the output starts inside the thought (the
 * template already opened it; a leading "<think>" is skipped), everything up
 * to "</think>" is reasoning, the rest content; with no "</think>" yet it is
 * all reasoning.  qwen3: only an output that starts with "<think>" has
 * reasoning (up to "</think>", or to the end when it is never closed);
 * otherwise it is all content.
 *
 * Tool calls are parsed from the content (after any reasoning):
 *   hermes      (Hermes, Qwen 2.5/3) <tool_call>{"name": N, "arguments": {...}}</tool_call>, repeated;
 *               the text before the first <tool_call> stays content.
 *   llama3_json (Llama 3.1+) the whole content is [<|python_tag|>]{"name": N, "parameters": {...}}
 *               with more calls after ";".
 *   mistral     [TOOL_CALLS][{"name": N, "arguments": {...}}, ...] or [TOOL_CALLS]N[ARGS]{...};
 *               the text before [TOOL_CALLS] stays content.
 * Output that does not parse (bad JSON, no name) stays content, as in vLLM.
 * With tool_choice naming a function the whole output is that function's
 * arguments; with "required" it is a JSON array of {"name", "parameters"}.
 * Each call gets an id ("chatcmpl-tool-" + 32 hex digits, or 9 alphanumerics
 * for mistral) and its arguments as a JSON string (Python's json.dumps of
 * the parsed value; for Hermes and Llama 3 the model's own text of it, see below).
 *
 * Streaming (kvs_chat_stream): text is fed as it is generated and comes
 * back as OpenAI deltas: {"reasoning_content": ...}, {"content": ...}, and
 * for each tool call {"tool_calls": [{"index", "id", "type", "function":
 * {"name", "arguments": ""}}]} followed by its arguments in pieces
 * ({"tool_calls": [{"index", "function": {"arguments": piece}}]}), which
 * concatenate to the non-streaming arguments.  Hermes calls stream while they
 * are written, and so do llama3_json calls: the id and name once the name's
 * string is complete and the arguments object has begun, then the arguments
 * text as it arrives (so their arguments are the model's own JSON text,
 * validated, rather than a re-serialisation); mistral, "required" and named
 * calls are sent when the output ends.  Text that may be the start of a
 * marker is held back until it is decided.  A Hermes call whose JSON turns
 * out broken at the end has already been sent when streaming (as in vLLM);
 * the non-streaming message returns such output as content.
 */
#ifndef KVS_CHAT_CHAT_PARSE_H
#define KVS_CHAT_CHAT_PARSE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

typedef enum kvs_reasoning_kind { KVS_REASONING_NONE, KVS_REASONING_DEEPSEEK_R1, KVS_REASONING_QWEN3 } kvs_reasoning_kind;
typedef enum kvs_tool_kind { KVS_TOOLS_NONE, KVS_TOOLS_HERMES, KVS_TOOLS_LLAMA3_JSON, KVS_TOOLS_MISTRAL } kvs_tool_kind;
typedef enum kvs_tool_mode {
    KVS_TOOL_MODE_OFF,      /* no tool parsing (no tools, tool_choice none, or no parser) */
    KVS_TOOL_MODE_AUTO,     /* the parser decides */
    KVS_TOOL_MODE_REQUIRED, /* output is [{"name", "parameters"}, ...] */
    KVS_TOOL_MODE_NAMED,    /* output is the named function's arguments */
} kvs_tool_mode;

typedef struct kvs_chat_parse_cfg {
    kvs_reasoning_kind reasoning;
    kvs_tool_kind tools;
    kvs_tool_mode mode;
    char named[128];        /* KVS_TOOL_MODE_NAMED: the function */
    uint64_t id_seed;       /* tool-call ids are derived from it */
} kvs_chat_parse_cfg;

/* "deepseek_r1" / "qwen3" (NULL or "" = none); KVS_E_INVALID names the choices. */
kvs_status kvs_reasoning_kind_from_name(const char *name, kvs_reasoning_kind *out, kvs_error *err);
/* "hermes" / "llama3_json" / "mistral" (NULL or "" = none). */
kvs_status kvs_tool_kind_from_name(const char *name, kvs_tool_kind *out, kvs_error *err);

/* Parse a whole output into the fields of a message: "content" (string or
 * null), and when present "reasoning_content" and "tool_calls".  Returns a
 * new object (NULL only when out of memory). */
json_t *kvs_chat_parse_message(const kvs_chat_parse_cfg *cfg, const char *text, size_t len);

/* The JSON schema that structured output must hold the output to for
 * tool_choice "required" (an array of {"name", "parameters"} over `tools`)
 * or a named function (its parameters), as vLLM builds it; NULL for the
 * other modes or when the named function is not in `tools`.  A new reference. */
json_t *kvs_chat_tool_choice_schema(const kvs_chat_parse_cfg *cfg, json_t *tools);

typedef struct kvs_chat_stream kvs_chat_stream;
kvs_chat_stream *kvs_chat_stream_new(const kvs_chat_parse_cfg *cfg);

/* One delta of a stream, without building JSON (the server writes it with
 * its fixed-buffer writer, core/json_out.h):
 *   REASONING  {"reasoning_content": text}
 *   CONTENT    {"content": text}
 *   CALL       {"tool_calls": [{"index", "id", "type": "function", "function": {"name": text, "arguments": ""}}]}
 *   ARGS       {"tool_calls": [{"index", "function": {"arguments": text}}]}
 * text is valid UTF-8. */
typedef enum kvs_chat_delta_kind {
    KVS_CHAT_DELTA_REASONING,
    KVS_CHAT_DELTA_CONTENT,
    KVS_CHAT_DELTA_CALL,
    KVS_CHAT_DELTA_ARGS,
} kvs_chat_delta_kind;

#define KVS_CHAT_ID_MAX 48

typedef struct kvs_chat_delta {
    kvs_chat_delta_kind kind;
    const char *text;
    size_t len;
    size_t index;                  /* CALL, ARGS: the call */
    char id[KVS_CHAT_ID_MAX];      /* CALL: its id */
} kvs_chat_delta;

/* The output so far is text[0, len): the caller's, only ever appended to
 * between steps (final: the output ends here).  *out gets the deltas to
 * send in order (*n of them, maybe 0), valid until the next step or
 * kvs_chat_stream_free; they may point into text.  False when out of
 * memory.  Text and reasoning cost no allocation; the deltas' array grows
 * (by doubling) only past the most one step has needed; a tool call being
 * parsed allocates (its JSON objects). */
bool kvs_chat_stream_step(kvs_chat_stream *s, const char *text, size_t len, bool final, const kvs_chat_delta **out,
                          size_t *n);
/* A delta as a JSON object (a new reference). */
json_t *kvs_chat_delta_json(const kvs_chat_delta *d);
/* The same with the stream keeping its own copy of the output: feed the
 * next piece (final: the output ends here).  Returns a new array of delta
 * objects to send in order (maybe empty); NULL when out of memory. */
json_t *kvs_chat_stream_feed(kvs_chat_stream *s, const char *text, size_t len, bool final);
/* Whether tool calls were sent (finish_reason "tool_calls"). */
bool kvs_chat_stream_has_tool_calls(const kvs_chat_stream *s);
void kvs_chat_stream_free(kvs_chat_stream *s);

#endif
