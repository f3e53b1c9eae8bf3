/* Chat templates (src/chat): the interpreter's API contracts that the Jinja2
 * oracle test (tests/py/test_chat_jinja.py) does not reach: error statuses
 * and messages, sandbox limits, named templates, continue_final_message,
 * template files, and rendering one template from several threads. */
#include <jansson.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "chat/chat.h"
#include "chat/jinja.h"
#include "formats/gguf.h"

static kvs_status render(const char *src, const char *vars_json, kvs_jinja_opts *o, char **out, kvs_error *err)
{
    kvs_jinja *t;
    kvs_status st = kvs_jinja_parse(src, strlen(src), &t, err);
    *out = NULL;
    if (st != KVS_OK)
        return st;
    json_t *vars = vars_json ? json_loads(vars_json, 0, NULL) : NULL;
    st = kvs_jinja_render(t, vars, o, out, NULL, err);
    json_decref(vars);
    kvs_jinja_free(t);
    return st;
}

static void expect_render(const char *src, const char *vars, const char *want)
{
    char *out;
    kvs_error err = {0};
    kvs_status st = render(src, vars, NULL, &out, &err);
    if (st != KVS_OK)
        fail_msg("%s: %s", src, err.msg);
    assert_string_equal(out, want);
    free(out);
}

static void test_basics(void **state)
{
    (void)state;
    expect_render("{% for m in messages %}[{{ m.role }}:{{ m.content }}]{% endfor %}",
                  "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}", "[user:hi]");
    expect_render("{{ x }}|{{ x is defined }}|{{ 1.0 }}|{{ {'a': [1, none]} }}", NULL,
                  "|False|1.0|{'a': [1, None]}");
    expect_render("  {% if true %}\n  a\n  {% endif %}\nb\n", NULL, "  a\nb");
    expect_render("{{ d|tojson }}", "{\"d\": {\"é\": [1, 2.5, null]}}", "{\"é\": [1, 2.5, null]}");
}

static void test_errors(void **state)
{
    (void)state;
    char *out;
    kvs_error err;
    kvs_jinja_opts o = {0};
    assert_int_equal(render("a\n{% if x %}b", NULL, NULL, &out, &err), KVS_E_INVALID);
    assert_non_null(strstr(err.msg, "line 2"));
    assert_null(out);
    assert_int_equal(render("{% include 'x' %}", NULL, NULL, &out, &err), KVS_E_UNSUPPORTED);
    assert_int_equal(render("{{ raise_exception('Roles must alternate') }}", NULL, &o, &out, &err), KVS_E_INVALID);
    assert_true(o.raised);
    assert_string_equal(err.msg, "Roles must alternate");
    assert_int_equal(render("{{ x.y }}", NULL, &o, &out, &err), KVS_E_INVALID);
    assert_false(o.raised);
    assert_non_null(strstr(err.msg, "'x' is undefined"));
    assert_int_equal(render("{{ [].append(1) }}", NULL, &o, &out, &err), KVS_E_INVALID);
    assert_non_null(strstr(err.msg, "unsafe"));
    assert_int_equal(render("{{ 1 / 0 }}", NULL, &o, &out, &err), KVS_E_INVALID);
    /* found by fuzz_jinja: a slice inside a tuple subscript */
    assert_int_equal(render("{{ (1, 2)[::, 1] }}", NULL, &o, &out, &err), KVS_E_UNSUPPORTED);
    assert_int_equal(render("{{ (1, 2)[0, ::2] }}", NULL, &o, &out, &err), KVS_E_UNSUPPORTED);
}

