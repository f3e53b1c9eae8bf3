/* Reasoning and tool-call parsers (src/chat/chat_parse.h) on model outputs in
 * each format (the shapes of vLLM's parser tests: Hermes/Qwen <tool_call>,
 * Llama 3.1 JSON with <|python_tag|>, Mistral [TOOL_CALLS] in the pre-v11
 * array form and the v11 name{args} form, DeepSeek-R1 and Qwen3 <think>).
 * Each output is parsed whole, then streamed in pieces of every size from 1
 * byte up: the deltas must add up to the whole-output message. */
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "chat/chat_parse.h"

typedef struct expect {
    const char *content;   /* NULL: null */
    const char *reasoning; /* NULL: absent */
    const char *names[3];
    const char *args[3];   /* json.dumps(arguments) */
} expect;

static kvs_chat_parse_cfg cfg_of(kvs_reasoning_kind r, kvs_tool_kind t, kvs_tool_mode m)
{
    kvs_chat_parse_cfg c = {.reasoning = r, .tools = t, .mode = m, .id_seed = 42};
    return c;
}

static void check_message(json_t *m, const expect *e)
{
    json_t *content = json_object_get(m, "content");
    if (e->content)
        assert_string_equal(json_string_value(content), e->content);
    else
        assert_true(json_is_null(content));
    json_t *r = json_object_get(m, "reasoning_content");
    if (e->reasoning)
        assert_string_equal(json_string_value(r), e->reasoning);
    else
        assert_null(r);
    json_t *calls = json_object_get(m, "tool_calls");
    size_t n = 0;
    while (n < 3 && e->names[n])
        n++;
    assert_int_equal(json_array_size(calls), n);
    for (size_t i = 0; i < n; i++) {
        json_t *c = json_array_get(calls, i), *fn = json_object_get(c, "function");
        assert_string_equal(json_string_value(json_object_get(c, "type")), "function");
        assert_non_null(json_string_value(json_object_get(c, "id")));
        assert_string_equal(json_string_value(json_object_get(fn, "name")), e->names[i]);
        assert_string_equal(json_string_value(json_object_get(fn, "arguments")), e->args[i]);
    }
}

/* Stream `out` in pieces of `step` bytes and rebuild the message from the deltas. */
static json_t *stream(const kvs_chat_parse_cfg *cfg, const char *out, size_t step)
{
    kvs_chat_stream *s = kvs_chat_stream_new(cfg);
    size_t n = strlen(out);
    char *content = calloc(1, n + 1), *reasoning = calloc(1, n + 1);
    bool any_r = false, any_c = false;
    json_t *calls = json_array();
    for (size_t i = 0; i <= n; i += step) {
        size_t k = i + step <= n ? step : n - i;
        json_t *d = kvs_chat_stream_feed(s, out + i, k, i + step > n);
        size_t j;
        json_t *delta;
        json_array_foreach(d, j, delta)
        {
            json_t *x;
            if ((x = json_object_get(delta, "content"))) {
                strcat(content, json_string_value(x));
                any_c = true;
            }
            if ((x = json_object_get(delta, "reasoning_content"))) {
                strcat(reasoning, json_string_value(x));
                any_r = true;
            }
            json_t *tc = json_array_get(json_object_get(delta, "tool_calls"), 0);
            if (tc) {
                size_t idx = (size_t)json_integer_value(json_object_get(tc, "index"));
                json_t *fn = json_object_get(tc, "function");
                if (json_object_get(tc, "id")) {
                    assert_int_equal(idx, json_array_size(calls));
                    json_array_append_new(calls, json_pack("{s:O, s:s, s:{s:O, s:s}}", "id", json_object_get(tc, "id"),
                                                           "type", "function", "function", "name",
                                                           json_object_get(fn, "name"), "arguments", ""));
                } else {
                    json_t *f = json_object_get(json_array_get(calls, idx), "function");
                    char buf[4096];
                    snprintf(buf, sizeof buf, "%s%s", json_string_value(json_object_get(f, "arguments")),
                             json_string_value(json_object_get(fn, "arguments")));
                    json_object_set_new(f, "arguments", json_string(buf));
                }
            }
        }
        json_decref(d);
    }
    assert_int_equal(kvs_chat_stream_has_tool_calls(s), json_array_size(calls) > 0);
    json_t *m = json_object();
    json_object_set_new(m, "content", any_c ? json_string(content) : json_null());
    if (any_r)
        json_object_set_new(m, "reasoning_content", json_string(reasoning));
    if (json_array_size(calls))
        json_object_set(m, "tool_calls", calls);
    json_decref(calls);
    free(content);
    free(reasoning);
    kvs_chat_stream_free(s);
    return m;
}

