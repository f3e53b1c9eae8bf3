/* test_chat_template.c - chat-template detection and the error paths of
 * rendering.  (Byte-exact rendering is checked against Jinja2 by
 * tests/py/test_chat_templates.py.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "server/chat_internal.h"
#include "server/chat_template.h"

static char *read_template(const char *name)
{
    const char *shared = getenv("KVS_SHARED");
    assert_non_null(shared);
    char path[1024];
    snprintf(path, sizeof path, "%s/templates/%s", shared, name);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    assert_non_null(s);
    assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
    s[n] = '\0';
    fclose(f);
    return s;
}

static kvs_chat_format detect_file(const char *name)
{
    char *t = read_template(name);
    kvs_chat_format f = KVS_CHAT_FORMAT_COUNT;
    kvs_error err = {0};
    kvs_status st = kvs_chat_detect(t, &f, &err);
    if (st != KVS_OK)
        fail_msg("%s: %s", name, err.msg);
    free(t);
    return f;
}

static void test_detect_shared_templates(void **state)
{
    (void)state;
    static const struct {
        const char *file;
        kvs_chat_format f;
    } cases[] = {
        {"hf-internal-testing-llama-tokenizer-llama2.jinja", KVS_CHAT_LLAMA2},
        {"meta-llama-Llama-3.1-8B-Instruct.jinja", KVS_CHAT_LLAMA3},
        {"meta-llama-Llama-3.2-3B-Instruct.jinja", KVS_CHAT_LLAMA3_2},
        {"Qwen-Qwen2.5-7B-Instruct.jinja", KVS_CHAT_QWEN2_5},
        {"Qwen-Qwen3-0.6B.jinja", KVS_CHAT_QWEN3},
        {"Qwen-Qwen3-Coder-30B-A3B-Instruct.jinja", KVS_CHAT_CHATML},
        {"mistralai-Mistral-7B-Instruct-v0.3.jinja", KVS_CHAT_MISTRAL_V3},
        {"mistralai-Mistral-Nemo-Instruct-2407.jinja", KVS_CHAT_MISTRAL_NEMO},
        {"Mistral-Small-3.2-24B-Instruct-2506.jinja", KVS_CHAT_MISTRAL_SMALL3},
        {"google-gemma-2-2b-it.jinja", KVS_CHAT_GEMMA},
        {"microsoft-Phi-3.5-mini-instruct.jinja", KVS_CHAT_PHI3},
        {"deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja", KVS_CHAT_DEEPSEEK_R1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_int_equal(detect_file(cases[i].file), cases[i].f);
}

static void test_detect_missing(void **state)
{
    (void)state;
    kvs_chat_format f;
    kvs_error err = {0};
    assert_int_equal(kvs_chat_detect(NULL, &f, &err), KVS_E_NOT_FOUND);
    assert_string_equal(err.msg, "model has no chat template");
    assert_int_equal(err.status, KVS_E_NOT_FOUND);
    assert_int_equal(kvs_chat_detect("", &f, &err), KVS_E_NOT_FOUND);
    assert_int_equal(kvs_chat_detect("", &f, NULL), KVS_E_NOT_FOUND);
    assert_int_equal(kvs_chat_detect("x", NULL, &err), KVS_E_INVALID);
}

static void test_detect_unknown(void **state)
{
    (void)state;
    kvs_chat_format f;
    kvs_error err = {0};
    static const char *const unknown[] = {
        "{% for m in messages %}{{ m.content }}{% endfor %}",
        "plain text",
        "{{ unterminated",
        "{% raw %}<|im_start|>{% endraw %}",
    };
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        assert_int_equal(kvs_chat_detect(unknown[i], &f, &err), KVS_E_UNSUPPORTED);
        assert_non_null(strstr(err.msg, "supported: llama2, llama3"));
    }
    assert_int_equal(kvs_chat_detect(unknown[0], &f, &err), KVS_E_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "chat template not recognised"));
    /* The message lists every format. */
    for (int i = 0; i < KVS_CHAT_FORMAT_COUNT; i++)
        assert_non_null(strstr(err.msg, kvs_chat_format_name((kvs_chat_format)i)));
}

