/*
 * http_front.h - the HTTP front end's connection slots, its gate thread,
 * and how a request waits for the engine without holding a thread
 * (internal to server/).
 *
 * Connections.  kvserve accepts connections itself, on one "gate" thread,
 * and hands them to libmicrohttpd (MHD_add_connection) only once their
 * first request head has arrived and passed kvs_http_head_check: MHD runs
 * epoll on a fixed pool of worker threads (--http-threads) and never sees a
 * malformed or incomplete head, which the gate answers with a JSON error
 * itself.  Every connection holds one slot of a table sized at start-up
 * (--max-connections) from accept to close; a connection that finds the
 * table full gets a 503 JSON error at once and is closed after a short
 * linger, never silently.
 *
 * Kept-alive connections come back to the gate between requests.  When a
 * request completes and MHD will reuse the connection, MHD calls
 * NOTIFY_COMPLETED from connection_reset() just before the connection
 * waits for its next head (MHD_CONNECTION_INIT, read buffer kept); the
 * handler suspends it there (kvs_http_keep), which stops MHD reading the
 * socket.  The gate watches the socket (IDLE) and peeks at the next head
 * exactly as at a first one: a head that passes resumes the connection (MHD
 * reads the same bytes); a refused one is answered in JSON on the socket
 * (MHD, suspended, writes nothing), lingered, and the connection is closed
 * by turning its descriptor into a copy of a dead socket (dup3) and
 * resuming it, so MHD reads only the end of a stream, never the refused
 * bytes.  So the gate enforces the idle time-out between requests (nothing
 * sent: a silent close) and the header time-out (a partial head: 408),
 * answers 503 while draining, and lets idle kept-alive connections give
 * their slot to new ones at the limit.
 *
 * The gate sees only the socket, so it must know that MHD has not already
 * read the next request into its buffer (a pipelining client): it counts
 * the bytes of the heads it passed plus their Content-Length and compares
 * them with what MHD has read (TCP_INFO's bytes received less SIOCINQ's
 * still queued).  More read, a chunked body, or a head the gate did not
 * see, and the connection is left to MHD for good (it parses later heads
 * itself, as before).  A wrong guess that MHD keeps a connection is
 * harmless: a suspended connection MHD has closed is resumed, and freed,
 * when its peer leaves or at the idle time-out.
 *
 *     accept -> GATE (peek, check) -> HANDED -> LIVE (MHD) ----------------> FREE
 *                 |                              |      ^           (MHD closes)
 *                 |            request done, MHD |      | next head passed:
 *                 |        keeps it, counts agree v      | resumed
 *                 |                             IDLE (suspended; peek, check)
 *                 v                              |
 *               LINGER (answered: 4xx/5xx JSON, <--/ refused, 408, 503
 *                 reading until the peer closes) -> FREE; a kept-alive one:
 *                 dead socket, resumed -> LIVE -> MHD closes -> FREE
 *
 * Waiting.  A handler never blocks on the engine: when its channel has no
 * event it calls kvs_http_sleep, which suspends the connection
 * (MHD_suspend_connection); a push to the channel (kvs_http_bind) or a
 * hang-up resumes it, and libmicrohttpd calls the handler (or the stream's
 * reader) again.  A non-streaming request continues in a function it
 * registers with kvs_http_defer.
 */
#ifndef KVS_SERVER_HTTP_FRONT_H
#define KVS_SERVER_HTTP_FRONT_H

#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/socket.h>

#include "server/engine_loop.h"
#include "server/http_head.h"
#include "server/http_pool.h"
#include "server/http_reserve.h"

/* Connections over the limit that linger (answered 503, waiting for the
 * peer to close) at once; more are closed right after their answer. */
#define KVS_HTTP_OVERFLOW_SLOTS 64
/* A stream's client may stop reading for this long before it is cut off
 * (the idle time-out is for connections between requests). */
