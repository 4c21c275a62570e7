/* Private declarations shared by the library's files. Never installed. */
#ifndef QV_INTERNAL_H
#define QV_INTERNAL_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "quiver.h"

#if defined(__GNUC__)
#define QV_LIKELY(x) __builtin_expect(!!(x), 1)
#define QV_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define QV_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define QV_LIKELY(x) (x)
#define QV_UNLIKELY(x) (x)
#define QV_PRINTF(f, a)
#endif

/* error.c: set the thread's message and return status. */
qv_status qv__error(qv_status status, const char *fmt, ...) QV_PRINTF(2, 3);
/* A warning through the handler of qv_set_warning_handler (stderr by default).
 * Call it with no lock held: the handler is host code. */
void qv__warn(const char *fmt, ...) QV_PRINTF(1, 2);
/* Whether the thread has a message (qv_error_set(st, NULL) clears it). */
int qv__error_is_set(void);
qv_status qv__nomem(void);

/* digest.c: streaming XXH3-128 that uses the vectorised library path only for
 * large pieces (small updates through it stall). */
typedef struct qv_hasher qv_hasher;
qv_hasher *qv__hasher_new(void);
void qv__hasher_free(qv_hasher *h);
void qv__hasher_reset(qv_hasher *h);
void qv__hasher_update(qv_hasher *h, const void *data, size_t len);
void qv__hasher_digest(qv_hasher *h, qv_digest *out);
/* 64-bit hash for index keys. */
uint64_t qv__hash64(const void *data, size_t len);
/* The calling thread's encoders (freed when the thread exits): one for
 * calls and results, one for the records the cache builds from them. */
#define QV_ENCODER_CALLS 0
#define QV_ENCODER_RECORDS 1
#define QV_THREAD_ENCODERS 2
qv_encoder *qv__thread_encoder_for(int which);
qv_encoder *qv__thread_encoder(void); /* QV_ENCODER_CALLS */

/* cbor.c */
/* The canonical encoding of an unsigned integer; returns its length. */
size_t qv__encode_uint(uint8_t out[9], uint64_t v);
/* Append an already-validated canonical item without checking it again. */
qv_status qv__encoder_raw(qv_encoder *enc, const void *data, size_t len);
/* Byte span of the next complete item at the decoder's position, validated,
 * with the decoder moved past it. */
qv_status qv__decoder_item_span(qv_decoder *dec, size_t *start, size_t *end);

/* The decoder's layout, so the library can keep decoders on the stack. */
enum { DF_LIST, DF_MAP, DF_TAG, DF_SET };

typedef struct {
    uint8_t kind;
    uint64_t remaining;        /* items still to come; a map counts keys and values */
    size_t start;              /* offset of this container's head */
    size_t prev_start, prev_end; /* the previous key (map) or element (set) */
    uint64_t tag;
} dframe;

struct qv_decoder {
    const uint8_t *p;
    size_t len, pos;
    int depth;
    int started, done;
    qv_status error;
    /* the current item */
    qv_type type;
    int negative;
    uint64_t arg;
    double f;
    const uint8_t *data;
    size_t dlen;
    size_t item_start;
    dframe frames[QV_MAX_DEPTH];
};

/* Big-endian helpers used by the store and cache. */
static inline void qv__put_be64(uint8_t *p, uint64_t v) {
    for (int i = 7; i >= 0; i--) { p[i] = (uint8_t)v; v >>= 8; }
}
static inline uint64_t qv__get_be64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
    return v;
}

/* cache.c: qv_cache_get_with that also reports the stored call's run time. */
qv_status qv__cache_get_with(qv_cache *cache, const qv_digest *key, qv_result_cb cb, void *userdata,
                             int64_t *duration_ns);
/* fn.c: a lookup that counts in fn's statistics. */
qv_status qv__fn_lookup(qv_fn *fn, qv_cache *cache, const qv_digest *key, qv_value **result);
qv_status qv__fn_lookup_with(qv_fn *fn, qv_cache *cache, const qv_digest *key, qv_result_cb cb, void *userdata);
/* fn.c: hooks for ffi.c, which makes qv_fns around C functions. */
typedef qv_status (*qv_fn_check)(const qv_value *args, const qv_value *kwargs, void *userdata);
void *qv__fn_userdata(const qv_fn *fn, qv_fn_callback body); /* NULL unless fn has that body */
void qv__fn_set_check(qv_fn *fn, qv_fn_check check);
void qv__fn_note_miss(qv_fn *fn);
void qv__fn_note_hit(qv_fn *fn); /* a hit found through the call runtime */
/* future.c: complete with an encoding the caller knows to be canonical. */
qv_status qv__future_set_trusted(qv_future *f, const void *data, size_t len);
/* future.c: f is completed by a job submitted now (it cannot complete in a
 * child of fork()). */
void qv__future_of_task(qv_future *f);
/* context.c: the context a call on this thread runs under: the top of the
 * thread's stack (borrowed), else what the binding's provider says (*held,
 * a reference the caller frees with qv_ctx_free), else the default cache. */
qv_status qv__ctx_hold(qv_ctx **held, qv_cache **cache, const void **meta, size_t *meta_len);
/* cache.c: one more reference; qv_cache_close drops one. */
qv_cache *qv__cache_retain(qv_cache *cache);

/* process.c: this thread's slot among QV_SHARDS, for per-thread state kept
 * on separate cache lines. Read three times a hit: initial-exec TLS is one
 * load where the default model in a shared library is a call to
 * __tls_get_addr (4 bytes of the static TLS glibc keeps for libraries that
 * are loaded later, as Python's and Lua's modules load this one). */
#define QV_SHARDS 16
#ifdef __GLIBC__ /* musl refuses to dlopen a library with initial-exec TLS */
extern _Thread_local int qv__shard __attribute__((tls_model("initial-exec"), visibility("hidden")));
#else
extern _Thread_local int qv__shard __attribute__((visibility("hidden")));
#endif
unsigned qv__thread_shard_first(void);
static inline unsigned qv__thread_shard(void) {
    int shard = qv__shard;
    return QV_LIKELY(shard >= 0) ? (unsigned)shard : qv__thread_shard_first();
}

/* A process-wide counter bumped in every child after fork(), so handles can
 * notice cheaply that they crossed one. */
extern _Atomic uint64_t qv__forks __attribute__((visibility("hidden")));
static inline uint64_t qv__fork_generation(void) {
    return atomic_load_explicit(&qv__forks, memory_order_relaxed);
}

#endif