/* A known family with a change that alters the output is refused. */
static void test_detect_near_miss(void **state)
{
    (void)state;
    kvs_error err = {0};
    kvs_chat_format f;
    char *t = read_template("meta-llama-Llama-3.1-8B-Instruct.jinja");
    char *p = strstr(t, "December 2023");
    assert_non_null(p);
    p[12] = '4'; /* "December 2024" */
    assert_int_equal(kvs_chat_detect(t, &f, &err), KVS_E_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "looks like Llama 3"));
    free(t);

    /* Text printed between statements is output too. */
    t = read_template("Qwen-Qwen2.5-7B-Instruct.jinja");
    size_t n = strlen(t);
    char *u = malloc(n + 3);
    assert_non_null(u);
    memcpy(u, t, n);
    memcpy(u + n, "\nX", 3);
    assert_int_equal(kvs_chat_detect(u, &f, &err), KVS_E_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "ChatML"));
    /* ...but whitespace that Jinja strips is not (the template ends in
     * "%}\n": trim_blocks takes one newline, the end of the source one). */
    memcpy(u + n, "\n", 2);
    assert_int_equal(kvs_chat_detect(u, &f, &err), KVS_OK);
    assert_int_equal(f, KVS_CHAT_QWEN2_5);
    /* Jinja2 prints these, so they are text: */
    memcpy(u + n, "\n\n", 3);
    assert_int_equal(kvs_chat_detect(u, &f, &err), KVS_E_UNSUPPORTED);
    memcpy(u + n, "  ", 3);
    assert_int_equal(kvs_chat_detect(u, &f, &err), KVS_E_UNSUPPORTED);
    free(u);
    free(t);
}

static void test_format_names(void **state)
{
    (void)state;
    const char *list = kvs_chat_supported_list();
    for (int i = 0; i < KVS_CHAT_FORMAT_COUNT; i++) {
        const char *name = kvs_chat_format_name((kvs_chat_format)i);
        assert_string_not_equal(name, "unknown");
        assert_non_null(strstr(list, name));
        for (int j = 0; j < i; j++)
            assert_string_not_equal(name, kvs_chat_format_name((kvs_chat_format)j));
    }
    assert_string_equal(kvs_chat_format_name(KVS_CHAT_FORMAT_COUNT), "unknown");
    assert_string_equal(kvs_chat_format_name((kvs_chat_format)-1), "unknown");
}

/* Render with the given template text and expect failure with `st` and a
 * message containing `text`. */
static void expect_fail_tmpl(kvs_chat_format f, const char *tmpl, const kvs_chat_msg *m,
                             size_t n, kvs_status st, const char *text)
{
    kvs_error err = {0};
    char *out = (char *)1;
    kvs_chat_opts o = {.add_generation_prompt = true, .bos = "<s>", .eos = "</s>",
                       .template_text = tmpl};
    assert_int_equal(kvs_chat_render_opts(f, m, n, &o, &out, &err), st);
    assert_null(out);
    assert_int_equal(err.status, st);
    if (!strstr(err.msg, text))
        fail_msg("expected '%s' in '%s'", text, err.msg);
}

/* Render without template text and expect failure with `st` and a message
 * containing `text`. */
static void expect_fail(kvs_chat_format f, const kvs_chat_msg *m, size_t n, kvs_status st,
                        const char *text)
{
    kvs_error err = {0};
    char *out = (char *)1;
    assert_int_equal(kvs_chat_render(f, m, n, true, "<s>", "</s>", &out, &err), st);
    assert_null(out);
    assert_int_equal(err.status, st);
    if (!strstr(err.msg, text))
        fail_msg("expected '%s' in '%s'", text, err.msg);
}

static void test_bad_arguments(void **state)
{
    (void)state;
    kvs_chat_msg one[] = {{"user", "hi"}};
    char *out = NULL;
    kvs_error err = {0};
    expect_fail(KVS_CHAT_LLAMA3, one, 0, KVS_E_INVALID, "no messages");
    expect_fail(KVS_CHAT_LLAMA3, NULL, 1, KVS_E_INVALID, "no messages");
    expect_fail(KVS_CHAT_FORMAT_COUNT, one, 1, KVS_E_INVALID, "out of range");
    expect_fail((kvs_chat_format)-3, one, 1, KVS_E_INVALID, "out of range");
    assert_int_equal(kvs_chat_render(KVS_CHAT_LLAMA3, one, 1, true, NULL, NULL, NULL, &err),
                     KVS_E_INVALID);
    /* err may be NULL. */
    assert_int_equal(kvs_chat_render(KVS_CHAT_LLAMA3, one, 0, true, NULL, NULL, &out, NULL),
                     KVS_E_INVALID);
    assert_null(out);
}

