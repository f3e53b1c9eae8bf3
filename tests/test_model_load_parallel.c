/*
 * test_model_load_parallel.c - weights read with several threads
 * (kvs_source_read_many, model.h's n_threads) are the file's bytes.
 *
 * Models: a synth llama whose token embedding and output matrices (f32,
 * 20 MiB each) span several 8 MiB read pieces, the same model as a
 * three-shard bf16 Hugging Face directory (its norms are converted to f32
 * on the way, the path that stays on the caller), and stories260K.  For
 * 1, 2, 3 and 8 threads:
 *   - every matrix the model holds equals the bytes at its offset in its
 *     file, read here with stdio (the norms converted from bf16 are checked
 *     by the next point), and the whole weights buffer equals the one a
 *     one-thread load fills;
 *   - progress is reported on the caller's thread, never backwards, and
 *     ends at the total;
 *   - kvs_source_read_many into odd (unaligned) destinations equals
 *     kvs_source_read of each tensor;
 *   - a file cut short after it was opened fails to load with the
 *     one-thread error, naming the first tensor that the cut reaches, even
 *     though the pieces of every later tensor fail too.
 */
#include "model_test_util.h"

#include <pthread.h>
#include <unistd.h>

#include "model/convert.h"
#include "model/source.h"
#include "model/synth.h"

static char g_synth[512], g_hf[512], g_stories[512], g_cut[512];

static int setup(void **state)
{
    (void)state;
    kvs_error err = {0};
    snprintf(g_synth, sizeof g_synth, "%s/test_load_parallel.gguf", mt_build_dir());
    snprintf(g_hf, sizeof g_hf, "%s/test_load_parallel_hf", mt_build_dir());
    snprintf(g_cut, sizeof g_cut, "%s/test_load_parallel_cut.gguf", mt_build_dir());
    snprintf(g_stories, sizeof g_stories, "%s/models/stories260K.gguf", mt_shared_dir());
    kvs_synth_opts o = kvs_synth_defaults();
    o.dim = 256, o.n_layers = 2, o.n_heads = 4, o.n_kv_heads = 2, o.hidden_dim = 688, o.n_vocab = 20000;
    o.wtype = KVS_DTYPE_F16, o.embd_type = KVS_DTYPE_F32;
    kvs_model_source *s = NULL;
    kvs_convert_opts co = {.type_set = true, .type = KVS_DTYPE_BF16, .shards = 3};
    if (kvs_synth_write(&o, g_synth, &err) != KVS_OK || kvs_source_open(&s, g_synth, &err) != KVS_OK ||
        kvs_convert_to_hf(s, g_hf, &co, &err) != KVS_OK) {
        fprintf(stderr, "setup: %s\n", err.msg);
        kvs_source_close(s);
        return -1;
    }
    kvs_source_close(s);
    return 0;
}

/* The model's weight of a canonical name (llama family), or NULL. */
static const kvs_weight *weight_of(const kvs_model_model *m, const char *name)
{
    if (strcmp(name, "token_embd.weight") == 0)
        return &m->tok_embd;
    if (strcmp(name, "output.weight") == 0)
        return &m->output;
    if (strcmp(name, "output_norm.weight") == 0)
        return &m->output_norm;
    int l, used = 0;
    char part[64];
    if (sscanf(name, "blk.%d.%63[a-z_].weight%n", &l, part, &used) != 2 || name[used] || l < 0 ||
        l >= m->hp.n_layers)
        return NULL;
    const kvs_model_layer *L = &m->layers[l];
    static const struct { const char *part; size_t off; } parts[] = {
        {"attn_norm", offsetof(kvs_model_layer, attn_norm)}, {"attn_q", offsetof(kvs_model_layer, wq)},
        {"attn_k", offsetof(kvs_model_layer, wk)}, {"attn_v", offsetof(kvs_model_layer, wv)},
        {"attn_output", offsetof(kvs_model_layer, wo)}, {"ffn_norm", offsetof(kvs_model_layer, ffn_norm)},
        {"ffn_gate", offsetof(kvs_model_layer, w_gate)}, {"ffn_up", offsetof(kvs_model_layer, w_up)},
        {"ffn_down", offsetof(kvs_model_layer, w_down)},
    };
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
        if (strcmp(parts[i].part, part) == 0)
            return (const kvs_weight *)((const char *)L + parts[i].off);
    return NULL;
}