/* Parse whole, and (unless only_whole) streamed: the same message. */
static void check2(const kvs_chat_parse_cfg *cfg, const char *out, const expect *e, bool only_whole)
{
    json_t *m = kvs_chat_parse_message(cfg, out, strlen(out));
    check_message(m, e);
    for (size_t step = 1; !only_whole && step <= strlen(out) + 1; step += step < 8 ? 1 : 7) {
        json_t *sm = stream(cfg, out, step);
        /* the same ids and arguments as the whole-output message */
        json_t *a = json_object_get(m, "tool_calls"), *b = json_object_get(sm, "tool_calls");
        assert_true((a == NULL) == (b == NULL));
        if (a)
            assert_true(json_equal(a, b));
        if (!(e->content == NULL && json_is_string(json_object_get(sm, "content")) &&
              json_string_length(json_object_get(sm, "content")) == 0))
            check_message(sm, e);
        json_decref(sm);
    }
    json_decref(m);
}

static void check(const kvs_chat_parse_cfg *cfg, const char *out, const expect *e)
{
    check2(cfg, out, e, false);
}

static void test_hermes(void **state)
{
    (void)state;
    kvs_chat_parse_cfg c = cfg_of(KVS_REASONING_NONE, KVS_TOOLS_HERMES, KVS_TOOL_MODE_AUTO);
    check(&c, "<tool_call>\n{\"name\": \"get_current_weather\", \"arguments\": {\"city\": \"Dallas\", \"state\": \"TX\", "
              "\"unit\": \"fahrenheit\"}}\n</tool_call>",
          &(expect){NULL, NULL, {"get_current_weather"},
                    {"{\"city\": \"Dallas\", \"state\": \"TX\", \"unit\": \"fahrenheit\"}"}});
    check(&c, "I'll check both cities.\n<tool_call>\n{\"name\": \"w\", \"arguments\": {\"city\": \"東京\"}}\n</tool_call>\n"
              "<tool_call>\n{\"name\": \"w\", \"arguments\": {\"city\": \"Paris\", \"days\": 2.5}}\n</tool_call>",
          &(expect){"I'll check both cities.\n", NULL, {"w", "w"},
                    {"{\"city\": \"東京\"}", "{\"city\": \"Paris\", \"days\": 2.5}"}});
    /* the arguments as the model wrote them (compact, braces and quotes in strings), streamed as written */
    check(&c, "<tool_call>{\"name\":\"w\",\"arguments\":{\"a\":[1,2],\"b\":\"x}y\\\"z\",\"c\":{\"d\":\"é\"}}}</tool_call>",
          &(expect){NULL, NULL, {"w"}, {"{\"a\":[1,2],\"b\":\"x}y\\\"z\",\"c\":{\"d\":\"é\"}}"}});
    check(&c, "No tools needed: 2 < 3 and <tool is not a tag.", &(expect){"No tools needed: 2 < 3 and <tool is not a tag."});
    /* broken JSON stays content (whole output only: streaming has sent the call's name and the
     * start of its arguments by the time the JSON turns out broken, as vLLM's streaming does) */
    check2(&c, "<tool_call>{\"name\": \"w\", \"arguments\": {</tool_call>",
           &(expect){"<tool_call>{\"name\": \"w\", \"arguments\": {</tool_call>"}, true);
    check(&c, "<tool_call>{\"name\": \"w\" \"arguments\": 5</tool_call>",
          &(expect){"<tool_call>{\"name\": \"w\" \"arguments\": 5</tool_call>"});
    /* unterminated at the end of the output: still a call, as vLLM's regex allows */
    check(&c, "<tool_call>{\"name\": \"now\", \"arguments\": {}}", &(expect){NULL, NULL, {"now"}, {"{}"}});
}