static void test_limits(void **state)
{
    (void)state;
    char *out;
    kvs_error err;
    kvs_jinja_opts o = {.max_steps = 10000};
    assert_int_equal(render("{% for i in range(100000) %}{% endfor %}", NULL, &o, &out, &err), KVS_E_BUDGET);
    o = (kvs_jinja_opts){.max_output = 1000};
    assert_int_equal(render("{% for i in range(10000) %}xx{% endfor %}", NULL, &o, &out, &err), KVS_E_BUDGET);
    o = (kvs_jinja_opts){.max_depth = 50};
    assert_int_equal(render("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", NULL, &o, &out, &err), KVS_E_BUDGET);
    o = (kvs_jinja_opts){.max_memory = 4u << 20};
    assert_int_equal(render("{% set ns = namespace(s='xxxxxxxx') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}"
                            "{% endfor %}",
                            NULL, &o, &out, &err),
                     KVS_E_BUDGET);
    assert_null(out);
}

static const char *const NAMED =
    "[{\"name\": \"default\", \"template\": \"D{{ messages|length }}\"},"
    " {\"name\": \"tool_use\", \"template\": \"T{{ tools|length }}\"}]";

static void test_named_templates(void **state)
{
    (void)state;
    kvs_chat_template *t;
    kvs_error err;
    assert_int_equal(kvs_chat_template_load(NAMED, &t, &err), KVS_OK);
    assert_int_equal(kvs_chat_template_count(t), 2);
    assert_string_equal(kvs_chat_template_name(t, 1), "tool_use");
    json_t *msgs = json_loads("[{\"role\": \"user\", \"content\": \"x\"}]", 0, NULL);
    json_t *tools = json_loads("[{\"type\": \"function\", \"function\": {\"name\": \"f\"}}]", 0, NULL);
    kvs_chat_input in = {.messages = msgs};
    char *out;
    assert_int_equal(kvs_chat_apply(t, &in, &out, &err), KVS_OK);
    assert_string_equal(out, "D1");
    free(out);
    in.tools = tools;
    assert_int_equal(kvs_chat_apply(t, &in, &out, &err), KVS_OK);
    assert_string_equal(out, "T1");
    free(out);
    in.template_name = "default";
    assert_int_equal(kvs_chat_apply(t, &in, &out, &err), KVS_OK);
    assert_string_equal(out, "D1");
    free(out);
    in.template_name = "nope";
    assert_int_equal(kvs_chat_apply(t, &in, &out, &err), KVS_E_NOT_FOUND);
    json_decref(msgs);
    json_decref(tools);
    kvs_chat_template_free(t);
}

static void test_continue_final_message(void **state)
{
    (void)state;
    kvs_chat_template *t;
    kvs_error err;
    assert_int_equal(kvs_chat_template_load("{% for m in messages %}<{{ m.role }}>{{ m.content }}</s>{% endfor %}"
                                            "{% if add_generation_prompt %}<assistant>{% endif %}",
                                            &t, &err),
                     KVS_OK);
    json_t *msgs = json_loads("[{\"role\": \"user\", \"content\": \"hi\"},"
                              " {\"role\": \"assistant\", \"content\": \"The answer is\"}]",
                              0, NULL);
    kvs_chat_input in = {.messages = msgs, .continue_final_message = true};
    char *out;
    assert_int_equal(kvs_chat_apply(t, &in, &out, &err), KVS_OK);
    assert_string_equal(out, "<user>hi</s><assistant>The answer is");
    free(out);
    in.add_generation_prompt = true;
    assert_int_equal(kvs_chat_apply(t, &in, &out, &err), KVS_E_INVALID);
    assert_non_null(strstr(err.msg, "not compatible"));
    json_decref(msgs);
    kvs_chat_template_free(t);
}

static void test_template_file(void **state)
{
    (void)state;
    const char *dir = getenv("KVS_BUILD_DIR");
    char path[1024];
    snprintf(path, sizeof path, "%s/test_chat_template_config.json", dir ? dir : ".");
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "{\"bos_token\": \"<s>\", \"chat_template\": %s}", NAMED);
    fclose(f);
    kvs_chat_template *t;
    kvs_error err;
    assert_int_equal(kvs_chat_template_load_file(path, &t, &err), KVS_OK);
    assert_int_equal(kvs_chat_template_count(t), 2);
    kvs_chat_template_free(t);
    const char *shared = getenv("KVS_SHARED");
    snprintf(path, sizeof path, "%s/templates/Qwen-Qwen3-0.6B.jinja", shared ? shared : "../shared");
    assert_int_equal(kvs_chat_template_load_file(path, &t, &err), KVS_OK);
    assert_true(kvs_chat_template_wants_parts(t) || !kvs_chat_template_wants_parts(t));
    kvs_chat_template_free(t);
    assert_int_equal(kvs_chat_template_load_file("/nonexistent/x.jinja", &t, &err), KVS_E_IO);
}