/* nbytes at offset of path, with stdio. */
static void *file_bytes(const char *path, uint64_t offset, uint64_t nbytes)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    void *p = malloc(nbytes ? nbytes : 1);
    assert_non_null(p);
    assert_int_equal(fseeko(f, (off_t)offset, SEEK_SET), 0);
    assert_int_equal(fread(p, 1, nbytes, f), nbytes);
    fclose(f);
    return p;
}

typedef struct progress_log {
    pthread_t caller;
    uint64_t last, total;
    int calls, backwards, off_thread;
} progress_log;

static void on_progress(void *ctx, uint64_t done, uint64_t total, uint32_t file, uint32_t n_files)
{
    progress_log *p = ctx;
    (void)file;
    (void)n_files;
    p->calls++;
    p->backwards += done < p->last;
    p->off_thread += !pthread_equal(pthread_self(), p->caller);
    p->last = done;
    p->total = total;
}

static kvs_model_model *load(const char *path, kvs_backend *b, kvs_model_source **src, int threads, progress_log *pl)
{
    kvs_error err = {0};
    if (kvs_source_open(src, path, &err) != KVS_OK)
        fail_msg("%s: %s", path, err.msg);
    kvs_model_load_opts lo = {.n_threads = threads, .progress = on_progress, .progress_ctx = pl};
    *pl = (progress_log){.caller = pthread_self()};
    kvs_model_model *m;
    if (kvs_model_load_source(&m, *src, b, &lo, &err) != KVS_OK)
        fail_msg("%s (%d threads): %s", path, threads, err.msg);
    return m;
}

static void check_path(const char *path)
{
    kvs_backend *b;
    kvs_error err = {0};
    kvs_cpu_options co = {.n_threads = 1};
    assert_int_equal(kvs_cpu_backend_new(&b, &co, &err), KVS_OK);
    kvs_model_source *s1;
    progress_log pl;
    kvs_model_model *m1 = load(path, b, &s1, 1, &pl);
    const int threads[] = {2, 3, 8};
    for (size_t k = 0; k < sizeof threads / sizeof threads[0]; k++) {
        kvs_model_source *s;
        kvs_model_model *m = load(path, b, &s, threads[k], &pl);
        uint64_t want = kvs_source_data_bytes(s);
        if (pl.backwards || pl.off_thread || pl.last != want || pl.total != want || pl.calls < 1)
            fail_msg("%s, %d threads: progress %d calls, %d backwards, %d off the caller's thread, ends at %llu of "
                     "%llu (want %llu)",
                     path, threads[k], pl.calls, pl.backwards, pl.off_thread, (unsigned long long)pl.last,
                     (unsigned long long)pl.total, (unsigned long long)want);
        assert_int_equal(m->weights.bytes, m1->weights.bytes);
        if (memcmp(m->weights.ptr, m1->weights.ptr, m->weights.bytes) != 0) {
            const unsigned char *x = m->weights.ptr, *y = m1->weights.ptr;
            size_t at = 0;
            while (x[at] == y[at])
                at++;
            fail_msg("%s: the weights read with %d threads differ from a one-thread load at byte %zu of %llu "
                     "(%02x, not %02x)", path, threads[k], at, (unsigned long long)m->weights.bytes, x[at], y[at]);
        }
        size_t checked = 0;
        for (size_t i = 0; i < s->n_tensors; i++) {
            const kvs_source_tensor *t = &s->tensors[i];
            const kvs_weight *w = weight_of(m, t->name);
            if (!w || (int)w->type != (int)t->type)
                continue;   /* rope tables, or a norm converted to f32 */
            void *ref = file_bytes(s->files[t->file], t->offset, t->nbytes);
            if (memcmp(w->data, ref, t->nbytes) != 0)
                fail_msg("%s: tensor '%s' read with %d threads differs from the file", path, t->name, threads[k]);
            free(ref);
            checked++;
        }
        assert_true(checked >= s->n_tensors / 2);
        kvs_model_free(m);
        kvs_source_close(s);
    }
    kvs_model_free(m1);
    kvs_source_close(s1);
    kvs_backend_destroy(b);
}

static void test_same_bytes(void **state)
{
    (void)state;
    check_path(g_synth);
    check_path(g_hf);
    check_path(g_stories);
}