/* Hermes arguments stream while they are written, before the call's JSON is complete. */
static void test_hermes_incremental(void **state)
{
    (void)state;
    kvs_chat_parse_cfg c = cfg_of(KVS_REASONING_NONE, KVS_TOOLS_HERMES, KVS_TOOL_MODE_AUTO);
    kvs_chat_stream *s = kvs_chat_stream_new(&c);
    const char *part = "Sure.<tool_call>\n{\"name\": \"search\", \"arguments\": {\"query\": \"weather in Par";
    json_t *d = kvs_chat_stream_feed(s, part, strlen(part), false);
    /* content, the call's id + name, then the arguments so far (in pieces) */
    assert_true(json_array_size(d) >= 3);
    assert_string_equal(json_string_value(json_object_get(json_array_get(d, 0), "content")), "Sure.");
    json_t *head = json_array_get(json_object_get(json_array_get(d, 1), "tool_calls"), 0);
    assert_string_equal(json_string_value(json_object_get(json_object_get(head, "function"), "name")), "search");
    char got[256] = "";
    for (size_t i = 2; i < json_array_size(d); i++) {
        json_t *a = json_array_get(json_object_get(json_array_get(d, i), "tool_calls"), 0);
        strcat(got, json_string_value(json_object_get(json_object_get(a, "function"), "arguments")));
    }
    assert_string_equal(got, "{\"query\": \"weather in Par");
    assert_true(kvs_chat_stream_has_tool_calls(s));
    json_decref(d);
    const char *rest = "is\"}}\n</tool_call>";
    d = kvs_chat_stream_feed(s, rest, strlen(rest), true);
    assert_int_equal(json_array_size(d), 1);
    json_t *args = json_array_get(json_object_get(json_array_get(d, 0), "tool_calls"), 0);
    assert_string_equal(json_string_value(json_object_get(json_object_get(args, "function"), "arguments")), "is\"}");
    json_decref(d);
    kvs_chat_stream_free(s);
}

static void test_llama3_json(void **state)
{
    (void)state;
    kvs_chat_parse_cfg c = cfg_of(KVS_REASONING_NONE, KVS_TOOLS_LLAMA3_JSON, KVS_TOOL_MODE_AUTO);
    check(&c, "<|python_tag|>{\"name\": \"get_weather\", \"parameters\": {\"city\": \"San Francisco\", \"metric\": "
              "\"celsius\"}}",
          &(expect){NULL, NULL, {"get_weather"}, {"{\"city\": \"San Francisco\", \"metric\": \"celsius\"}"}});
    check(&c, "{\"name\": \"a\", \"parameters\": {\"x\": 1}}; {\"name\": \"b\", \"arguments\": {\"y\": [true, null]}}",
          &(expect){NULL, NULL, {"a", "b"}, {"{\"x\": 1}", "{\"y\": [true, null]}"}});
    check(&c, "The weather is sunny.", &(expect){"The weather is sunny."});
    check2(&c, "{not json", &(expect){"{not json"}, false);
    check(&c, "<|python_tag|>{\"name\": \"f\", \"parameters\": {\"q\":[1, {\"r\": \"}\"}]}}",
          &(expect){NULL, NULL, {"f"}, {"{\"q\":[1, {\"r\": \"}\"}]}"}});
    /* streamed while written */
    kvs_chat_stream *s = kvs_chat_stream_new(&c);
    const char *part = "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Par";
    json_t *d = kvs_chat_stream_feed(s, part, strlen(part), false);
    assert_true(json_array_size(d) >= 2);
    assert_true(kvs_chat_stream_has_tool_calls(s));
    json_decref(d);
    kvs_chat_stream_free(s);
}