#define KVS_HTTP_WRITE_TIMEOUT_S 600u
/* Seconds an answered connection is read from before it is closed. */
#define KVS_HTTP_LINGER_S 2.0
/* When every slot is taken, a new connection takes the slot of the oldest
 * one that has sent nothing for this long (closing it); else it waits up
 * to KVS_HTTP_SLOT_WAIT_S for a slot (at most KVS_HTTP_WAIT_SLOTS wait at
 * once: closed connections are released a moment after the peer goes),
 * then gets 503. */
#define KVS_HTTP_EVICT_IDLE_S 1.0
#define KVS_HTTP_SLOT_WAIT_S 1.0
#define KVS_HTTP_WAIT_SLOTS 64

struct kvs_server;

typedef enum MHD_Result (*kvs_http_resume_fn)(void *ctx, struct MHD_Connection *c);
typedef void (*kvs_http_cancel_fn)(void *ctx);

enum { SLOT_FREE, SLOT_GATE, SLOT_LINGER, SLOT_HANDED, SLOT_LIVE, SLOT_IDLE };
enum { REQ_NONE, REQ_BODY, REQ_DONE, REQ_DEFERRED };

typedef struct kvs_http_slot {
    pthread_mutex_t mu;            /* guards state..watched against the gate and wake-ups */
    struct kvs_http_front *front;
    unsigned index;
    unsigned gen;                  /* bumped on every reuse */
    atomic_int state;
    int fd;
    struct sockaddr_storage addr;
    socklen_t addr_len;
    double deadline;               /* GATE, IDLE with bytes: head due; LINGER: close; LIVE+awaiting_head: head due */
    double t_accept;               /* GATE: when accepted; IDLE: when the last response ended */
    size_t seen;                   /* GATE, IDLE: bytes of the head received so far */
    bool awaiting_head;            /* LIVE: between requests (a head libmicrohttpd reads itself) */
    bool owned;                    /* libmicrohttpd has the socket (from HANDED on; LINGER and IDLE too) */
    bool closing;                  /* closed by the gate, libmicrohttpd has yet to free it (n_closing) */
    bool tracked;                  /* every head so far passed the gate, every body had a Content-Length */
    uint64_t consumed;             /* tracked: bytes of the requests so far (heads and bodies) */
    struct MHD_Connection *conn;
    bool suspended, wake_pending, hup, watched;
    struct kvs_http_slot *next_free;

    /* The request in progress (touched by its MHD worker only). */
    int phase;
    char *body;
    size_t len, cap, dropped;
    bool too_large, pool_full, bad_target;
    bool long_timeout;             /* a stream: KVS_HTTP_WRITE_TIMEOUT_S applies until it ends */
    bool keep;                     /* the request allows keep-alive (HTTP/1.1 without Connection: close) */
    bool resp_close;               /* the response says Connection: close */
    kvs_http_resume_fn defer_fn;
    kvs_http_cancel_fn defer_cancel;
    void *defer_ctx;
} kvs_http_slot;

typedef struct kvs_http_front {
    struct kvs_server *s;
    kvs_http_limits lim;
    kvs_http_head_limits head;
    unsigned idle_timeout_s;
    double header_timeout_s;
    int listen_fd, ep, wake_fd;
    int dead_fd;                   /* a socket whose peer is gone: what a closed kept-alive socket becomes */
    int port;
    pthread_t thread;
    bool thread_started;
    struct MHD_Daemon *d;
    char *peek;                    /* the gate's peek buffer */
    size_t peek_cap;

    pthread_mutex_t mu;            /* guards the free list and the counts */
    pthread_cond_t cv;
    kvs_http_slot *slots;
    unsigned n_slots, n_used, n_requests;
    kvs_http_slot *free_list;
    struct { int fd; double deadline; } overflow[KVS_HTTP_OVERFLOW_SLOTS];
    struct {
        int fd;
        struct sockaddr_storage addr;
        socklen_t addr_len;
        double deadline;
    } waiting[KVS_HTTP_WAIT_SLOTS]; /* a FIFO ring */
    unsigned wait_head, n_waiting;
    double listen_paused_until;
    atomic_uint_fast64_t refused_full; /* connections answered 503 for the limit */
    atomic_uint n_closing;         /* slots with closing set */

    kvs_http_pool pool;
    atomic_bool draining, stopping, quit;
} kvs_http_front;