static void test_bad_roles(void **state)
{
    (void)state;
    for (int f = 0; f < KVS_CHAT_FORMAT_COUNT; f++) {
        kvs_chat_msg unknown[] = {{"user", "a"}, {"developer", "b"}};
        expect_fail((kvs_chat_format)f, unknown, 2, KVS_E_INVALID, "unknown role 'developer'");
        kvs_chat_msg tool[] = {{"user", "a"}, {"tool", "42"}};
        expect_fail((kvs_chat_format)f, tool, 2, KVS_E_UNSUPPORTED, "role 'tool'");
        kvs_chat_msg no_role[] = {{NULL, "a"}};
        expect_fail((kvs_chat_format)f, no_role, 1, KVS_E_INVALID, "missing role");
        kvs_chat_msg no_content[] = {{"user", NULL}};
        expect_fail((kvs_chat_format)f, no_content, 1, KVS_E_INVALID, "missing content");
        kvs_chat_msg upper[] = {{"User", "a"}};
        expect_fail((kvs_chat_format)f, upper, 1, KVS_E_INVALID, "unknown role 'User'");
    }
}

static void test_template_errors(void **state)
{
    (void)state;
    static const char alt[] = "Conversation roles must alternate user/assistant/user/assistant/...";
    static const char mistral_alt[] = "After the optional system message, conversation roles "
                                      "must alternate user/assistant/user/assistant/...";
    kvs_chat_msg user_user[] = {{"user", "a"}, {"user", "b"}};
    kvs_chat_msg assistant_first[] = {{"assistant", "a"}, {"user", "b"}};
    kvs_chat_msg sys_user_user[] = {{"system", "s"}, {"user", "a"}, {"user", "b"}};
    kvs_chat_msg sys_first[] = {{"system", "s"}, {"user", "a"}};
    kvs_chat_msg sys_middle[] = {{"user", "a"}, {"system", "s"}, {"user", "b"}};

    expect_fail(KVS_CHAT_LLAMA2, user_user, 2, KVS_E_INVALID, alt);
    expect_fail(KVS_CHAT_LLAMA2, assistant_first, 2, KVS_E_INVALID, alt);
    expect_fail(KVS_CHAT_LLAMA2, sys_user_user, 3, KVS_E_INVALID, alt);
    expect_fail(KVS_CHAT_GEMMA, user_user, 2, KVS_E_INVALID, alt);
    expect_fail(KVS_CHAT_GEMMA, sys_first, 2, KVS_E_INVALID, "System role not supported");
    expect_fail(KVS_CHAT_MISTRAL_NEMO, user_user, 2, KVS_E_INVALID, mistral_alt);
    expect_fail(KVS_CHAT_MISTRAL_NEMO, sys_middle, 3, KVS_E_INVALID,
                "Only user and assistant roles are supported");
    char *t = read_template("Mistral-Small-3.2-24B-Instruct-2506.jinja");
    expect_fail_tmpl(KVS_CHAT_MISTRAL_SMALL3, t, assistant_first, 2, KVS_E_INVALID,
                     mistral_alt);
    free(t);
}

/* Qwen2.5 and Mistral Small 3.2 read their default system message from the
 * template: without it, or with another format's template, they refuse. */
