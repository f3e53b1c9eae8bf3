/* chat.c - apply_chat_template over the Jinja interpreter (see chat.h). */
#include <stdlib.h>
#include <string.h>

#include "chat/chat.h"
#include "chat/jinja.h"
#include "formats/gguf.h"

#define KVS_CHAT_MAX_TEMPLATES 16

struct kvs_chat_template {
    size_t n;
    char *names[KVS_CHAT_MAX_TEMPLATES];
    char *texts[KVS_CHAT_MAX_TEMPLATES];
    kvs_jinja *tmpl[KVS_CHAT_MAX_TEMPLATES];
};

void kvs_chat_template_free(kvs_chat_template *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->n; i++) {
        free(t->names[i]);
        free(t->texts[i]);
        kvs_jinja_free(t->tmpl[i]);
    }
    free(t);
}

static kvs_status add_one(kvs_chat_template *t, const char *name, const char *text, kvs_error *err)
{
    if (t->n == KVS_CHAT_MAX_TEMPLATES)
        return kvs_fail(err, KVS_E_INVALID, "more than %d named chat templates", KVS_CHAT_MAX_TEMPLATES);
    kvs_jinja *j;
    kvs_status st = kvs_jinja_parse(text, strlen(text), &j, err);
    if (st != KVS_OK) {
        if (strcmp(name, "default") != 0)
            kvs_fail_wrap(err, "chat template '%s'", name);
        return st;
    }
    t->names[t->n] = strdup(name);
    t->texts[t->n] = strdup(text);
    t->tmpl[t->n] = j;
    if (!t->names[t->n] || !t->texts[t->n]) {
        free(t->names[t->n]);
        free(t->texts[t->n]);
        kvs_jinja_free(j);
        return kvs_fail(err, KVS_E_NOMEM, "out of memory");
    }
    t->n++;
    return KVS_OK;
}

static kvs_status load_json_list(kvs_chat_template *t, json_t *list, kvs_error *err)
{
    size_t i;
    json_t *e;
    json_array_foreach(list, i, e)
    {
        json_t *name = json_object_get(e, "name"), *tmpl = json_object_get(e, "template");
        if (!json_is_string(name) || !json_is_string(tmpl))
            return kvs_fail(err, KVS_E_INVALID, "named chat template %zu must be {\"name\": str, \"template\": str}",
                            i);
        kvs_status st = add_one(t, json_string_value(name), json_string_value(tmpl), err);
        if (st != KVS_OK)
            return st;
    }
    if (t->n == 0)
        return kvs_fail(err, KVS_E_INVALID, "the list of named chat templates is empty");
    return KVS_OK;
}

kvs_status kvs_chat_template_load(const char *text, kvs_chat_template **out, kvs_error *err)
{
    *out = NULL;
    if (!text || !*text)
        return kvs_fail(err, KVS_E_NOT_FOUND, "no chat template");
    kvs_chat_template *t = calloc(1, sizeof *t);
    if (!t)
        return kvs_fail(err, KVS_E_NOMEM, "out of memory");
    kvs_status st;
    const char *p = text;
    while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r')
        p++;
    json_t *list = *p == '[' ? json_loads(text, 0, NULL) : NULL;
    if (list && json_is_array(list))
        st = load_json_list(t, list, err);
    else
        st = add_one(t, "default", text, err);
    json_decref(list);
    if (st != KVS_OK) {
        kvs_chat_template_free(t);
        return st;
    }
    *out = t;
    return KVS_OK;
}

