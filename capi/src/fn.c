/* Memoized functions for C-level callers: digest the call, look it up in the
 * thread's active cache, and on a miss run the body and store the result with
 * the context's metadata. ffi.c gives C function pointers the same path. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

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

void qv__fn_note_hit(qv_fn *fn) {
    atomic_fetch_add_explicit(&fn->stats[QV_FN_STAT_HITS], 1, memory_order_relaxed);
}

qv_status qv_fn_new(qv_fn **out, const char *name, const char *version, qv_fn_callback body, void *userdata,
                    void (*destroy)(void *userdata)) {
    qv_status st = QV_OK;
    qv_fn *fn = NULL;
    if (!out || !name || !body) st = qv__error(QV_EINVAL, "qv_fn_new: out, name and body are required");
    else if (!qv_utf8_valid((const uint8_t *)name, strlen(name)) ||
             (version && !qv_utf8_valid((const uint8_t *)version, strlen(version))))
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

/* The call's encoding in enc: [QV_CALL_MARKER, name, version, args, kwargs]. */
static qv_status encode_call(qv_encoder *enc, const qv_fn *fn, const qv_value *args, const qv_value *kwargs) {
    qv_status st = qv_encoder_call_head(enc, fn->name, fn->name_len, fn->version, fn->version_len);
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

/* The body of a C-level qv_fn, as the call runtime runs it: the result as a
 * tree for the caller, and its encoding to store. */
typedef struct {
    qv_fn *fn;
    const qv_value *args, *kwargs;
    qv_value *result;
    void *encoding;
    qv_value **out; /* where a hit decodes to */
} fn_run;

static qv_status fn_body(const void **result, size_t *len, void *userdata) {
    fn_run *r = userdata;
    qv_fn *fn = r->fn;
    qv__fn_note_miss(fn);
    qv_value *empty = NULL;
    qv_status st = QV_OK;
    if (!r->kwargs && (st = qv_value_new_map(&empty))) return st;
    st = fn->body(&r->result, r->args, r->kwargs ? r->kwargs : empty, fn->userdata);
    qv_value_free(empty);
    if (st == QV_OK && !r->result) st = qv__error(QV_EFAILED, "%s: the body returned no result", fn->name);
    if (st) {
        if (!qv__error_is_set()) qv__error(st, "%s: the body failed with %s", fn->name, qv_status_name(st));
        return st;
    }
    return qv_value_encode(r->result, &r->encoding, len) ? QV_EENCODE : (*result = r->encoding, QV_OK);
}

static qv_status fn_hit(const void *data, size_t len, void *userdata) {
    fn_run *r = userdata;
    return qv_value_decode(r->out, data, len);
}

/* The call under the context of cache and meta. */
static qv_status call_in(qv_fn *fn, qv_cache *cache, const void *meta, size_t meta_len, const qv_value *args,
                         const qv_value *kwargs, qv_value **result) {
    /* Encode into the thread's encoder; the hit path allocates nothing. */
    qv_encoder *enc = qv__thread_encoder();
    if (!enc) return qv__nomem();
    qv_encoder_reset(enc);
    const void *call;
    size_t call_len;
    qv_digest key;
    qv_status st;
    if ((st = encode_call(enc, fn, args, kwargs)) || (st = qv_encoder_finish(enc, &call, &call_len))) return st;
    qv_digest_bytes(&key, call, call_len);
    if ((st = qv__fn_lookup(fn, cache, &key, result)) != QV_NOTFOUND) return st;
    /* The body may make memoized calls of its own on this thread's encoder. */
    void *copy = malloc(call_len);
    if (!copy) return qv__nomem();
    memcpy(copy, call, call_len);
    qv_call_options opts = QV_CALL_OPTIONS_INIT;
    opts.flags = QV_CALL_MISSED;
    opts.meta = meta;
    opts.meta_len = meta_len;
    fn_run run = {fn, args, kwargs, NULL, NULL, result};
    int outcome;
    st = qv_call_run(&outcome, cache, &key, copy, call_len, &opts, fn_hit, fn_body, &run);
    free(copy);
    qv_free(run.encoding);
    if (st == QV_OK && outcome == QV_CALL_HIT) {
        qv__fn_note_hit(fn);
        qv_value_free(run.result); /* a body that ran and then failed to encode never gets here */
        return QV_OK;
    }
    if (st) {
        qv_value_free(run.result);
        return st;
    }
    /* ran here: stored, or not kept (read-only, full): either way the result */
    *result = run.result;
    return QV_OK;
}

qv_status qv_fn_call_kw(qv_fn *fn, const qv_value *args, const qv_value *kwargs, qv_value **result) {
    if (!result) return qv__error(QV_EINVAL, "qv_fn_call: result is NULL");
    *result = NULL;
    if (!fn) return qv__error(QV_EINVAL, "qv_fn_call: fn is NULL");
    qv_status st = check_args(fn, args, kwargs);
    if (st) return st;
    qv_ctx *held;
    qv_cache *cache;
    const void *meta;
    size_t meta_len;
    if ((st = qv__ctx_hold(&held, &cache, &meta, &meta_len))) return st;
    st = call_in(fn, cache, meta, meta_len, args, kwargs, result);
    qv_ctx_free(held);
    return st;
}

qv_status qv_fn_call(qv_fn *fn, const qv_value *args, qv_value **result) {
    return qv_fn_call_kw(fn, args, NULL, result);
}