static void test_template_text(void **state)
{
    (void)state;
    kvs_chat_msg user[] = {{"user", "hi"}};
    kvs_chat_msg sys_user[] = {{"system", "s"}, {"user", "hi"}};
    static const char need[] = "pass the template in kvs_chat_opts.template_text";
    expect_fail(KVS_CHAT_QWEN2_5, user, 1, KVS_E_INVALID, need);
    expect_fail(KVS_CHAT_MISTRAL_SMALL3, user, 1, KVS_E_INVALID, need);
    /* Also when the default is not printed, so that a caller finds out at once. */
    expect_fail(KVS_CHAT_MISTRAL_SMALL3, sys_user, 2, KVS_E_INVALID, need);
    char *llama = read_template("meta-llama-Llama-3.1-8B-Instruct.jinja");
    expect_fail_tmpl(KVS_CHAT_MISTRAL_SMALL3, llama, user, 1, KVS_E_INVALID,
                     "is not a mistral-small-3.2 chat template");
    expect_fail_tmpl(KVS_CHAT_QWEN2_5, llama, user, 1, KVS_E_INVALID,
                     "is not a qwen2.5 chat template");
    expect_fail_tmpl(KVS_CHAT_QWEN2_5, "", user, 1, KVS_E_INVALID, "is not a qwen2.5");
    /* Formats that need no template text ignore it. */
    kvs_error err = {0};
    char *out = NULL;
    kvs_chat_opts o = {.template_text = "not a template"};
    assert_int_equal(kvs_chat_render_opts(KVS_CHAT_LLAMA3, user, 1, &o, &out, &err), KVS_OK);
    free(out);
    free(llama);

    /* With its template, Mistral Small 3.2 prints the template's default
     * (byte-exactness is checked against Jinja2 by test_chat_templates.py)
     * around the date given. */
    char *t = read_template("Mistral-Small-3.2-24B-Instruct-2506.jinja");
    o = (kvs_chat_opts){.bos = "<s>", .template_text = t, .year = 2025, .month = 1, .day = 5};
    assert_int_equal(kvs_chat_render_opts(KVS_CHAT_MISTRAL_SMALL3, user, 1, &o, &out, &err),
                     KVS_OK);
    static const char head[] = "<s>[SYSTEM_PROMPT]", tail[] = "[/SYSTEM_PROMPT][INST]hi[/INST]";
    size_t n = strlen(out);
    assert_true(n > 1000);
    assert_memory_equal(out, head, strlen(head));
    assert_string_equal(out + n - strlen(tail), tail);
    assert_non_null(strstr(out, " 2025-01-05."));
    assert_ptr_equal(strstr(out + strlen(head), "["), out + n - strlen(tail));
    free(out);
    free(t);

    /* Statements that the fingerprint does not pin cannot be read. */
    t = read_template("Qwen-Qwen2.5-7B-Instruct.jinja");
    kvs_chat_span sp;
    assert_int_equal(kvs_chat_template_statement(t, KVS_CHAT_QWEN2_5, 6, &sp, &err),
                     KVS_E_INTERNAL);
    assert_int_equal(kvs_chat_template_statement(t, KVS_CHAT_QWEN2_5, 18, &sp, &err), KVS_OK);
    assert_true(sp.n > 4 && memcmp(sp.p, "{{- '<|im_start|>system", 23) == 0);
    assert_int_equal(kvs_chat_template_statement(t, KVS_CHAT_FORMAT_COUNT, 18, &sp, &err),
                     KVS_E_INVALID);
    free(t);
}

/* Evaluate `expr` (today = "D") and expect `want`, or failure with `st`. */
static void expect_expr(const char *expr, kvs_status st, const char *want)
{
    static const kvs_chat_var today = {"today", "D"};
    kvs_chat_buf b = {0};
    kvs_error err = {0};
    kvs_status got = kvs_chat_expr_value(kvs_chat_span_of(expr), &today, 1, &b, &err);
    if (got != st)
        fail_msg("%s: status %d, expected %d (%s)", expr, got, st, err.msg);
    if (st == KVS_OK) {
        kvs_chat_buf_put(&b, "", 0);
        assert_false(b.oom);
        assert_string_equal(b.p ? b.p : "", want);
    } else {
        assert_string_equal(err.msg + strlen(err.msg) - strlen(want), want);
    }
    kvs_chat_buf_free(&b);
}

/* The refusals of the expression evaluator (the values themselves are
 * checked against Jinja2 by test_chat_templates.py). */
