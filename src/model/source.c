/* Model sources: the common part and the GGUF implementation (see source.h). */
#include "model/source.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

bool kvs_source_is_dir(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static kvs_status from_gguf(kvs_model_source *s, const kvs_gguf *g, kvs_error *err)
{
    s->kind = KVS_SOURCE_GGUF;
    s->gguf = g;
    kvs_status st = kvs_model_hparams_from_gguf(g, &s->hp, err);
    if (st != KVS_OK)
        return st;
    s->arch = kvs_arch_get(s->hp.arch);
    s->n_files = 1;
    s->files = calloc(1, sizeof *s->files);
    s->file_sizes = calloc(1, sizeof *s->file_sizes);
    size_t n = kvs_gguf_n_tensors(g);
    s->tensors = calloc(n ? n : 1, sizeof *s->tensors);
    const char *path = kvs_gguf_path(g);
    if (!s->files || !s->file_sizes || !s->tensors || !(s->files[0] = strdup(path ? path : "")))
        return kvs_fail(err, KVS_E_NOMEM, "out of memory");
    s->file_sizes[0] = kvs_gguf_file_size(g);
    for (size_t i = 0; i < n; i++) {
        const kvs_gguf_tensor *gt = kvs_gguf_tensor_at(g, i);
        kvs_source_tensor *t = &s->tensors[s->n_tensors];
        if (strlen(gt->name) >= sizeof t->name)
            continue;   /* no model tensor has such a name */
        snprintf(t->name, sizeof t->name, "%s", gt->name);
        t->file_name = gt->name;
        t->type = gt->type;
        t->type_name = kvs_dtype_name(gt->type);
        t->known_type = true;
        t->n_dims = gt->n_dims;
        memcpy(t->ne, gt->ne, sizeof t->ne);
        t->nbytes = gt->nbytes;
        t->file = 0;
        t->offset = gt->offset;
        s->n_tensors++;
    }
    const char *tmpl;
    if (kvs_gguf_get_str(g, "tokenizer.chat_template", &tmpl, NULL, NULL) == KVS_OK &&
        !(s->chat_template = strdup(tmpl)))
        return kvs_fail(err, KVS_E_NOMEM, "out of memory");
    s->gen.bos = -1;
    return KVS_OK;
}

kvs_status kvs_source_from_gguf(kvs_model_source **out, const kvs_gguf *g, kvs_error *err)
{
    *out = NULL;
    kvs_model_source *s = calloc(1, sizeof *s);
    if (!s)
        return kvs_fail(err, KVS_E_NOMEM, "out of memory");
    const char *p = kvs_gguf_path(g);
    if (!(s->path = strdup(p ? p : ""))) {
        free(s);
        return kvs_fail(err, KVS_E_NOMEM, "out of memory");
    }
    kvs_status st = from_gguf(s, g, err);
    if (st != KVS_OK) {
        kvs_source_close(s);
        return st;
    }
    *out = s;
    return KVS_OK;
}

kvs_status kvs_source_open(kvs_model_source **out, const char *path, kvs_error *err)
{
    *out = NULL;
    kvs_status st;
    if (!kvs_source_is_dir(path)) {
        kvs_gguf *g;
        if ((st = kvs_gguf_open(&g, path, err)) != KVS_OK)
            return st;
        if ((st = kvs_source_from_gguf(out, g, err)) != KVS_OK) {
            kvs_fail_wrap(err, "'%s'", path);
            kvs_gguf_close(g);
            return st;
        }
        (*out)->gguf_owned = g;
        return KVS_OK;
    }
    kvs_model_source *s = calloc(1, sizeof *s);
    if (!s || !(s->path = strdup(path))) {
        free(s);
        return kvs_fail(err, KVS_E_NOMEM, "out of memory");
    }
    s->kind = KVS_SOURCE_HF;
    if ((st = kvs_source_open_hf(s, path, err)) != KVS_OK) {
        kvs_source_close(s);
        return st;
    }
    *out = s;
    return KVS_OK;
}

void kvs_source_close(kvs_model_source *s)
{
    if (!s)
        return;
    for (uint32_t i = 0; i < s->n_files; i++)
        free(s->files ? s->files[i] : NULL);
    if (s->kind == KVS_SOURCE_HF)
        for (size_t i = 0; i < s->n_tensors; i++)
            free((char *)s->tensors[i].file_name);
    free(s->files);
    free(s->file_sizes);
    free(s->tensors);
    free(s->chat_template);
    free(s->config_dtype);
    free(s->path);
    kvs_gguf_close(s->gguf_owned);
    free(s);
}

const kvs_source_tensor *kvs_source_find(const kvs_model_source *s, const char *name)
{
    for (size_t i = 0; i < s->n_tensors; i++)
        if (strcmp(s->tensors[i].name, name) == 0)
            return &s->tensors[i];
    return NULL;
}

uint64_t kvs_source_data_bytes(const kvs_model_source *s)
{
    uint64_t total = 0;
    for (size_t i = 0; i < s->n_tensors; i++)
        total += s->tensors[i].nbytes;
    return total;
}

kvs_status kvs_source_read(const kvs_model_source *s, const kvs_source_tensor *t, void *dst,
                           kvs_error *err)
{
    const char *path = s->files[t->file];
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return kvs_fail(err, KVS_E_IO, "cannot open '%s': %s", path, strerror(errno));
    uint64_t done = 0;
    kvs_status st = KVS_OK;
    while (done < t->nbytes) {
        size_t chunk = t->nbytes - done > (1u << 30) ? (1u << 30) : (size_t)(t->nbytes - done);
        ssize_t r = pread(fd, (char *)dst + done, chunk, (off_t)(t->offset + done));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            st = kvs_fail(err, r == 0 ? KVS_E_FORMAT : KVS_E_IO,
                          "'%s': tensor '%s' at %" PRIu64 ": %s", path, t->file_name ? t->file_name : t->name,
                          t->offset, r == 0 ? "file is shorter than its header says" : strerror(errno));
            break;
        }
        done += (uint64_t)r;
    }
    close(fd);
    return st;
}

kvs_status kvs_source_tokenizer(const kvs_model_source *s, kvs_tokenizer **out, kvs_error *err)
{
    if (s->kind == KVS_SOURCE_GGUF)
        return kvs_tok_load(out, s->gguf, err);
    kvs_status st = kvs_tok_load_hf(out, s->path, err);
    if (st != KVS_OK)
        kvs_fail_wrap(err, "'%s'", s->path);
    return st;
}