static void test_mistral(void **state)
{
    (void)state;
    kvs_chat_parse_cfg c = cfg_of(KVS_REASONING_NONE, KVS_TOOLS_MISTRAL, KVS_TOOL_MODE_AUTO);
    check(&c, "[TOOL_CALLS] [{\"name\": \"add\", \"arguments\": {\"a\": 3.5, \"b\": 4}}, {\"name\": "
              "\"get_current_weather\", \"arguments\":{\"city\": \"San Francisco\", \"state\": \"CA\", \"unit\": "
              "\"celsius\"}}]",
          &(expect){NULL, NULL, {"add", "get_current_weather"},
                    {"{\"a\": 3.5, \"b\": 4}", "{\"city\": \"San Francisco\", \"state\": \"CA\", \"unit\": \"celsius\"}"}});
    check(&c, "Hello[TOOL_CALLS] [{\"name\": \"add\", \"arguments\":{\"a\": 1, \"b\": 2}}]",
          &(expect){"Hello", NULL, {"add"}, {"{\"a\": 1, \"b\": 2}"}});
    check(&c, "[TOOL_CALLS]add{\"a\": 3.5, \"b\": 4}[TOOL_CALLS]multiply{\"a\": 3, \"b\": 6}",
          &(expect){NULL, NULL, {"add", "multiply"}, {"{\"a\": 3.5, \"b\": 4}", "{\"a\": 3, \"b\": 6}"}});
    check(&c, "[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Paris\"}",
          &(expect){NULL, NULL, {"get_weather"}, {"{\"city\": \"Paris\"}"}});
    check(&c, "Just text [TOOL", &(expect){"Just text [TOOL"});
}

static void test_reasoning(void **state)
{
    (void)state;
    kvs_chat_parse_cfg r1 = cfg_of(KVS_REASONING_DEEPSEEK_R1, KVS_TOOLS_NONE, KVS_TOOL_MODE_OFF);
    check(&r1, "Okay, 2+2 is 4.\n</think>\n\nThe answer is 4.",
          &(expect){"\n\nThe answer is 4.", "Okay, 2+2 is 4.\n"});
    check(&r1, "<think>Let me think</think>Done", &(expect){"Done", "Let me think"});
    check(&r1, "still thinking, cut by max_tokens", &(expect){NULL, "still thinking, cut by max_tokens"});
    kvs_chat_parse_cfg q3 = cfg_of(KVS_REASONING_QWEN3, KVS_TOOLS_NONE, KVS_TOOL_MODE_OFF);
    check(&q3, "<think>\nThe user says hi.\n</think>\n\nHello! 😀", &(expect){"\n\nHello! 😀", "\nThe user says hi.\n"});
    check(&q3, "Hello without thinking", &(expect){"Hello without thinking"});
    /* reasoning first, then a Hermes tool call in the content */
    kvs_chat_parse_cfg both = cfg_of(KVS_REASONING_QWEN3, KVS_TOOLS_HERMES, KVS_TOOL_MODE_AUTO);
    check(&both, "<think>need the weather</think>\n\n<tool_call>\n{\"name\": \"w\", \"arguments\": {\"c\": \"x\"}}\n</tool_call>",
          &(expect){"\n\n", "need the weather", {"w"}, {"{\"c\": \"x\"}"}});
}