static void test_expr_refusals(void **state)
{
    (void)state;
    expect_expr("'a' + today + \"b\"", KVS_OK, "aDb");
    expect_expr("", KVS_E_INVALID, "where a value is expected");
    expect_expr("'a' +", KVS_E_INVALID, "where a value is expected");
    expect_expr("'a", KVS_E_INVALID, "unterminated string literal");
    expect_expr("'a\\'", KVS_E_INVALID, "unterminated string literal");
    expect_expr("'a' - 'b'", KVS_E_UNSUPPORTED, "unsupported '-' (only string literals and "
                                                "variables joined by '+')");
    expect_expr("today 'b'", KVS_E_UNSUPPORTED, "joined by '+')");
    expect_expr("nope", KVS_E_UNSUPPORTED, "unknown variable 'nope'");
    expect_expr("'\\0'", KVS_E_UNSUPPORTED, "NUL character (escape \\0 or \\x00)");
    expect_expr("'\\x00'", KVS_E_UNSUPPORTED, "(escape \\0 or \\x00)");
    expect_expr("'\\udc00'", KVS_E_UNSUPPORTED, "lone surrogate U+DC00, which is not UTF-8");
    expect_expr("'\\N{DASH}'", KVS_E_UNSUPPORTED, "which kvserve does not support");
    expect_expr("'\\x4'", KVS_E_INVALID, "truncated \\x escape (2 hex digits expected)");
    expect_expr("'\\U00110000'", KVS_E_INVALID, "illegal Unicode character \\U00110000");
    expect_expr("'\\\xff'", KVS_E_INVALID, "is not valid UTF-8");

    kvs_chat_buf b = {0};
    kvs_error err = {0};
    kvs_chat_span lit = kvs_chat_span_of("'a\\'");
    lit.n--; /* "'a\" */
    assert_int_equal(kvs_chat_literal_value(lit, &b, &err), KVS_E_INVALID);
    assert_int_equal(kvs_chat_literal_value(kvs_chat_span_of("'a\\'"), &b, &err),
                     KVS_E_INVALID);
    assert_non_null(strstr(err.msg, "ends in a backslash"));
    assert_int_equal(kvs_chat_literal_value(kvs_chat_span_of("'a\""), &b, &err),
                     KVS_E_INVALID);
    assert_int_equal(kvs_chat_literal_value(kvs_chat_span_of("'"), &b, &err), KVS_E_INVALID);
    assert_non_null(strstr(err.msg, "not a string literal"));

    /* Tags: the statement must be the expected kind. */
    b.len = 0; /* a failed evaluation may leave part of the value */
    assert_int_equal(kvs_chat_tag_value(kvs_chat_span_of("{%- set x = 'v' -%}"), "x", NULL, 0,
                                        &b, &err), KVS_OK);
    assert_int_equal(kvs_chat_tag_value(kvs_chat_span_of("{{+ 'w' }}"), NULL, NULL, 0, &b,
                                        &err), KVS_OK);
    kvs_chat_buf_put(&b, "", 0);
    assert_string_equal(b.p, "vw");
    static const char *const bad_set[] = {
        "{{ 'v' }}", "{% set y = 'v' %}", "{% set xy = 'v' %}", "{% setx = 'v' %}",
        "{% set x 'v' %}", "{% set x %}", "{%%}", "{% set x = 'v' }}",
    };
    for (size_t i = 0; i < sizeof bad_set / sizeof bad_set[0]; i++)
        assert_int_equal(kvs_chat_tag_value(kvs_chat_span_of(bad_set[i]), "x", NULL, 0, &b,
                                            &err), KVS_E_INVALID);
    assert_int_equal(kvs_chat_tag_value(kvs_chat_span_of("{% set x = 'v' %}"), NULL, NULL, 0,
                                        &b, &err), KVS_E_INVALID);
    assert_non_null(strstr(err.msg, "is not a {{ ... }} tag"));
    kvs_chat_buf_free(&b);
}

static void test_dates(void **state)
{
    (void)state;
    kvs_chat_msg m[] = {{"user", "hi"}};
    kvs_error err = {0};
    char *out = NULL;
    static const int bad[][3] = {{2023, 2, 29}, {2024, 13, 1}, {2024, 4, 31}, {999, 1, 1},
                                 {10000, 1, 1}, {2024, 0, 5}, {0, 0, 1}, {1900, 2, 29}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        kvs_chat_opts o = {.year = bad[i][0], .month = bad[i][1], .day = bad[i][2]};
        assert_int_equal(kvs_chat_render_opts(KVS_CHAT_LLAMA3_2, m, 1, &o, &out, &err),
                         KVS_E_INVALID);
        assert_null(out);
    }
    /* Llama 3.2 prints the given day; a NULL opts is the default date. */
    kvs_chat_opts o = {.year = 2000, .month = 2, .day = 29};
    assert_int_equal(kvs_chat_render_opts(KVS_CHAT_LLAMA3_2, m, 1, &o, &out, &err), KVS_OK);
    assert_non_null(strstr(out, "Today Date: 29 Feb 2000\n"));
    free(out);
    assert_int_equal(kvs_chat_render_opts(KVS_CHAT_LLAMA3_2, m, 1, NULL, &out, &err), KVS_OK);
    assert_non_null(strstr(out, "Today Date: 26 Jul 2024\n"));
    free(out);
}