static void test_gguf_named(void **state)
{
    (void)state;
    const char *dir = getenv("KVS_BUILD_DIR");
    char path[1024];
    snprintf(path, sizeof path, "%s/test_chat_template_named.gguf", dir ? dir : ".");
    kvs_error err;
    kvs_gguf_writer *w = kvs_gguf_writer_new();
    assert_int_equal(kvs_gguf_writer_set_str(w, "general.architecture", "llama", &err), KVS_OK);
    assert_int_equal(kvs_gguf_writer_set_str(w, "tokenizer.chat_template", "D{{ messages|length }}", &err), KVS_OK);
    assert_int_equal(kvs_gguf_writer_set_str(w, "tokenizer.chat_template.tool_use", "T{{ tools|length }}", &err),
                     KVS_OK);
    assert_int_equal(kvs_gguf_writer_write(w, path, &err), KVS_OK);
    kvs_gguf_writer_free(w);
    kvs_gguf *g;
    assert_int_equal(kvs_gguf_open(&g, path, &err), KVS_OK);
    kvs_chat_template *t;
    assert_int_equal(kvs_chat_template_from_gguf(g, &t, &err), KVS_OK);
    kvs_gguf_close(g);
    assert_int_equal(kvs_chat_template_count(t), 2);
    assert_string_equal(kvs_chat_template_name(t, 0), "default");
    assert_string_equal(kvs_chat_template_name(t, 1), "tool_use");
    json_t *msgs = json_loads("[{\"role\": \"user\", \"content\": \"x\"}]", 0, NULL);
    json_t *tools = json_loads("[{\"type\": \"function\", \"function\": {\"name\": \"f\"}}]", 0, NULL);
    kvs_chat_input in = {.messages = msgs, .tools = tools};
    char *out;
    assert_int_equal(kvs_chat_apply(t, &in, &out, &err), KVS_OK);
    assert_string_equal(out, "T1");
    free(out);
    json_decref(msgs);
    json_decref(tools);
    kvs_chat_template_free(t);
}

typedef struct {
    const kvs_jinja *t;
    json_t *vars;
    int ok;
} thread_arg;

static void *render_many(void *p)
{
    thread_arg *a = p;
    for (int i = 0; i < 200; i++) {
        char *out;
        kvs_error err;
        if (kvs_jinja_render(a->t, a->vars, NULL, &out, NULL, &err) == KVS_OK && strcmp(out, "u:a|u:b|") == 0)
            a->ok++;
        free(out);
    }
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    const char *src = "{% for m in messages %}{{ m.role[0] }}:{{ m.content }}|{% endfor %}";
    kvs_jinja *t;
    kvs_error err;
    assert_int_equal(kvs_jinja_parse(src, strlen(src), &t, &err), KVS_OK);
    json_t *vars = json_loads("{\"messages\": [{\"role\": \"user\", \"content\": \"a\"},"
                              " {\"role\": \"user\", \"content\": \"b\"}]}",
                              0, NULL);
    pthread_t th[4];
    thread_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (thread_arg){t, vars, 0};
        pthread_create(&th[i], NULL, render_many, &args[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(args[i].ok, 200);
    }
    json_decref(vars);
    kvs_jinja_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basics),           cmocka_unit_test(test_errors),
        cmocka_unit_test(test_limits),           cmocka_unit_test(test_named_templates),
        cmocka_unit_test(test_continue_final_message), cmocka_unit_test(test_template_file),
        cmocka_unit_test(test_threads),          cmocka_unit_test(test_gguf_named),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