static void test_required_and_named(void **state)
{
    (void)state;
    kvs_chat_parse_cfg req = cfg_of(KVS_REASONING_NONE, KVS_TOOLS_NONE, KVS_TOOL_MODE_REQUIRED);
    check(&req, "[{\"name\": \"a\", \"parameters\": {\"q\": \"x\"}}, {\"name\": \"b\", \"parameters\": {}}]",
          &(expect){NULL, NULL, {"a", "b"}, {"{\"q\": \"x\"}", "{}"}});
    kvs_chat_parse_cfg named = cfg_of(KVS_REASONING_NONE, KVS_TOOLS_HERMES, KVS_TOOL_MODE_NAMED);
    snprintf(named.named, sizeof named.named, "get_weather");
    check(&named, "{\"city\": \"Paris\"}", &(expect){NULL, NULL, {"get_weather"}, {"{\"city\": \"Paris\"}"}});
    check(&named, "not json", &(expect){"not json"});
}

static void test_tool_choice_schema(void **state)
{
    (void)state;
    json_t *tools = json_loads("[{\"type\": \"function\", \"function\": {\"name\": \"a\", \"parameters\": "
                               "{\"type\": \"object\", \"properties\": {\"q\": {\"type\": \"string\"}}}}},"
                               " {\"type\": \"function\", \"function\": {\"name\": \"b\"}}]",
                               0, NULL);
    kvs_chat_parse_cfg c = cfg_of(KVS_REASONING_NONE, KVS_TOOLS_NONE, KVS_TOOL_MODE_REQUIRED);
    json_t *s = kvs_chat_tool_choice_schema(&c, tools);
    json_t *want = json_loads(
        "{\"type\": \"array\", \"minItems\": 1, \"items\": {\"anyOf\": ["
        "{\"type\": \"object\", \"properties\": {\"name\": {\"type\": \"string\", \"enum\": [\"a\"]}, \"parameters\": {\"type\": "
        "\"object\", \"properties\": {\"q\": {\"type\": \"string\"}}}}, \"required\": [\"name\", \"parameters\"]},"
        "{\"type\": \"object\", \"properties\": {\"name\": {\"type\": \"string\", \"enum\": [\"b\"]}, \"parameters\": {\"type\": "
        "\"object\", \"properties\": {}}}, \"required\": [\"name\", \"parameters\"]}]}}",
        0, NULL);
    assert_non_null(want);
    assert_true(json_equal(s, want));
    json_decref(s);
    json_decref(want);
    c.mode = KVS_TOOL_MODE_NAMED;
    snprintf(c.named, sizeof c.named, "a");
    s = kvs_chat_tool_choice_schema(&c, tools);
    assert_true(json_equal(s, json_object_get(json_object_get(json_array_get(tools, 0), "function"), "parameters")));
    json_decref(s);
    snprintf(c.named, sizeof c.named, "zz");
    assert_null(kvs_chat_tool_choice_schema(&c, tools));
    c.mode = KVS_TOOL_MODE_AUTO;
    assert_null(kvs_chat_tool_choice_schema(&c, tools));
    json_decref(tools);
}

static void test_names(void **state)
{
    (void)state;
    kvs_reasoning_kind r;
    kvs_tool_kind t;
    kvs_error err;
    assert_int_equal(kvs_reasoning_kind_from_name("qwen3", &r, &err), KVS_OK);
    assert_int_equal(r, KVS_REASONING_QWEN3);
    assert_int_equal(kvs_reasoning_kind_from_name("o1", &r, &err), KVS_E_INVALID);
    assert_int_equal(kvs_tool_kind_from_name("llama3_json", &t, &err), KVS_OK);
    assert_int_equal(t, KVS_TOOLS_LLAMA3_JSON);
    assert_int_equal(kvs_tool_kind_from_name("pythonic", &t, &err), KVS_E_INVALID);
    assert_non_null(strstr(err.msg, "hermes"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hermes), cmocka_unit_test(test_hermes_incremental),    cmocka_unit_test(test_llama3_json),        cmocka_unit_test(test_mistral),
        cmocka_unit_test(test_reasoning), cmocka_unit_test(test_required_and_named), cmocka_unit_test(test_names), cmocka_unit_test(test_tool_choice_schema),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
