/*
 * alloc_count.c - an LD_PRELOAD shim that counts heap allocations, for
 * tests/py/test_memory_allocs.py.
 *
 * malloc, calloc, realloc, posix_memalign, aligned_alloc, memalign and
 * valloc are counted, then passed to glibc's own (__libc_*).  Counts are
 * kept for the whole process and for the threads named "kvs-engine" (the
 * serving loop's engine thread names itself so).  At exit they are
 * written to the file $KVS_ALLOC_COUNT_OUT as "total N\nengine M\n
 * engine_threads K\n" (K: threads that named themselves kvs-engine).
 * Not for sanitizer builds (the sanitizers own malloc).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

static atomic_ullong n_total, n_engine, n_named;
static _Thread_local int is_engine; /* 0: not known yet (or no), 1: yes */

static void count(void)
{
    atomic_fetch_add_explicit(&n_total, 1, memory_order_relaxed);
    if (!is_engine) {
        char name[17] = {0};
        if (prctl(PR_GET_NAME, name, 0, 0, 0) == 0 && strcmp(name, "kvs-engine") == 0)
            is_engine = 1;
    }
    if (is_engine)
        atomic_fetch_add_explicit(&n_engine, 1, memory_order_relaxed);
}

void *malloc(size_t n)
{
    count();
    return __libc_malloc(n);
}

void *calloc(size_t a, size_t b)
{
    count();
    return __libc_calloc(a, b);
}

void *realloc(void *p, size_t n)
{
    count();
    return __libc_realloc(p, n);
}

void *memalign(size_t al, size_t n)
{
    count();
    return __libc_memalign(al, n);
}

void *aligned_alloc(size_t al, size_t n)
{
    count();
    return __libc_memalign(al, n);
}

void *valloc(size_t n)
{
    count();
    return __libc_memalign(4096, n);
}

int posix_memalign(void **out, size_t al, size_t n)
{
    count();
    void *p = __libc_memalign(al, n);
    if (!p)
        return ENOMEM;
    *out = p;
    return 0;
}

/* A thread that names itself "kvs-engine" is counted from then on (and
 * counted as named, so that a test can tell the attribution works). */
int pthread_setname_np(pthread_t t, const char *name)
{
    if (!pthread_equal(t, pthread_self())) {
        int (*real)(pthread_t, const char *) = (int (*)(pthread_t, const char *))dlsym(RTLD_NEXT, "pthread_setname_np");
        return real ? real(t, name) : ENOSYS;
    }
    if (prctl(PR_SET_NAME, name, 0, 0, 0) != 0)
        return errno;
    if (strcmp(name, "kvs-engine") == 0) {
        is_engine = 1;
        atomic_fetch_add(&n_named, 1);
    }
    return 0;
}

__attribute__((destructor)) static void report(void)
{
    const char *path = getenv("KVS_ALLOC_COUNT_OUT");
    if (!path)
        return;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return;
    char buf[128];
    int n = snprintf(buf, sizeof buf, "total %llu\nengine %llu\nengine_threads %llu\n",
                     (unsigned long long)atomic_load(&n_total), (unsigned long long)atomic_load(&n_engine),
                     (unsigned long long)atomic_load(&n_named));
    if (n > 0 && write(fd, buf, (size_t)n) < 0)
        n = 0;
    close(fd);
}