kvs_status kvs_chat_template_load_file(const char *path, kvs_chat_template **out, kvs_error *err)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return kvs_fail(err, KVS_E_IO, "cannot open chat template '%s'", path);
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n + 65536 + 1 > cap) {
            cap = cap ? cap * 2 : 131072;
            if (cap > ((size_t)64 << 20)) {
                free(buf);
                fclose(f);
                return kvs_fail(err, KVS_E_INVALID, "chat template '%s' is larger than 64 MiB", path);
            }
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                return kvs_fail(err, KVS_E_NOMEM, "out of memory");
            }
            buf = nb;
        }
        size_t r = fread(buf + n, 1, 65536, f);
        n += r;
        if (r == 0)
            break;
    }
    fclose(f);
    buf[n] = '\0';
    kvs_status st;
    const char *p = buf;
    while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r')
        p++;
    json_t *j = *p == '{' ? json_loadb(buf, n, 0, NULL) : NULL;
    if (j && json_is_object(j)) {
        json_t *ct = json_object_get(j, "chat_template");
        if (json_is_string(ct)) {
            st = kvs_chat_template_load(json_string_value(ct), out, err);
        } else if (json_is_array(ct)) {
            kvs_chat_template *t = calloc(1, sizeof *t);
            st = t ? load_json_list(t, ct, err) : kvs_fail(err, KVS_E_NOMEM, "out of memory");
            if (st == KVS_OK)
                *out = t;
            else
                kvs_chat_template_free(t);
        } else {
            st = kvs_fail(err, KVS_E_NOT_FOUND, "'%s' has no \"chat_template\"", path);
        }
    } else if (strlen(buf) != n) {
        st = kvs_fail(err, KVS_E_INVALID, "chat template '%s' contains a NUL byte", path);
    } else {
        st = kvs_chat_template_load(buf, out, err);
    }
    json_decref(j);
    free(buf);
    if (st != KVS_OK)
        kvs_fail_wrap(err, "'%s'", path);
    return st;
}

kvs_status kvs_chat_template_from_gguf(const kvs_gguf *g, kvs_chat_template **out, kvs_error *err)
{
    *out = NULL;
    kvs_chat_template *t = calloc(1, sizeof *t);
    if (!t)
        return kvs_fail(err, KVS_E_NOMEM, "out of memory");
    static const char prefix[] = "tokenizer.chat_template";
    kvs_status st = KVS_OK;
    for (size_t i = 0; i < kvs_gguf_n_kv(g) && st == KVS_OK; i++) {
        const char *key = kvs_gguf_kv_key(g, i);
        if (strncmp(key, prefix, sizeof prefix - 1) != 0 || kvs_gguf_kv_type(g, i) != KVS_GGUF_STRING)
            continue;
        const char *name = key + sizeof prefix - 1;
        if (*name == '\0')
            name = "default";
        else if (*name == '.' && name[1])
            name++;
        else
            continue;
        const char *text;
        size_t len;
        if ((st = kvs_gguf_get_str(g, key, &text, &len, err)) != KVS_OK)
            break;
        if (strlen(text) != len) {
            st = kvs_fail(err, KVS_E_FORMAT, "%s contains a NUL byte", key);
            break;
        }
        st = add_one(t, name, text, err);
        if (st != KVS_OK)
            kvs_fail_wrap(err, "%s", key);
    }
    if (st == KVS_OK && t->n == 0)
        st = kvs_fail(err, KVS_E_NOT_FOUND, "no tokenizer.chat_template in the model");
    if (st != KVS_OK) {
        kvs_chat_template_free(t);
        return st;
    }
    *out = t;
    return KVS_OK;
}

size_t kvs_chat_template_count(const kvs_chat_template *t)
{
    return t ? t->n : 0;
}

const char *kvs_chat_template_name(const kvs_chat_template *t, size_t i)
{
    return t && i < t->n ? t->names[i] : NULL;
}

bool kvs_chat_template_wants_parts(const kvs_chat_template *t)
{
    for (size_t i = 0; t && i < t->n; i++) {
        const char *s = t->texts[i];
        if (strstr(s, "in message['content']") || strstr(s, "in message[\"content\"]") ||
            strstr(s, "in message.content") || strstr(s, "in content") || strstr(s, "content is string") ||
            strstr(s, "content is not string") || strstr(s, "content'] is string") ||
            strstr(s, "content'] is not string") || strstr(s, "content\"] is string") ||
            strstr(s, "content is iterable") || strstr(s, "content'] is iterable"))
            return true;
    }
    return false;
}