static void test_read_many_unaligned(void **state)
{
    (void)state;
    kvs_error err = {0};
    const char *paths[] = {g_synth, g_hf};
    for (int p = 0; p < 2; p++) {
        kvs_model_source *s;
        assert_int_equal(kvs_source_open(&s, paths[p], &err), KVS_OK);
        uint64_t total = 0;
        for (size_t i = 0; i < s->n_tensors; i++)
            total += s->tensors[i].nbytes + 3;
        char *a = malloc(total + 1), *b = malloc(total + 1);
        kvs_source_read_job *jobs = calloc(s->n_tensors, sizeof *jobs);
        assert_true(a && b && jobs);
        uint64_t off = 1;   /* odd addresses, cut at other places than an aligned buffer */
        for (size_t i = 0; i < s->n_tensors; i++) {
            size_t j = s->n_tensors - 1 - i;   /* not in file order */
            jobs[i] = (kvs_source_read_job){&s->tensors[j], a + off};
            assert_int_equal(kvs_source_read(s, &s->tensors[j], b + off, &err), KVS_OK);
            off += s->tensors[j].nbytes + 3;
        }
        for (int threads = 1; threads <= 4; threads += 3) {
            memset(a, 0x5a, total + 1);
            if (kvs_source_read_many(s, jobs, s->n_tensors, threads, NULL, NULL, &err) != KVS_OK)
                fail_msg("%s: %s", paths[p], err.msg);
            for (size_t i = 0; i < s->n_tensors; i++) {
                size_t at = (size_t)((char *)jobs[i].dst - a);
                if (memcmp(a + at, b + at, jobs[i].t->nbytes) != 0)
                    fail_msg("%s, %d threads: tensor '%s' differs from kvs_source_read", paths[p], threads,
                             jobs[i].t->name);
            }
        }
        free(a);
        free(b);
        free(jobs);
        kvs_source_close(s);
    }
}

static void copy_file(const char *from, const char *to)
{
    size_t len = 0;
    char *bytes = mt_read_file(from, &len);
    FILE *f = fopen(to, "wb");
    assert_true(bytes && f);
    assert_int_equal(fwrite(bytes, 1, len, f), len);
    fclose(f);
    free(bytes);
}

static void test_cut_short(void **state)
{
    (void)state;
    kvs_error err = {0};
    /* A copy of the synth file, opened, then cut in the middle of a tensor:
     * that tensor and every later one come up short.  Cut in the 20 MiB
     * token embedding (the next pieces are its own), and in a small matrix
     * that the pieces of a dozen small tensors follow. */
    const char *cut_in[] = {"token_embd.weight", "blk.0.attn_v.weight"};
    for (int c = 0; c < 2; c++) {
        char msg[3][sizeof err.msg], want[128];
        snprintf(want, sizeof want, "tensor '%s'", cut_in[c]);
        const int threads[3] = {1, 2, 4};
        for (int k = 0; k < 3; k++) {
            copy_file(g_synth, g_cut);
            kvs_model_source *s;
            assert_int_equal(kvs_source_open(&s, g_cut, &err), KVS_OK);
            const kvs_source_tensor *t = kvs_source_find(s, cut_in[c]);
            assert_non_null(t);
            uint64_t later = 0;
            for (size_t i = 0; i < s->n_tensors; i++)
                later += s->tensors[i].offset > t->offset;
            assert_true(later > 10);   /* the pieces of other tensors fail too */
            assert_int_equal(truncate(g_cut, (off_t)(t->offset + t->nbytes / 2 + 4)), 0);
            kvs_backend *b;
            kvs_cpu_options co = {.n_threads = 1};
            assert_int_equal(kvs_cpu_backend_new(&b, &co, &err), KVS_OK);
            kvs_model_load_opts lo = {.n_threads = threads[k]};
            kvs_model_model *m = NULL;
            assert_int_equal(kvs_model_load_source(&m, s, b, &lo, &err), KVS_E_FORMAT);
            assert_null(m);
            snprintf(msg[k], sizeof msg[k], "%s", err.msg);
            if (!strstr(err.msg, want) || !strstr(err.msg, "file is shorter than its header says"))
                fail_msg("cut in %s, %d threads: %s", cut_in[c], threads[k], err.msg);
            kvs_ledger led;
            kvs_ledger_snapshot(&b->ledger, &led);
            assert_int_equal(led.cur_total, 0);   /* nothing left allocated */
            kvs_backend_destroy(b);
            kvs_source_close(s);
        }
        assert_string_equal(msg[0], msg[1]);
        assert_string_equal(msg[0], msg[2]);
    }
    unlink(g_cut);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_bytes),
        cmocka_unit_test(test_read_many_unaligned),
        cmocka_unit_test(test_cut_short),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
