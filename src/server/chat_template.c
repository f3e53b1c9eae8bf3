/* chat_template.c - recognising a chat template, validating messages and
 * dispatching to the native renderers (see chat_template.h). */
#include "server/chat_template.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/chat_internal.h"

/*
 * Recognition.  A format is chosen only when its template is the one its
 * renderer was written from: kvs_chat_template_tags() reduces the template to
 * its list of tags (checking that nothing outside them is printed), and that
 * must match the format's fingerprint (chat_markers.c): every statement on
 * the paths that plain system/user/assistant messages take, verbatim and in
 * order, with gaps allowed only in the bodies of tool-only branches.  The
 * fingerprint holds no template text, only segments of (number of tags, hash
 * of their text), see chat_fingerprint.c.  So a template reformatted or
 * changed in its tool handling is still recognised, while any change that
 * could alter our output makes it unsupported.  When nothing matches, the
 * family markers below name what it resembles.
 */
static const struct {
    const char *marker, *family;
} k_families[] = {
    {"<|start_header_id|>", "Llama 3"}, {"<|im_start|>", "ChatML/Qwen"},
    {"<｜User｜>", "DeepSeek"},       {"<start_of_turn>", "Gemma"},
    {"<|user|>", "Phi-3"},            {"[SYSTEM_PROMPT]", "Mistral"},
    {"[INST]", "Llama 2/Mistral"},
};

static const char *const k_names[KVS_CHAT_FORMAT_COUNT] = {
    [KVS_CHAT_LLAMA2] = "llama2",
    [KVS_CHAT_LLAMA3] = "llama3",
    [KVS_CHAT_LLAMA3_2] = "llama3.2",
    [KVS_CHAT_CHATML] = "chatml",
    [KVS_CHAT_QWEN2_5] = "qwen2.5",
    [KVS_CHAT_QWEN3] = "qwen3",
    [KVS_CHAT_MISTRAL_V3] = "mistral-v3",
    [KVS_CHAT_MISTRAL_NEMO] = "mistral-nemo",
    [KVS_CHAT_MISTRAL_SMALL3] = "mistral-small-3.2",
    [KVS_CHAT_GEMMA] = "gemma",
    [KVS_CHAT_PHI3] = "phi3",
    [KVS_CHAT_DEEPSEEK_R1] = "deepseek-r1",
};

/* Formats whose renderer reads text from the template (kvs_chat_opts.template_text). */
static const bool k_needs_template[KVS_CHAT_FORMAT_COUNT] = {
    [KVS_CHAT_QWEN2_5] = true,
    [KVS_CHAT_MISTRAL_SMALL3] = true,
};

#define SUPPORTED_LIST                                                                         \
    "llama2, llama3, llama3.2, chatml, qwen2.5, qwen3, mistral-v3, mistral-nemo, "            \
    "mistral-small-3.2, gemma, phi3, deepseek-r1"

const char *kvs_chat_format_name(kvs_chat_format f)
{
    if ((unsigned)f >= KVS_CHAT_FORMAT_COUNT)
        return "unknown";
    return k_names[f];
}

const char *kvs_chat_supported_list(void)
{
    return SUPPORTED_LIST;
}

/* Does the template, reduced to its tags, match one format's fingerprint?
 * Returns 1 and sets *out, 0 when none matches, -1 when out of memory. */
static int match_formats(const kvs_chat_span *tags, size_t n, kvs_chat_format *out)
{
    uint64_t *th = malloc((n ? n : 1) * sizeof *th); /* n <= strlen / 4: no overflow */
    if (!th)
        return -1;
    for (size_t i = 0; i < n; i++)
        th[i] = kvs_chat_tag_hash(tags[i]);
    int found = 0;
    for (int f = 0; !found && f < KVS_CHAT_FORMAT_COUNT; f++)
        if (kvs_chat_fingerprint_matches(&kvs_chat_fingerprints[f], th, n)) {
            *out = (kvs_chat_format)f;
            found = 1;
        }
    free(th);
    return found;
}