static ptrdiff_t find_template(const kvs_chat_template *t, const char *name)
{
    for (size_t i = 0; i < t->n; i++)
        if (strcmp(t->names[i], name) == 0)
            return (ptrdiff_t)i;
    return -1;
}

/* transformers: the last text of the final message (a string, or the last
 * part with "text"). */
static const char *final_text(json_t *messages)
{
    size_t n = json_array_size(messages);
    if (n == 0)
        return NULL;
    json_t *content = json_object_get(json_array_get(messages, n - 1), "content");
    if (json_is_string(content))
        return json_string_value(content);
    if (json_is_array(content))
        for (size_t i = json_array_size(content); i-- > 0;) {
            json_t *text = json_object_get(json_array_get(content, i), "text");
            if (json_is_string(text))
                return json_string_value(text);
        }
    return NULL;
}

static bool py_space(unsigned char ch)
{
    return ch == ' ' || (ch >= 0x09 && ch <= 0x0d) || (ch >= 0x1c && ch <= 0x1f);
}

/* str.strip() extent for the ASCII whitespace Python strips (multi-byte
 * Unicode spaces are handled by the interpreter's rules; here transformers'
 * final-message search only needs the same bytes both ways). */
static void strip_span(const char *s, size_t *a, size_t *b)
{
    size_t lo = 0, hi = strlen(s);
    for (;;) {
        if (lo < hi && py_space((unsigned char)s[lo]))
            lo++;
        else if (lo + 1 < hi && (unsigned char)s[lo] == 0xc2 &&
                 ((unsigned char)s[lo + 1] == 0x85 || (unsigned char)s[lo + 1] == 0xa0))
            lo += 2;
        else if (lo + 2 < hi && (unsigned char)s[lo] == 0xe3 && (unsigned char)s[lo + 1] == 0x80 &&
                 (unsigned char)s[lo + 2] == 0x80)
            lo += 3;
        else if (lo + 2 < hi && (unsigned char)s[lo] == 0xe2 && (unsigned char)s[lo + 1] == 0x80 &&
                 (((unsigned char)s[lo + 2] >= 0x80 && (unsigned char)s[lo + 2] <= 0x8a) ||
                  (unsigned char)s[lo + 2] == 0xa8 || (unsigned char)s[lo + 2] == 0xa9 ||
                  (unsigned char)s[lo + 2] == 0xaf))
            lo += 3;
        else
            break;
    }
    for (;;) {
        if (hi > lo && py_space((unsigned char)s[hi - 1]))
            hi--;
        else if (hi >= lo + 2 && (unsigned char)s[hi - 2] == 0xc2 &&
                 ((unsigned char)s[hi - 1] == 0x85 || (unsigned char)s[hi - 1] == 0xa0))
            hi -= 2;
        else if (hi >= lo + 3 && (unsigned char)s[hi - 3] == 0xe3 && (unsigned char)s[hi - 2] == 0x80 &&
                 (unsigned char)s[hi - 1] == 0x80)
            hi -= 3;
        else if (hi >= lo + 3 && (unsigned char)s[hi - 3] == 0xe2 && (unsigned char)s[hi - 2] == 0x80 &&
                 (((unsigned char)s[hi - 1] >= 0x80 && (unsigned char)s[hi - 1] <= 0x8a) ||
                  (unsigned char)s[hi - 1] == 0xa8 || (unsigned char)s[hi - 1] == 0xa9 ||
                  (unsigned char)s[hi - 1] == 0xaf))
            hi -= 3;
        else
            break;
    }
    *a = lo;
    *b = hi;
}

