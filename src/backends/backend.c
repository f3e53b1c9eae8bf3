#include "backends/backend.h"

#include <inttypes.h>
#include <string.h>

kvs_status kvs_backend_alloc(kvs_backend *b, kvs_mem_tag tag, uint64_t bytes, kvs_dbuf *out,
                             kvs_error *err)
{
    memset(out, 0, sizeof *out);
    out->tag = tag;
    if (bytes == 0)
        return KVS_OK;
    if (bytes > SIZE_MAX)
        return kvs_fail(err, KVS_E_NOMEM, "%s: cannot allocate %" PRIu64 " bytes", b->ops->name, bytes);
    void *p = b->ops->raw_alloc(b, (size_t)bytes);
    if (!p)
        return kvs_fail(err, KVS_E_NOMEM, "%s: out of memory allocating %.1f MiB for %s",
                        b->ops->name, bytes / 1048576.0, kvs_mem_tag_name(tag));
    kvs_ledger_add(&b->ledger, tag, bytes);
    out->ptr = p;
    out->bytes = bytes;
    return KVS_OK;
}

void kvs_backend_release(kvs_backend *b, kvs_dbuf *buf)
{
    if (buf->ptr) {
        b->ops->raw_free(b, buf->ptr, (size_t)buf->bytes);
        kvs_ledger_sub(&b->ledger, buf->tag, buf->bytes);
    }
    buf->ptr = NULL;
    buf->bytes = 0;
}

void kvs_backend_destroy(kvs_backend *b)
{
    if (b)
        b->ops->destroy(b);
}