kvs_status kvs_chat_detect(const char *template_str, kvs_chat_format *out, kvs_error *err)
{
    if (!out)
        return kvs_fail(err, KVS_E_INVALID, "kvs_chat_detect: no output pointer");
    if (!template_str || !*template_str)
        return kvs_fail(err, KVS_E_NOT_FOUND, "model has no chat template");
    /* Match the fingerprints (chat_markers.c) on the tags alone: whitespace
     * between tags prints nothing.  A template that prints text outside its
     * tags matches no format. */
    kvs_chat_span *tags = NULL;
    size_t ntags = 0;
    int scan = kvs_chat_template_tags(template_str, &tags, &ntags);
    int found = scan == 1 ? match_formats(tags, ntags, out) : scan;
    free(tags);
    if (found < 0)
        return kvs_fail(err, KVS_E_NOMEM, "no memory to scan the chat template");
    if (found == 1)
        return KVS_OK;
    for (size_t i = 0; i < sizeof k_families / sizeof k_families[0]; i++)
        if (strstr(template_str, k_families[i].marker))
            return kvs_fail(err, KVS_E_UNSUPPORTED,
                            "chat template looks like %s (it contains \"%s\") but is a variant "
                            "kvserve cannot render exactly; supported: " SUPPORTED_LIST,
                            k_families[i].family, k_families[i].marker);
    return kvs_fail(err, KVS_E_UNSUPPORTED,
                    "chat template not recognised; supported: " SUPPORTED_LIST);
}

/* ---- rendering entry points ---- */

static kvs_status parse_role(const kvs_chat_msg *m, size_t i, kvs_chat_format f,
                             kvs_chat_role *out, kvs_error *err)
{
    if (!m->role || !m->content)
        return kvs_fail(err, KVS_E_INVALID, "message %zu: missing %s", i,
                        m->role ? "content" : "role");
    if (strcmp(m->role, "system") == 0)
        *out = KVS_ROLE_SYSTEM;
    else if (strcmp(m->role, "user") == 0)
        *out = KVS_ROLE_USER;
    else if (strcmp(m->role, "assistant") == 0)
        *out = KVS_ROLE_ASSISTANT;
    else if (strcmp(m->role, "tool") == 0)
        return kvs_fail(err, KVS_E_UNSUPPORTED,
                        "message %zu: role 'tool' is not supported by the %s chat format "
                        "renderer (tool calls need the Jinja interpreter)",
                        i, kvs_chat_format_name(f));
    else
        return kvs_fail(err, KVS_E_INVALID,
                        "message %zu: unknown role '%.64s' (expected system, user or assistant)",
                        i, m->role);
    return KVS_OK;
}

static const char k_months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

static kvs_status set_date(kvs_chat_ctx *c, const kvs_chat_opts *o, kvs_error *err)
{
    int y = 2024, m = 7, d = 26;
    if (o->year || o->month || o->day) {
        y = o->year;
        m = o->month;
        d = o->day;
        static const int mdays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
        bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        if (y < 1000 || y > 9999 || m < 1 || m > 12 || d < 1 || d > mdays[m - 1] ||
            (m == 2 && d == 29 && !leap))
            return kvs_fail(err, KVS_E_INVALID, "chat template date %d-%d-%d is not a date "
                            "in years 1000..9999", y, m, d);
    }
    snprintf(c->date_dmy, sizeof c->date_dmy, "%02d %s %04d", d, k_months[m - 1], y);
    snprintf(c->date_iso, sizeof c->date_iso, "%04d-%02d-%02d", y, m, d);
    return KVS_OK;
}

