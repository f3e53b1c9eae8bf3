/*
 * test_threadpool.c - the persistent thread pool: every task runs exactly
 * once per run, on a valid thread index, across many back-to-back runs
 * (the spinning fast path), runs after the workers went to sleep, and runs
 * with more tasks than one round holds.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include <cmocka.h>

#include "core/threadpool.h"

typedef struct {
    _Atomic int *hits;
    _Atomic int bad;
    int n_threads;
    _Atomic int used[8];
} job;

static void count_task(void *arg, int task, int n_tasks, int thread)
{
    job *j = arg;
    if (task < 0 || task >= n_tasks || thread < 0 || thread >= j->n_threads)
        atomic_fetch_add(&j->bad, 1);
    else
        atomic_fetch_add(&j->hits[task], 1);
    if (thread >= 0 && thread < 8)
        atomic_fetch_add(&j->used[thread], 1);
}

static void run_and_check(kvs_pool *p, int n_tasks)
{
    job j = {.n_threads = kvs_pool_threads(p)};
    j.hits = calloc((size_t)(n_tasks > 0 ? n_tasks : 1), sizeof *j.hits);
    assert_non_null(j.hits);
    kvs_pool_run(p, count_task, &j, n_tasks);
    assert_int_equal(atomic_load(&j.bad), 0);
    for (int t = 0; t < n_tasks; t++)
        if (atomic_load(&j.hits[t]) != 1)
            fail_msg("%d tasks: task %d ran %d times", n_tasks, t, atomic_load(&j.hits[t]));
    free(j.hits);
}

static void test_pool_runs_each_task_once(void **state)
{
    const int sizes[] = {3, 1, 4};
    for (int s = 0; s < 3; s++) {
        kvs_pool *p = NULL;
        assert_int_equal(kvs_pool_new(&p, sizes[s], NULL), KVS_OK);
        assert_int_equal(kvs_pool_threads(p), sizes[s]);
        run_and_check(p, 0);
        run_and_check(p, 1);
        for (int r = 0; r < 3000; r++)   /* back to back: workers are spinning */
            run_and_check(p, 1 + r % 37);
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);            /* long enough for the workers to sleep */
        run_and_check(p, 64);
        run_and_check(p, 65535 + 70000); /* more than one round */
        kvs_pool_free(p);
    }
}

/* With many tasks, workers take part (not only the caller). */
static void sleepy_task(void *arg, int task, int n_tasks, int thread)
{
    job *j = arg;
    atomic_fetch_add(&j->used[thread], 1);
    struct timespec ts = {0, 200 * 1000};
    nanosleep(&ts, NULL);
}

static void test_pool_workers_participate(void **state)
{
    kvs_pool *p = NULL;
    assert_int_equal(kvs_pool_new(&p, 3, NULL), KVS_OK);
    job j = {.n_threads = 3};
    kvs_pool_run(p, sleepy_task, &j, 200);
    int total = 0, active = 0;
    for (int t = 0; t < 3; t++) {
        total += atomic_load(&j.used[t]);
        active += atomic_load(&j.used[t]) > 0;
    }
    assert_int_equal(total, 200);
    assert_true(active >= 2);
    kvs_pool_free(p);
}

static void test_pool_rejects_bad_sizes(void **state)
{
    kvs_pool *p = (kvs_pool *)1;
    kvs_error err;
    assert_int_equal(kvs_pool_new(&p, 0, &err), KVS_E_INVALID);
    assert_null(p);
    assert_int_equal(kvs_pool_new(&p, KVS_POOL_MAX_THREADS + 1, &err), KVS_E_INVALID);
    kvs_pool_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pool_runs_each_task_once),
        cmocka_unit_test(test_pool_workers_participate),
        cmocka_unit_test(test_pool_rejects_bad_sizes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