static const char *rfind(const char *hay, size_t hn, const char *needle, size_t nn)
{
    if (nn > hn)
        return NULL;
    for (size_t i = hn - nn + 1; i-- > 0;)
        if (memcmp(hay + i, needle, nn) == 0)
            return hay + i;
    return NULL;
}

kvs_status kvs_chat_apply(const kvs_chat_template *t, kvs_chat_input *in, char **out, kvs_error *err)
{
    *out = NULL;
    in->raised = false;
    if (!t || t->n == 0)
        return kvs_fail(err, KVS_E_NOT_FOUND, "no chat template");
    if (in->add_generation_prompt && in->continue_final_message)
        return kvs_fail(err, KVS_E_INVALID,
                        "continue_final_message and add_generation_prompt are not compatible. Use "
                        "continue_final_message when you want the model to continue the final message, and "
                        "add_generation_prompt when you want to add a header that will prompt it to start a "
                        "new assistant message instead.");
    ptrdiff_t idx;
    if (in->template_name) {
        idx = find_template(t, in->template_name);
        if (idx < 0)
            return kvs_fail(err, KVS_E_NOT_FOUND, "the model has no chat template named '%s'", in->template_name);
    } else if (t->n == 1) {
        idx = 0;
    } else {
        idx = -1;
        if (in->tools && json_array_size(in->tools) > 0)
            idx = find_template(t, "tool_use");
        if (idx < 0)
            idx = find_template(t, "default");
        if (idx < 0)
            return kvs_fail(err, KVS_E_INVALID,
                            "this model has several chat templates and none is named 'default': choose one");
    }
    json_t *vars = json_object();
    if (!vars)
        return kvs_fail(err, KVS_E_NOMEM, "out of memory");
    if (in->bos_token)
        json_object_set_new(vars, "bos_token", json_string(in->bos_token));
    if (in->eos_token)
        json_object_set_new(vars, "eos_token", json_string(in->eos_token));
    if (in->kwargs && json_is_object(in->kwargs)) {
        const char *k;
        json_t *v;
        json_object_foreach(in->kwargs, k, v)
        {
            if (strcmp(k, "messages") && strcmp(k, "tools") && strcmp(k, "documents") &&
                strcmp(k, "add_generation_prompt"))
                json_object_set(vars, k, v);
        }
    }
    json_object_set(vars, "messages", in->messages ? in->messages : json_array());
    json_object_set(vars, "tools", in->tools ? in->tools : json_null());
    json_object_set(vars, "documents", in->documents ? in->documents : json_null());
    json_object_set_new(vars, "add_generation_prompt", json_boolean(in->add_generation_prompt));
    kvs_jinja_opts o = {.now = in->now};
    char *text;
    size_t len;
    kvs_status st = kvs_jinja_render(t->tmpl[idx], vars, &o, &text, &len, err);
    json_decref(vars);
    in->raised = o.raised;
    if (st != KVS_OK)
        return st;
    if (in->continue_final_message) {
        const char *fin = final_text(in->messages);
        if (!fin) {
            free(text);
            return kvs_fail(err, KVS_E_INVALID,
                            "continue_final_message is set but we could not find any text to continue in the "
                            "final message!");
        }
        size_t a, b;
        strip_span(fin, &a, &b);
        const char *loc = rfind(text, len, fin + a, b - a);
        if (!loc) {
            free(text);
            return kvs_fail(err, KVS_E_INVALID,
                            "continue_final_message is set but the final message does not appear in the chat "
                            "after applying the chat template! This can happen if the chat template deletes "
                            "portions of the final message. Please verify the chat template and final message "
                            "in your chat to ensure they are compatible.");
        }
        size_t pos = (size_t)(loc - text), fl = strlen(fin);
        if (a == 0 && pos + fl <= len && memcmp(text + pos, fin, fl) == 0)
            text[pos + fl] = '\0';
        else
            text[pos + (b - a)] = '\0';
    }
    *out = text;
    return KVS_OK;
}