static kvs_status dispatch(kvs_chat_format f, const kvs_chat_ctx *c, kvs_chat_buf *b,
                           kvs_error *err)
{
    switch (f) {
    case KVS_CHAT_LLAMA2: return kvs_chat_render_llama2(c, b, err);
    case KVS_CHAT_LLAMA3: return kvs_chat_render_llama3(c, false, b, err);
    case KVS_CHAT_LLAMA3_2: return kvs_chat_render_llama3(c, true, b, err);
    case KVS_CHAT_CHATML: return kvs_chat_render_chatml(c, b, err);
    case KVS_CHAT_QWEN2_5: return kvs_chat_render_qwen2_5(c, b, err);
    case KVS_CHAT_QWEN3: return kvs_chat_render_qwen3(c, b, err);
    case KVS_CHAT_MISTRAL_V3: return kvs_chat_render_mistral_v3(c, b, err);
    case KVS_CHAT_MISTRAL_NEMO: return kvs_chat_render_mistral_nemo(c, b, err);
    case KVS_CHAT_MISTRAL_SMALL3: return kvs_chat_render_mistral_small3(c, b, err);
    case KVS_CHAT_GEMMA: return kvs_chat_render_gemma(c, b, err);
    case KVS_CHAT_PHI3: return kvs_chat_render_phi3(c, b, err);
    case KVS_CHAT_DEEPSEEK_R1: return kvs_chat_render_deepseek_r1(c, b, err);
    case KVS_CHAT_FORMAT_COUNT: break;
    }
    return kvs_fail(err, KVS_E_INVALID, "chat format %d out of range", (int)f);
}

kvs_status kvs_chat_render_opts(kvs_chat_format f, const kvs_chat_msg *msgs, size_t n,
                                const kvs_chat_opts *opts, char **out, kvs_error *err)
{
    static const kvs_chat_opts defaults = {0};
    if (!out)
        return kvs_fail(err, KVS_E_INVALID, "kvs_chat_render: no output pointer");
    *out = NULL;
    if ((unsigned)f >= KVS_CHAT_FORMAT_COUNT)
        return kvs_fail(err, KVS_E_INVALID, "chat format %d out of range", (int)f);
    if (n == 0 || !msgs)
        return kvs_fail(err, KVS_E_INVALID, "chat request has no messages");
    if (n > SIZE_MAX / sizeof(kvs_chat_role))
        return kvs_fail(err, KVS_E_INVALID, "chat request has too many messages (%zu)", n);
    if (!opts)
        opts = &defaults;

    kvs_chat_ctx c = {
        .msgs = msgs,
        .n = n,
        .gen = opts->add_generation_prompt,
        .bos = opts->bos ? opts->bos : "",
        .eos = opts->eos ? opts->eos : "",
        .date_string = opts->date_string,
        .disable_thinking = opts->disable_thinking,
        .format = f,
        .template_text = opts->template_text,
    };
    kvs_chat_buf b = {0};
    kvs_status st = set_date(&c, opts, err);
    if (st != KVS_OK)
        return st;
    kvs_chat_role *roles = malloc(n * sizeof *roles);
    if (!roles)
        return kvs_fail(err, KVS_E_NOMEM, "chat request: no memory for %zu messages", n);
    for (size_t i = 0; i < n; i++)
        if ((st = parse_role(&msgs[i], i, f, &roles[i], err)) != KVS_OK)
            goto done;
    c.roles = roles;
    /* Formats that print text of the template need it for every request, so
     * that a caller that does not pass it finds out at once. */
    if (k_needs_template[f] && !c.template_text) {
        st = kvs_fail(err, KVS_E_INVALID,
                      "the %s chat format takes its default system message from the model's "
                      "chat template: pass the template in kvs_chat_opts.template_text",
                      kvs_chat_format_name(f));
        goto done;
    }

    if ((st = dispatch(f, &c, &b, err)) != KVS_OK)
        goto done;
    kvs_chat_buf_put(&b, "", 0);
    if (!b.p && !b.oom) { /* an empty rendering is still a string */
        b.p = calloc(1, 1);
        b.oom = !b.p;
    }
    if (b.oom) {
        st = kvs_fail(err, KVS_E_NOMEM, "no memory for the %s prompt (%zu bytes so far)",
                      kvs_chat_format_name(f), b.len);
        goto done;
    }
    *out = b.p;
    b.p = NULL;
done:
    kvs_chat_buf_free(&b);
    free(roles);
    return st;
}

kvs_status kvs_chat_render(kvs_chat_format f, const kvs_chat_msg *msgs, size_t n,
                           bool add_generation_prompt, const char *bos, const char *eos,
                           char **out, kvs_error *err)
{
    kvs_chat_opts o = {.add_generation_prompt = add_generation_prompt, .bos = bos, .eos = eos};
    return kvs_chat_render_opts(f, msgs, n, &o, out, err);
}