/* The fingerprint matcher on made-up tags: t0..t9 stand for ten distinct
 * tags; a segment is a run of them. */
static kvs_chat_segment seg_of(const uint64_t *th, size_t first, size_t n)
{
    return (kvs_chat_segment){(uint32_t)n, kvs_chat_seg_hash(th + first, n)};
}

static bool matches(const kvs_chat_segment *seg, size_t nseg, const uint64_t *th, size_t n)
{
    kvs_chat_fingerprint fp = {seg, nseg};
    return kvs_chat_fingerprint_matches(&fp, th, n);
}

static void test_fingerprint_match(void **state)
{
    (void)state;
    static const char *const text[] = {"{{ a }}", "{% b %}", "{% c %}", "{{ d }}", "{% e %}",
                                       "{% f %}", "{{ g }}", "{% h %}", "{% i %}", "{{ j }}"};
    uint64_t th[10];
    for (size_t i = 0; i < 10; i++)
        th[i] = kvs_chat_tag_hash(kvs_chat_span_of(text[i]));
    /* The FNV-1a 64 reference value of "a", and a hash that depends on order. */
    assert_true(kvs_chat_tag_hash(kvs_chat_span_of("a")) == UINT64_C(0xaf63dc4c8601ec8c));
    uint64_t rev[2] = {th[1], th[0]};
    assert_true(kvs_chat_seg_hash(th, 2) != kvs_chat_seg_hash(rev, 2));
    assert_true(kvs_chat_seg_hash(th, 0) == KVS_CHAT_SEG_SEED);

    /* One segment: the whole list exactly. */
    kvs_chat_segment whole = seg_of(th, 0, 10);
    assert_true(matches(&whole, 1, th, 10));
    assert_false(matches(&whole, 1, th, 9));
    assert_false(matches(&whole, 0, th, 10));
    /* t0-t1 at the start, t4-t5 somewhere, t8-t9 at the end. */
    kvs_chat_segment s[3] = {seg_of(th, 0, 2), seg_of(th, 4, 2), seg_of(th, 8, 2)};
    assert_true(matches(s, 3, th, 10));
    assert_false(matches(s, 3, th + 1, 9)); /* t0 missing: not at the start */
    assert_false(matches(s, 3, th, 9));     /* t9 missing: not at the end */
    /* The middle one may not overlap the last: t0 t1 t8 t9 with t8-t9 in the middle. */
    uint64_t four[4] = {th[0], th[1], th[8], th[9]};
    kvs_chat_segment s2[3] = {seg_of(th, 0, 2), seg_of(th, 8, 2), seg_of(th, 8, 2)};
    assert_false(matches(s2, 3, four, 4));
    assert_true(matches(s2, 2, four, 4));
    /* Order: t4-t5 before t2-t3 is not t2-t3 before t4-t5. */
    kvs_chat_segment s3[4] = {seg_of(th, 0, 2), seg_of(th, 4, 2), seg_of(th, 2, 2),
                              seg_of(th, 8, 2)};
    assert_false(matches(s3, 4, th, 10));
    /* Gaps at either end are segments of 0 tags. */
    kvs_chat_segment s4[3] = {seg_of(th, 0, 0), seg_of(th, 3, 3), seg_of(th, 0, 0)};
    assert_true(matches(s4, 3, th, 10));
    assert_true(matches(s4, 3, th + 3, 3));
    assert_false(matches(s4, 3, th + 4, 6));
    assert_false(matches(s4, 3, th, 0));
    /* A segment is found at tag boundaries only, by its hash: a single tag
     * with the two tags' text joined is not the two tags. */
    kvs_chat_span joined = kvs_chat_span_of("{{ a }}{% b %}");
    uint64_t one = kvs_chat_tag_hash(joined);
    kvs_chat_segment s5 = seg_of(th, 0, 2);
    assert_false(matches(&s5, 1, &one, 1));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_detect_shared_templates),
        cmocka_unit_test(test_detect_missing),
        cmocka_unit_test(test_detect_unknown),
        cmocka_unit_test(test_detect_near_miss),
        cmocka_unit_test(test_format_names),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_bad_roles),
        cmocka_unit_test(test_template_errors),
        cmocka_unit_test(test_template_text),
        cmocka_unit_test(test_expr_refusals),
        cmocka_unit_test(test_dates),
        cmocka_unit_test(test_fingerprint_match),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
