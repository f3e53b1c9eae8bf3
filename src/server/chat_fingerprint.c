/* chat_fingerprint.c - matching a template's tag list against a fingerprint
 * of (tag count, hash) segments (see chat_internal.h and chat_template.c).
 *
 * The hashes of the template's tags are computed once; a segment of n tags
 * is then checked at a position in O(n), so sliding a segment over a
 * template of N tags costs O(n * N) regardless of how long the tags are.
 *
 * Where each segment matched also says which tag of a recognised template is
 * which statement of the reference template, so that a renderer can take a
 * value (a default system message) from the model's own template. */
#include "server/chat_internal.h"

#include <stdlib.h>

uint64_t kvs_chat_tag_hash(kvs_chat_span s)
{
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    for (size_t i = 0; i < s.n; i++) {
        h ^= (unsigned char)s.p[i];
        h *= UINT64_C(0x100000001b3);
    }
    return h;
}

uint64_t kvs_chat_mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

uint64_t kvs_chat_seg_hash(const uint64_t *tag_hashes, size_t n)
{
    uint64_t h = KVS_CHAT_SEG_SEED;
    for (size_t i = 0; i < n; i++)
        h = kvs_chat_mix64(h ^ tag_hashes[i]);
    return h;
}

/* Does segment s match the tags [p, p + s->ntags)?  The caller checks that
 * they exist. */
static bool seg_at(const kvs_chat_segment *s, const uint64_t *th, size_t p)
{
    return kvs_chat_seg_hash(th + p, s->ntags) == s->hash;
}

bool kvs_chat_fingerprint_locate(const kvs_chat_fingerprint *fp, const uint64_t *th, size_t n,
                                 size_t *pos)
{
    size_t k = fp->nseg;
    const kvs_chat_segment *s = fp->seg;
    if (k == 0)
        return false;
    if (k == 1) {
        if (s[0].ntags != n || !seg_at(&s[0], th, 0))
            return false;
        if (pos)
            pos[0] = 0;
        return true;
    }
    /* The first segment at the start, the last at the end, not overlapping. */
    size_t at = s[0].ntags, last = s[k - 1].ntags;
    if (at > n || last > n - at)
        return false;
    size_t end = n - last;
    if (!seg_at(&s[0], th, 0) || !seg_at(&s[k - 1], th, end))
        return false;
    if (pos) {
        pos[0] = 0;
        pos[k - 1] = end;
    }
    /* The others in order in [at, end): the leftmost place of each leaves the
     * most room for the rest. */
    for (size_t i = 1; i + 1 < k; i++) {
        size_t len = s[i].ntags, p = at;
        for (;; p++) {
            if (p > end || end - p < len)
                return false;
            if (seg_at(&s[i], th, p))
                break;
        }
        if (pos)
            pos[i] = p;
        at = p + len;
    }
    return true;
}

bool kvs_chat_fingerprint_matches(const kvs_chat_fingerprint *fp, const uint64_t *th, size_t n)
{
    return kvs_chat_fingerprint_locate(fp, th, n, NULL);
}

kvs_status kvs_chat_template_statement(const char *tmpl, kvs_chat_format f, uint32_t stmt,
                                       kvs_chat_span *out, kvs_error *err)
{
    if ((unsigned)f >= KVS_CHAT_FORMAT_COUNT)
        return kvs_fail(err, KVS_E_INVALID, "chat format %d out of range", (int)f);
    const char *name = kvs_chat_format_name(f);
    if (!tmpl)
        return kvs_fail(err, KVS_E_INVALID,
                        "the %s chat format takes text from the model's chat template: "
                        "pass the template in kvs_chat_opts.template_text", name);
    const kvs_chat_fingerprint *fp = &kvs_chat_fingerprints[f];
    kvs_chat_span *tags = NULL;
    size_t ntags = 0;
    uint64_t *th = NULL;
    size_t *pos = NULL;
    kvs_status st = KVS_OK;
    int scan = kvs_chat_template_tags(tmpl, &tags, &ntags);
    if (scan < 0)
        goto nomem;
    th = malloc((ntags ? ntags : 1) * sizeof *th); /* ntags <= strlen / 4: no overflow */
    pos = malloc((fp->nseg ? fp->nseg : 1) * sizeof *pos);
    if (!th || !pos)
        goto nomem;
    for (size_t i = 0; i < ntags; i++)
        th[i] = kvs_chat_tag_hash(tags[i]);
    if (scan != 1 || !kvs_chat_fingerprint_locate(fp, th, ntags, pos)) {
        st = kvs_fail(err, KVS_E_INVALID,
                      "kvs_chat_opts.template_text is not a %s chat template (pass the "
                      "template that kvs_chat_detect recognised)", name);
        goto done;
    }
    for (size_t i = 0; i < fp->nseg; i++) {
        const kvs_chat_segment *s = &fp->seg[i];
        if (s->ntags > 0 && stmt >= s->first && stmt - s->first < s->ntags) {
            *out = tags[pos[i] + (stmt - s->first)];
            goto done;
        }
    }
    st = kvs_fail(err, KVS_E_INTERNAL, "statement %u of the %s chat template is not pinned "
                  "by its fingerprint", (unsigned)stmt, name);
    goto done;
nomem:
    st = kvs_fail(err, KVS_E_NOMEM, "no memory to scan the chat template");
done:
    free(pos);
    free(th);
    free(tags);
    return st;
}

kvs_status kvs_chat_template_value(const kvs_chat_ctx *c, uint32_t stmt, const char *set_name,
                                   const kvs_chat_var *vars, size_t nvars, kvs_chat_buf *b,
                                   kvs_error *err)
{
    kvs_chat_span tag;
    kvs_status st = kvs_chat_template_statement(c->template_text, c->format, stmt, &tag, err);
    if (st != KVS_OK)
        return st;
    return kvs_chat_tag_value(tag, set_name, vars, nvars, b, err);
}