/* Bytes of one slot (for kvs_http_reserve_bytes). */
size_t kvs_http_slot_bytes(void);

/* Bind the listening socket and reserve the slots and the body pool. */
kvs_status kvs_http_front_init(kvs_http_front *f, struct kvs_server *s, const char *host, int port,
                               const kvs_http_limits *lim, unsigned idle_timeout_s, double header_timeout_s,
                               kvs_error *err);
/* Start the gate thread feeding daemon d. */
kvs_status kvs_http_front_start(kvs_http_front *f, struct MHD_Daemon *d, kvs_error *err);
/* Stop the gate thread and close every connection it still holds
 * (idempotent); MHD's own connections are left to MHD_stop_daemon. */
void kvs_http_front_stop_gate(kvs_http_front *f);
/* Free what init reserved (after the daemon is stopped). */
void kvs_http_front_free(kvs_http_front *f);
/* Resume every suspended connection and keep them from suspending again;
 * then wait up to timeout_ms for requests in progress to end.  True if
 * none is left. */
bool kvs_http_front_finish(kvs_http_front *f, int timeout_ms);

/* MHD callbacks (MHD_OPTION_NOTIFY_CONNECTION). */
void kvs_http_on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                            enum MHD_ConnectionNotificationCode toe);
/* The slot of a connection (NULL if it has none). */
kvs_http_slot *kvs_http_slot_of(struct MHD_Connection *c);
/* A request starts (first call of the access handler) / ends (completed). */
void kvs_http_request_begin(kvs_http_front *f, kvs_http_slot *sl);
void kvs_http_request_end(kvs_http_front *f, kvs_http_slot *sl);
/* From NOTIFY_COMPLETED of a request that libmicrohttpd keeps the
 * connection alive after (status COMPLETED_OK, keep and not resp_close):
 * if libmicrohttpd has read no byte past the requests the gate checked,
 * suspend c and let the gate check the next head (IDLE).  Otherwise (a
 * pipelined request in libmicrohttpd's buffer, a chunked body, stopping)
 * leave c to libmicrohttpd from now on.  True if suspended. */
bool kvs_http_keep(kvs_http_front *f, kvs_http_slot *sl, struct MHD_Connection *c);

/* Answer on a raw socket: status with the JSON error object, Connection:
 * close (used by the gate). */
void kvs_http_raw_error(int fd, int status, const char *code, const char *msg);

/* ---- waiting without a thread (for api_gen.c) ---- */

typedef enum kvs_http_sleep_result {
    KVS_HTTP_SLEPT,                /* suspended: return 0 (reader) or MHD_YES (handler) */
    KVS_HTTP_AGAIN,                /* an event came meanwhile: look again */
    KVS_HTTP_GONE,                 /* the client hung up */
    KVS_HTTP_STOPPING,             /* the server is stopping: finish now */
} kvs_http_sleep_result;

/* Make every push to ch wake connection c (until kvs_http_unbind). */
void kvs_http_bind(struct MHD_Connection *c, kvs_chan *ch);
/* No more wake-ups from ch (call before dropping one's reference). */
void kvs_http_unbind(kvs_chan *ch);
/* Suspend c until its bound channel gets an event or its client hangs up,
 * unless one of those already happened.  Call only from MHD's access
 * handler or a content reader of c. */
kvs_http_sleep_result kvs_http_sleep(struct MHD_Connection *c);
/* c answers with a stream that its client may read slowly: until the
 * request ends, c is closed only after KVS_HTTP_WRITE_TIMEOUT_S without
 * progress, not after the idle time-out. */
void kvs_http_response_long(struct MHD_Connection *c);
/* Whether c's client was seen to hang up. */
bool kvs_http_gone(struct MHD_Connection *c);
/* Continue this request later: when c wakes, MHD's access handler calls
 * fn(ctx, c), which answers or defers again; cancel(ctx) runs instead if
 * the connection ends first.  Returns MHD_YES (for the handler to return). */
enum MHD_Result kvs_http_defer(struct MHD_Connection *c, kvs_http_resume_fn fn, kvs_http_cancel_fn cancel,
                               void *ctx);

#endif
