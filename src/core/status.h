/*
 * status.h - how kvserve reports errors.
 *
 * Every fallible library function returns a kvs_status and, when it fails,
 * fills a caller-provided kvs_error with a human-readable message that names
 * the problem ("tensor 'blk.0.attn_q.weight': data [1024, 4096) runs past the
 * end of the file (2048 bytes)").  The library never exits the process and
 * never prints errors itself: the caller decides what a failure means.
 *
 *     kvs_error err;
 *     if (kvs_gguf_open(&g, path, &err) != KVS_OK)
 *         fprintf(stderr, "error: %s\n", err.msg);
 *
 * `err` may be NULL when the caller only wants the code.
 */
#ifndef KVS_CORE_STATUS_H
#define KVS_CORE_STATUS_H

typedef enum kvs_status {
    KVS_OK = 0,
    KVS_E_INVALID,      /* a bad argument, flag or request */
    KVS_E_IO,           /* the OS refused a read, write or open */
    KVS_E_FORMAT,       /* a malformed or truncated file */
    KVS_E_UNSUPPORTED,  /* well-formed, but not something kvserve runs */
    KVS_E_NOT_FOUND,    /* a key, tensor or name that is not there */
    KVS_E_NOMEM,        /* a host or device allocation failed */
    KVS_E_BUDGET,       /* does not fit the memory budget */
    KVS_E_INTERNAL,     /* a broken invariant: a bug in kvserve */
} kvs_status;

typedef struct kvs_error {
    kvs_status status;
    char msg[512];
} kvs_error;

/* Record a failure in `err` (if not NULL) and return `st`, so that callers
 * can write `return kvs_fail(err, KVS_E_FORMAT, "bad magic %08x", m);`. */
kvs_status kvs_fail(kvs_error *err, kvs_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefix an existing message with context: "loading 'x.gguf': <old msg>". */
kvs_status kvs_fail_wrap(kvs_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* A short stable name for a code: "invalid", "io", "format", ... */
const char *kvs_status_name(kvs_status st);

#endif
