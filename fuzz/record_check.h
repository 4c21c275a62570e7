/* The call-record readers of record.c, run on one stored record the way the
 * library runs them, with the answers they must agree on. Shared by the
 * byte-level and the structure-aware record fuzzers.
 *
 * The readers: qv__record_result and qv__record_duration (the hit path, which
 * never validates the whole record), qv__record_walk (eviction, gc, verify,
 * queries; eviction and gc walk records nobody validated), qv__record_load
 * (qv_cache_load, export), qv__record_call_digest (verify) and
 * qv__record_name (the per-function counts of stores, evictions and hits). */
#ifndef QV_FUZZ_RECORD_CHECK_H
#define QV_FUZZ_RECORD_CHECK_H

#include <stdlib.h>
#include <string.h>

#include "cache.h"

/* The values table a record's references are looked up in. */
typedef struct {
    qv_value_lookup lookup;
    void *userdata;
} rc_values;

/* verify's qv__record_call_digest reads values through a cache's store:
 * a store whose only operation is that lookup. */
typedef struct {
    qv_store base;
    const rc_values *values;
} rc_store;

static qv_status rc_store_get(qv_store *s, qv_txn *txn, int table, const void *key, size_t klen, const void **val,
                              size_t *vlen) {
    (void)txn;
    if (table != T_VALUES || klen != 16) abort(); /* the call digest reads nothing else */
    const rc_values *v = ((rc_store *)s)->values;
    return v->lookup(key, val, vlen, v->userdata);
}

static const qv_store_ops rc_store_ops = {.get = rc_store_get};

typedef struct {
    const uint8_t *rec;
    size_t len;
    int valid;
    int visits;
} rc_walk;

static qv_status rc_visit(int key, const uint8_t *item, size_t len, void *userdata) {
    rc_walk *w = userdata;
    /* every item lies inside the record and is one whole, valid item */
    if (item < w->rec || len == 0 || (size_t)(item - w->rec) > w->len || len > w->len - (size_t)(item - w->rec))
        abort();
    if (qv_validate(item, len) != QV_OK) abort();
    (void)key;
    w->visits++;
    return QV_OK;
}

static const qv_value *rc_field(const qv_value *rec, const char *name) {
    return qv_value_map_find(rec, name);
}

/* The encoding of a loaded item, for comparisons. */
static int rc_same_encoding(const qv_value *v, const void *data, size_t len) {
    void *out;
    size_t n;
    if (qv_value_encode(v, &out, &n) != QV_OK) abort();
    int same = n == len && memcmp(out, data, n) == 0;
    qv_free(out);
    return same;
}

/* The call digest rebuilt from a loaded record (FORMAT.md 6.3). */
static void rc_loaded_call_digest(const qv_value *rec, qv_digest *out) {
    qv_encoder *enc;
    const void *data;
    size_t len;
    if (qv_encoder_new(&enc) || qv_encoder_list(enc, 5) ||
        qv_encoder_text(enc, QV_CALL_MARKER, sizeof QV_CALL_MARKER - 1) ||
        qv_encoder_value(enc, rc_field(rec, "name")) || qv_encoder_value(enc, rc_field(rec, "version")) ||
        qv_encoder_value(enc, rc_field(rec, "args")) || qv_encoder_value(enc, rc_field(rec, "kwargs")) ||
        qv_encoder_finish(enc, &data, &len))
        abort();
    qv_digest_bytes(out, data, len);
    qv_encoder_free(enc);
}

static void rc_check(const uint8_t *rec, size_t len, const rc_values *values) {
    int valid = qv_validate(rec, len) == QV_OK;

    /* the hit path */
    size_t rs = 0, re = 0;
    int has_result = qv__record_result(rec, len, &rs, &re) == QV_OK;
    const uint8_t *hit = NULL;
    size_t hit_len = 0;
    int64_t duration = 0;
    if (has_result) {
        if (rs >= re || re > len) abort();
        if (valid && qv_validate(rec + rs, re - rs) != QV_OK) abort();
        duration = qv__record_duration(rec, len, re);
        hit = rec + rs;
        hit_len = re - rs;
        if (qv__record_is_ref(hit, hit_len)) {
            const void *v;
            if (values->lookup(hit + 6, &v, &hit_len, values->userdata) != QV_OK || qv_validate(v, hit_len)) hit = NULL;
            else hit = v;
        }
    }

    /* the per-function counts */
    size_t ns = 0, ne = 0;
    int has_name = qv__record_name(rec, len, &ns, &ne) == QV_OK;
    if (has_name && (ns >= ne || ne > len || rec[ns] >> 5 != 3 || qv_validate(rec + ns, ne - ns) != QV_OK)) abort();

    /* eviction, gc, verify */
    rc_walk w = {rec, len, valid, 0};
    qv_status walked = qv__record_walk(rec, len, rc_visit, &w);
    if (walked != QV_OK && walked != QV_ECORRUPT) abort();

    static qv_cache cache; /* only its store is read */
    static qv_hasher *hasher;
    rc_store store = {{&rc_store_ops}, values};
    if (!hasher && !(hasher = qv__hasher_new())) abort();
    cache.store = &store.base;
    verify_ctx v = {.c = &cache, .h = hasher};
    qv_digest rebuilt;
    qv_status rebuilt_st = qv__record_call_digest(&v, rec, len, &rebuilt);

    /* qv_cache_load */
    qv_value *loaded = NULL;
    qv_status st = qv__record_load(rec, len, values->lookup, values->userdata, &loaded);
    if (st != QV_OK && st != QV_ECORRUPT && st != QV_ENOMEM) abort(); /* a bad record is corrupt, nothing else */
    if (st != QV_OK) {
        if (loaded) abort();
        return;
    }
    /* what loads is a valid record: the other readers agree with it */
    if (!valid || walked != QV_OK || qv_value_type(loaded) != QV_TYPE_MAP || qv_value_count(loaded) > R_COUNT) abort();
    const qv_value *result = rc_field(loaded, "result");
    if (result && rec[0] <= 0xb8) { /* the hit path reads maps of up to 255 fields */
        if (!has_result || !hit || !rc_same_encoding(result, hit, hit_len)) abort();
        int64_t d;
        const qv_value *dv = rc_field(loaded, "duration_ns");
        if (dv && qv_value_get_int(dv, &d) == QV_OK && d != duration) abort();
    }
    const qv_value *name = rc_field(loaded, "name");
    if (has_name && (!name || !rc_same_encoding(name, rec + ns, ne - ns))) abort();
    if (!has_name && result && name && qv_value_type(name) == QV_TYPE_TEXT && rec[0] <= 0xb8) abort();
    const qv_value *args = rc_field(loaded, "args"), *kwargs = rc_field(loaded, "kwargs");
    if (args && qv_value_type(args) != QV_TYPE_LIST) abort();
    if (kwargs && qv_value_type(kwargs) != QV_TYPE_MAP) abort();
    if (rc_field(loaded, "name") && rc_field(loaded, "version") && args && kwargs) {
        qv_digest want;
        rc_loaded_call_digest(loaded, &want);
        if (rebuilt_st != QV_OK || memcmp(want.bytes, rebuilt.bytes, 16) != 0) abort();
    }
    qv_value_free(loaded);
}

#endif
