/*
 * host.h - making host buffers resident.
 *
 * On the CPU backend host memory is the device's memory, so the start-up
 * measures the process's resident memory beyond the ledger (the runtime
 * overhead) and every host buffer the serving loop will use must already
 * be resident then.  Fresh pages become resident when first written, but
 * zero-filling a new buffer is not a reliable way to write them: the
 * compiler may turn malloc + memset(0) into calloc, or drop a memset(0)
 * after calloc, and calloc returns untouched zero pages.  kvs_host_touch()
 * writes one byte of every page through a volatile pointer, which no
 * compiler may drop.
 */
#ifndef KVS_MEMORY_HOST_H
#define KVS_MEMORY_HOST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Make every page of p[0..bytes) resident by writing a zero byte into
 * each (every 4096 bytes, which covers larger pages too): for buffers
 * fresh from calloc, or whose contents do not matter yet.  p may be NULL. */
void kvs_host_touch(void *p, size_t bytes);

/* The process's resident memory now (VmRSS) and its high-water mark
 * (VmHWM), in bytes, from /proc/self/status.  False if unreadable. */
bool kvs_host_rss(uint64_t *rss, uint64_t *hwm);

#endif
