/* Model sources: the common part and the GGUF implementation (see source.h). */
#include "model/source.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/threadpool.h"

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

/* Read bytes [from, from + len) of tensor t into dst through fd (pread:
 * safe to share between threads).  Retries on EINTR; a read of 0 bytes
 * means the file is shorter than its header said (it changed). */
static kvs_status read_range(const kvs_model_source *s, int fd, const kvs_source_tensor *t, uint64_t from,
                             uint64_t len, void *dst, kvs_error *err)
{
    const char *path = s->files[t->file];
    uint64_t done = 0;
    while (done < len) {
        size_t chunk = len - done > (1u << 30) ? (1u << 30) : (size_t)(len - done);
        ssize_t r = pread(fd, (char *)dst + done, chunk, (off_t)(t->offset + from + done));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return kvs_fail(err, r == 0 ? KVS_E_FORMAT : KVS_E_IO, "'%s': tensor '%s' at %" PRIu64 ": %s", path,
                            t->file_name ? t->file_name : t->name, t->offset,
                            r == 0 ? "file is shorter than its header says" : strerror(errno));
        done += (uint64_t)r;
    }
    return KVS_OK;
}

kvs_status kvs_source_read(const kvs_model_source *s, const kvs_source_tensor *t, void *dst,
                           kvs_error *err)
{
    const char *path = s->files[t->file];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return kvs_fail(err, KVS_E_IO, "cannot open '%s': %s", path, strerror(errno));
    kvs_status st = read_range(s, fd, t, 0, t->nbytes, dst, err);
    close(fd);
    return st;
}

/* ---- many tensors at once ------------------------------------------------ */

typedef struct read_piece {
    uint32_t job;
    uint64_t from, len;     /* bytes of the job's tensor */
} read_piece;

typedef struct read_many_ctx {
    const kvs_model_source *s;
    const kvs_source_read_job *jobs;
    const read_piece *pieces;
    const int *fds;
    atomic_int first_failed;     /* lowest failed piece (n_pieces: none) */
    atomic_uint_fast64_t done;   /* bytes read */
    pthread_mutex_t lock;        /* guards err */
    kvs_error err;
    uint64_t total;
    kvs_load_progress_fn progress;
    void *progress_ctx;
} read_many_ctx;

static void read_piece_task(void *arg, int task, int n_tasks, int thread)
{
    (void)n_tasks;
    read_many_ctx *c = arg;
    /* Pieces after one that failed are skipped; earlier ones still run, so
     * the error reported is the one a sequential read would meet first. */
    if (task > atomic_load(&c->first_failed))
        return;
    const read_piece *p = &c->pieces[task];
    const kvs_source_read_job *j = &c->jobs[p->job];
    kvs_error e = {0};
    if (read_range(c->s, c->fds[j->t->file], j->t, p->from, p->len, (char *)j->dst + p->from, &e) != KVS_OK) {
        pthread_mutex_lock(&c->lock);
        if (task < atomic_load(&c->first_failed)) {
            c->err = e;
            atomic_store(&c->first_failed, task);
        }
        pthread_mutex_unlock(&c->lock);
        return;
    }
    uint64_t done = atomic_fetch_add(&c->done, p->len) + p->len;
    if (thread == 0 && c->progress)   /* the caller's thread: progress is never called concurrently */
        c->progress(c->progress_ctx, done, c->total, j->t->file, c->s->n_files);
}

kvs_status kvs_source_read_many(const kvs_model_source *s, const kvs_source_read_job *jobs, size_t n_jobs,
                                int n_threads, kvs_load_progress_fn progress, void *progress_ctx,
                                kvs_error *err)
{
    kvs_status st = KVS_OK;
    read_piece *pieces = NULL;
    kvs_pool *pool = NULL;
    int *fds = calloc(s->n_files ? s->n_files : 1, sizeof *fds);
    if (!fds)
        return kvs_fail(err, KVS_E_NOMEM, "out of memory");
    for (uint32_t f = 0; f < s->n_files; f++)
        fds[f] = -1;
    /* Cut each tensor where its destination crosses a multiple of
     * KVS_SOURCE_READ_CHUNK, so that threads never fault the same page. */
    size_t n_pieces = 0;
    uint64_t total = 0;
    for (size_t i = 0; i < n_jobs; i++) {
        uintptr_t a = (uintptr_t)jobs[i].dst;
        n_pieces += (size_t)((a % KVS_SOURCE_READ_CHUNK + jobs[i].t->nbytes) / KVS_SOURCE_READ_CHUNK) + 1;
        total += jobs[i].t->nbytes;
    }
    if (n_pieces > (size_t)INT32_MAX / 2) {
        st = kvs_fail(err, KVS_E_INVALID, "%zu tensors are too many to read at once", n_jobs);
        goto done;
    }
    if (!(pieces = malloc((n_pieces ? n_pieces : 1) * sizeof *pieces))) {
        st = kvs_fail(err, KVS_E_NOMEM, "out of memory");
        goto done;
    }
    n_pieces = 0;
    for (size_t i = 0; i < n_jobs; i++) {
        uintptr_t a = (uintptr_t)jobs[i].dst;
        uint64_t from = 0, nb = jobs[i].t->nbytes;
        while (from < nb) {
            uint64_t room = KVS_SOURCE_READ_CHUNK - (a + from) % KVS_SOURCE_READ_CHUNK;
            uint64_t len = nb - from < room ? nb - from : room;
            pieces[n_pieces++] = (read_piece){(uint32_t)i, from, len};
            from += len;
        }
    }
    for (size_t i = 0; i < n_jobs; i++) {
        uint32_t f = jobs[i].t->file;
        if (fds[f] >= 0)
            continue;
        if ((fds[f] = open(s->files[f], O_RDONLY | O_CLOEXEC)) < 0) {
            st = kvs_fail(err, KVS_E_IO, "cannot open '%s': %s", s->files[f], strerror(errno));
            goto done;
        }
    }
    /* Threads pay off past a few pieces' worth of bytes (starting them costs ~0.1 ms each). */
    if (n_threads > 1 && n_pieces > 1 && total >= 2 * KVS_SOURCE_READ_CHUNK &&
        (st = kvs_pool_new(&pool, n_threads < (int)n_pieces ? n_threads : (int)n_pieces, err)) != KVS_OK)
        goto done;
    read_many_ctx c = {.s = s, .jobs = jobs, .pieces = pieces, .fds = fds, .total = total,
                       .progress = progress, .progress_ctx = progress_ctx};
    atomic_init(&c.first_failed, (int)n_pieces);
    atomic_init(&c.done, 0);
    pthread_mutex_init(&c.lock, NULL);
    if (pool)
        kvs_pool_run(pool, read_piece_task, &c, (int)n_pieces);
    else
        for (size_t k = 0; k < n_pieces; k++)
            read_piece_task(&c, (int)k, (int)n_pieces, 0);
    pthread_mutex_destroy(&c.lock);
    if (atomic_load(&c.first_failed) < (int)n_pieces) {
        if (err)
            *err = c.err;
        st = c.err.status;
    } else if (progress && n_jobs > 0) {   /* the last pieces may have been another thread's */
        progress(progress_ctx, total, total, jobs[n_jobs - 1].t->file, s->n_files);
    }
done:
    kvs_pool_free(pool);
    for (uint32_t f = 0; f < s->n_files; f++)
        if (fds[f] >= 0)
            close(fds[f]);
    free(fds);
    free(pieces);
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
