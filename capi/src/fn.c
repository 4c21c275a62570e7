/* Memoized functions for C-level callers: digest the call, look it up in the
 * thread's active cache, and on a miss run the body and store the result with
 * the context's metadata. ffi.c gives C function pointers the same path. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "lease.h"

struct qv_fn {
    _Atomic int refs;
    char *name, *version;
    size_t name_len, version_len;
    qv_fn_callback body;
    void *userdata;
    void (*destroy)(void *userdata);
    qv_fn_check check; /* refuses arguments the body cannot take, before any lookup */
    _Atomic uint64_t stats[QV_FN_STAT_COUNT];
};

void *qv__fn_userdata(const qv_fn *fn, qv_fn_callback body) {
    return fn->body == body ? fn->userdata : NULL;
}

void qv__fn_set_check(qv_fn *fn, qv_fn_check check) {
    fn->check = check;
}

void qv__fn_note_miss(qv_fn *fn) {
    atomic_fetch_add_explicit(&fn->stats[QV_FN_STAT_MISSES], 1, memory_order_relaxed);
}

static int64_t clock_ns(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

qv_status qv_fn_new(qv_fn **out, const char *name, const char *version, qv_fn_callback body, void *userdata,
                    void (*destroy)(void *userdata)) {
    qv_status st = QV_OK;
    qv_fn *fn = NULL;
    if (!out || !name || !body) st = qv__error(QV_EINVAL, "qv_fn_new: out, name and body are required");
    else if (!qv__utf8_valid((const uint8_t *)name, strlen(name)) ||
             (version && !qv__utf8_valid((const uint8_t *)version, strlen(version))))
        st = qv__error(QV_EINVAL, "qv_fn_new: name and version must be UTF-8");
    else if (!(fn = calloc(1, sizeof *fn)) || !(fn->name = strdup(name)) || (version && !(fn->version = strdup(version))))
        st = qv__nomem();
    if (st) {
        if (fn) {
            free(fn->name);
            free(fn);
        }
        if (out) *out = NULL;
        if (destroy) destroy(userdata);
        return st;
    }
    atomic_init(&fn->refs, 1);
    fn->name_len = strlen(name);
    fn->version_len = version ? strlen(version) : 0;
    fn->body = body;
    fn->userdata = userdata;
    fn->destroy = destroy;
    *out = fn;
    return QV_OK;
}

qv_fn *qv_fn_retain(qv_fn *fn) {
    if (fn) atomic_fetch_add_explicit(&fn->refs, 1, memory_order_relaxed);
    return fn;
}

void qv_fn_free(qv_fn *fn) {
    if (!fn || atomic_fetch_sub_explicit(&fn->refs, 1, memory_order_acq_rel) != 1) return;
    if (fn->destroy) fn->destroy(fn->userdata);
    free(fn->name);
    free(fn->version);
    free(fn);
}

const char *qv_fn_name(const qv_fn *fn) {
    return fn ? fn->name : NULL;
}

const char *qv_fn_version(const qv_fn *fn) {
    return fn ? fn->version : NULL;
}

qv_status qv_fn_stat(const qv_fn *fn, int which, uint64_t *out) {
    if (!fn || !out) return qv__error(QV_EINVAL, "qv_fn_stat: NULL argument");
    if (which < 0 || which >= QV_FN_STAT_COUNT) return qv__error(QV_EINVAL, "unknown fn statistic %d", which);
    *out = atomic_load_explicit(&((qv_fn *)fn)->stats[which], memory_order_relaxed);
    return QV_OK;
}

static qv_status check_args(const qv_fn *fn, const qv_value *args, const qv_value *kwargs) {
    if (qv_value_type(args) != QV_TYPE_LIST || !args) return qv__error(QV_ETYPE, "args must be a list");
    if (kwargs && qv_value_type(kwargs) != QV_TYPE_MAP) return qv__error(QV_ETYPE, "kwargs must be a map");
    return fn->check ? fn->check(args, kwargs, fn->userdata) : QV_OK;
}

/* The call's encoding in enc: ["quiver/call/v1", name, version, args, kwargs]. */
static qv_status encode_call(qv_encoder *enc, const qv_fn *fn, const qv_value *args, const qv_value *kwargs) {
    qv_status st = qv__encode_call_head(enc, fn->name, fn->name_len, fn->version, fn->version_len);
    if (!st) st = qv_encoder_value(enc, args);
    if (st) return st;
    if (kwargs) return qv_encoder_value(enc, kwargs);
    if ((st = qv_encoder_map_begin(enc))) return st;
    return qv_encoder_map_end(enc);
}

qv_status qv_fn_digest(qv_digest *out, const qv_fn *fn, const qv_value *args, const qv_value *kwargs) {
    if (!out || !fn) return qv__error(QV_EINVAL, "qv_fn_digest: NULL argument");
    qv_status st = check_args(fn, args, kwargs);
    if (st) return st;
    qv_encoder *enc = qv__thread_encoder();
    if (!enc) return qv__nomem();
    qv_encoder_reset_for_digest(enc);
    if ((st = encode_call(enc, fn, args, kwargs))) return st;
    return qv_encoder_digest(enc, out);
}

static qv_status decode_into(const void *data, size_t len, void *userdata) {
    return qv_value_decode(userdata, data, len);
}

qv_status qv__fn_lookup(qv_fn *fn, qv_cache *cache, const qv_digest *key, qv_value **result) {
    return qv__fn_lookup_with(fn, cache, key, decode_into, result);
}

qv_status qv__fn_lookup_with(qv_fn *fn, qv_cache *cache, const qv_digest *key, qv_result_cb cb, void *userdata) {
    int64_t saved = 0;
    qv_status st = qv__cache_get_with(cache, key, cb, userdata, &saved);
    if (st == QV_OK) {
        atomic_fetch_add_explicit(&fn->stats[QV_FN_STAT_HITS], 1, memory_order_relaxed);
        if (saved > 0) atomic_fetch_add_explicit(&fn->stats[QV_FN_STAT_SAVED_NS], (uint64_t)saved, memory_order_relaxed);
    }
    return st;
}

static qv_status run_and_store(qv_fn *fn, qv_cache *cache, const void *meta, size_t meta_len, const void *call,
                               size_t call_len, const qv_digest *key, const qv_value *args, const qv_value *kwargs,
                               qv_value **result) {
    qv__fn_note_miss(fn);
    qv_store_info info = QV_STORE_INFO_INIT;
    info.start_ns = clock_ns(CLOCK_REALTIME);
    int64_t t0 = clock_ns(CLOCK_MONOTONIC);
    qv_value *r = NULL, *empty = NULL;
    qv_status st = QV_OK;
    if (!kwargs && (st = qv_value_new_map(&empty))) return st;
    /* cleared, so a body that fails without a word can be told apart */
    qv_error_set(QV_OK, NULL);
    st = fn->body(&r, args, kwargs ? kwargs : empty, fn->userdata);
    info.duration_ns = clock_ns(CLOCK_MONOTONIC) - t0;
    qv_value_free(empty);
    if (st == QV_OK && !r) st = qv__error(QV_EFAILED, "%s: the body returned no result", fn->name);
    if (st) {
        if (!qv__error_is_set()) qv__error(st, "%s: the body failed with %s", fn->name, qv_status_name(st));
        qv_value_free(r);
        return st;
    }
    void *enc;
    size_t enc_len;
    info.meta = meta;
    info.meta_len = meta_len;
    if ((st = qv_value_encode(r, &enc, &enc_len))) {
        qv_value_free(r);
        return st;
    }
    st = qv_cache_store(cache, key, call, call_len, enc, enc_len, &info);
    qv_free(enc);
    /* a read-only cache still answers: the call ran, it just is not kept */
    if (st && st != QV_EREADONLY) {
        qv_value_free(r);
        return st;
    }
    *result = r;
    return QV_OK;
}

qv_status qv_fn_call_kw(qv_fn *fn, const qv_value *args, const qv_value *kwargs, qv_value **result) {
    if (!result) return qv__error(QV_EINVAL, "qv_fn_call: result is NULL");
    *result = NULL;
    if (!fn) return qv__error(QV_EINVAL, "qv_fn_call: fn is NULL");
    qv_status st = check_args(fn, args, kwargs);
    if (st) return st;
    qv_cache *cache;
    const void *meta;
    size_t meta_len;
    if ((st = qv_ctx_current(&cache, &meta, &meta_len))) return st;
    /* Encode into the thread's encoder; the hit path allocates nothing. */
    qv_encoder *enc = qv__thread_encoder();
    if (!enc) return qv__nomem();
    qv_encoder_reset(enc);
    const void *call;
    size_t call_len;
    qv_digest key;
    if ((st = encode_call(enc, fn, args, kwargs)) || (st = qv_encoder_finish(enc, &call, &call_len))) return st;
    qv_digest_bytes(&key, call, call_len);
    if ((st = qv__fn_lookup(fn, cache, &key, result)) != QV_NOTFOUND) return st;
    /* The body may make memoized calls of its own on this thread's encoder. */
    void *copy = malloc(call_len);
    if (!copy) return qv__nomem();
    memcpy(copy, call, call_len);
    /* Compute once: whoever holds the key's lease runs the call; the others
     * wait, then find its result (DESIGN section 12). */
    qv_leases *leases = qv__leases_of(cache);
    qv_lease lease;
    int outcome = QV_LEASE_TIMEOUT;
    if (leases && qv__lease_acquire(leases, &key, -1, &outcome, &lease)) outcome = QV_LEASE_TIMEOUT;
    st = QV_NOTFOUND;
    if (outcome != QV_LEASE_TIMEOUT) /* stored while we took the lease, or while we waited */
        st = qv__fn_lookup(fn, cache, &key, result);
    /* not there after a release: its holder failed, and we run it ourselves */
    if (st == QV_NOTFOUND) st = run_and_store(fn, cache, meta, meta_len, copy, call_len, &key, args, kwargs, result);
    if (outcome == QV_LEASE_HELD) qv__lease_release(leases, &key, &lease);
    free(copy);
    return st;
}

qv_status qv_fn_call(qv_fn *fn, const qv_value *args, qv_value **result) {
    return qv_fn_call_kw(fn, args, NULL, result);
}
