/* The call record (docs/FORMAT.md section 6): building one from a call and
 * its result, walking its fields, loading it back as a tree, and rebuilding
 * the call it was stored under. */
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sign.h"
#include "tier.h"

/* Keys of a call record, by R_*, as qv_cache_load names them. */
static const char *const record_keys[R_COUNT] = {"result",  "duration_ns", "start_ns", "name", "version",
                                                 "args",    "kwargs",      "lang",     "meta"};

/* The head of a value reference: tag QV_TAG_REF, then a 16-byte string. */
static const uint8_t ref_head[6] = {0xda, 0x51, 0x56, 0x00, 0x03, 0x50};
#define REF_LEN 22

/* ----------------------------------------------------------------- records */

int qv__record_is_ref(const uint8_t *p, size_t len) {
    return len == REF_LEN && memcmp(p, ref_head, sizeof ref_head) == 0;
}

/* The length of the canonical integer, false, true or null at p (what most
 * memoized functions return), or 0 for anything else, which the decoder
 * then reads: the hit path's shortcut past it, checking what it would. */
static inline size_t simple_item_len(const uint8_t *p, size_t avail) {
    unsigned major = p[0] >> 5, ai = p[0] & 31;
    if (major == 7) return ai >= 20 && ai <= 22 ? 1 : 0;
    if (major > 1 || ai > 27) return 0;
    if (ai < 24) return 1;
    size_t n = (size_t)1 << (ai - 24);
    if (avail < 1 + n) return 0;
    uint64_t v = 0;
    for (size_t i = 1; i <= n; i++) v = v << 8 | p[i];
    static const uint64_t least[4] = {24, 0x100, 0x10000, 0x100000000ull};
    return v >= least[ai - 24] ? 1 + n : 0;
}

/* The result's span inside a record, validated. */
qv_status qv__record_result(const uint8_t *rec, size_t len, size_t *start, size_t *end) {
    /* a map of at least R_COUNT entries (later formats may add fields), key 0 first */
    size_t head = len ? (rec[0] & 31) < 24 ? 1 : (rec[0] & 31) == 24 ? 2 : 0 : 0;
    if (!head || len < head + 2 || rec[0] >> 5 != 5 || (head == 1 && (rec[0] & 31) < R_COUNT) || rec[head] != R_RESULT)
        return qv__error(QV_ECORRUPT, "record does not start with its result");
    size_t simple = simple_item_len(rec + head + 1, len - head - 1);
    if (simple) {
        *start = head + 1;
        *end = head + 1 + simple;
        return QV_OK;
    }
    qv_decoder dec;
    qv_decoder_reset(&dec, rec + head + 1, len - head - 1);
    /* the decoder sees the result as a whole item followed by more bytes */
    qv_status st = qv__decoder_item_span(&dec, start, end);
    if (st) return qv__error(QV_ECORRUPT, "record's result is invalid: %s", qv_errmsg());
    *start += head + 1;
    *end += head + 1;
    return QV_OK;
}

/* Visit the top-level entries of a record; args items and kwargs values are
 * visited one by one (key R_ARGS / R_KWARGS), everything else whole. */
qv_status qv__record_walk(const uint8_t *rec, size_t len, record_visit visit, void *userdata) {
    qv_decoder dec;
    qv_decoder_reset(&dec, rec, len);
    qv_type t;
    uint64_t n, inner;
    size_t s, e;
    qv_status st;
    if ((st = qv_decoder_next(&dec, &t)) || t != QV_TYPE_MAP) goto bad;
    qv_decoder_get_count(&dec, &n);
    for (uint64_t i = 0; i < n; i++) {
        int64_t k;
        if ((st = qv_decoder_next(&dec, &t)) || t != QV_TYPE_INT || qv_decoder_get_int(&dec, &k)) goto bad;
        if (k == R_ARGS || k == R_KWARGS) {
            if ((st = qv_decoder_next(&dec, &t)) || t != (k == R_ARGS ? QV_TYPE_LIST : QV_TYPE_MAP)) goto bad;
            qv_decoder_get_count(&dec, &inner);
            for (uint64_t j = 0; j < inner; j++) {
                if (k == R_KWARGS && (st = qv__decoder_item_span(&dec, &s, &e))) goto bad;
                if ((st = qv__decoder_item_span(&dec, &s, &e))) goto bad;
                if ((st = visit((int)k, rec + s, e - s, userdata))) return st;
            }
        } else {
            if ((st = qv__decoder_item_span(&dec, &s, &e))) goto bad;
            if ((st = visit((int)k, rec + s, e - s, userdata))) return st;
        }
    }
    if (qv_decoder_next(&dec, &t) != QV_NOTFOUND) goto bad;
    return QV_OK;
bad:
    return qv__error(QV_ECORRUPT, "call record is malformed");
}

/* Small items go inline; large ones (and anything that looks like a
 * reference) go to the values table by digest. */
static qv_status emit_item(record_builder *b, const uint8_t *p, size_t len) {
    if (len <= b->inline_limit && !(len >= 5 && memcmp(p, ref_head, 5) == 0)) {
        if (len >= QV_MAX_DEPTH - 2) b->may_be_deep = 1; /* the record nests it two deeper */
        return qv__encoder_raw(b->enc, p, len);
    }
    if (!b->inline_limit && len <= 16) return qv__encoder_raw(b->enc, p, len); /* too small to nest deeply */
    if (b->nrefs == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 4;
        valref *r = realloc(b->refs, cap * sizeof *r);
        if (!r) return qv__nomem();
        b->refs = r;
        b->cap = cap;
    }
    valref *r = &b->refs[b->nrefs++];
    qv_digest_bytes(&r->digest, p, len);
    r->data = p;
    r->len = len;
    qv_status st = qv_encoder_tag(b->enc, QV_TAG_REF);
    return st ? st : qv_encoder_bytes(b->enc, r->digest.bytes, 16);
}

static qv_status bad_call(const char *why) {
    return qv__error(QV_EINVAL, "call encoding is not [\"" QV_CALL_MARKER "\", name, version, args, kwargs]: %s", why);
}

qv_status qv__record_build(record_builder *b, pending *p, const uint8_t *call, size_t call_len,
                              const uint8_t *result, size_t result_len, const qv_store_info *info) {
    qv_decoder dec;
    qv_decoder_reset(&dec, call, call_len);
    qv_type t;
    uint64_t n;
    const uint8_t *s;
    size_t len, ns, ne, vs, ve;
    qv_status st;
    if ((st = qv_decoder_next(&dec, &t))) return st;
    if (t != QV_TYPE_LIST || (qv_decoder_get_count(&dec, &n), n != 5)) return bad_call("not a 5-item list");
    if ((st = qv_decoder_next(&dec, &t))) return st;
    if (t != QV_TYPE_TEXT ||
        (qv_decoder_get_data(&dec, &s, &len), len != sizeof QV_CALL_MARKER - 1 || memcmp(s, QV_CALL_MARKER, len)))
        return bad_call("the first item is not \"" QV_CALL_MARKER "\"");
    if ((st = qv__decoder_item_span(&dec, &ns, &ne))) return st;
    if (call[ns] >> 5 != 3) return bad_call("the name is not text");
    if ((st = qv__decoder_item_span(&dec, &vs, &ve))) return st;
    if (call[vs] >> 5 != 3 && call[vs] != 0xf6) return bad_call("the version is neither text nor null");

    qv_encoder *enc = b->enc;
    int64_t start = info && info->start_ns ? info->start_ns : qv__now_ns();
    qv_encoder_reset(enc);
    if ((st = qv_encoder_map_begin(enc)) || (st = qv_encoder_uint(enc, R_RESULT)) ||
        (st = emit_item(b, result, result_len)) || (st = qv_encoder_uint(enc, R_DURATION)) ||
        (st = qv_encoder_int(enc, info ? info->duration_ns : 0)) || (st = qv_encoder_uint(enc, R_START)) ||
        (st = qv_encoder_int(enc, start)) || (st = qv_encoder_uint(enc, R_NAME)) ||
        (st = qv__encoder_raw(enc, call + ns, ne - ns)) || (st = qv_encoder_uint(enc, R_VERSION)) ||
        (st = qv__encoder_raw(enc, call + vs, ve - vs)) || (st = qv_encoder_uint(enc, R_ARGS)))
        return st;

    if ((st = qv_decoder_next(&dec, &t))) return st;
    if (t != QV_TYPE_LIST) return bad_call("args is not a list");
    qv_decoder_get_count(&dec, &n);
    if ((st = qv_encoder_list(enc, n))) return st;
    for (uint64_t i = 0; i < n; i++) {
        size_t a, e;
        if ((st = qv__decoder_item_span(&dec, &a, &e)) || (st = emit_item(b, call + a, e - a))) return st;
    }
    if ((st = qv_encoder_uint(enc, R_KWARGS))) return st;
    if ((st = qv_decoder_next(&dec, &t))) return st;
    if (t != QV_TYPE_MAP) return bad_call("kwargs is not a map");
    qv_decoder_get_count(&dec, &n);
    if ((st = qv_encoder_map_begin(enc))) return st;
    for (uint64_t i = 0; i < n; i++) {
        size_t a, e;
        if ((st = qv__decoder_item_span(&dec, &a, &e)) || (st = qv__encoder_raw(enc, call + a, e - a))) return st;
        if ((st = qv__decoder_item_span(&dec, &a, &e)) || (st = emit_item(b, call + a, e - a))) return st;
    }
    if ((st = qv_encoder_map_end(enc))) return st;
    if (qv_decoder_next(&dec, &t) != QV_NOTFOUND) return bad_call("trailing items");

    const char *lang = info && info->lang ? info->lang : "c";
    if ((st = qv_encoder_uint(enc, R_LANG)) || (st = qv_encoder_text(enc, lang, strlen(lang))) ||
        (st = qv_encoder_uint(enc, R_META)))
        return st;
    if (info && info->meta) {
        if (info->meta_len == 0 || (((const uint8_t *)info->meta)[0] >> 5) != 5)
            return qv__error(QV_EINVAL, "metadata must be the encoding of a map");
        if ((st = qv_encoder_encoded(enc, info->meta, (size_t)info->meta_len))) return st;
        if (info->meta_len >= QV_MAX_DEPTH - 2) b->may_be_deep = 1;
    } else if ((st = qv_encoder_map_begin(enc)) || (st = qv_encoder_map_end(enc))) {
        return st;
    }
    if ((st = qv_encoder_map_end(enc))) return st;
    const void *rec;
    if ((st = qv_encoder_finish(enc, &rec, &p->record_len))) return st;
    p->record = rec;
    uint64_t h = qv__hash64(call + ns, ne - ns);
    p->name = call + ns;
    p->name_len = ne - ns;
    qv__put_be64(p->name_key, h);
    memcpy(p->name_key + 8, p->key.bytes, 16);
    return QV_OK;
}

int64_t qv__record_duration(const uint8_t *rec, size_t len, size_t result_end) {
    qv_decoder dec;
    qv_type t;
    int64_t key, d;
    qv_decoder_reset(&dec, rec + result_end, len - result_end);
    if (qv_decoder_next(&dec, &t) || qv_decoder_get_int(&dec, &key) || key != R_DURATION) return 0;
    qv_decoder_reset(&dec, rec + result_end + 1, len - result_end - 1);
    if (qv_decoder_next(&dec, &t) || qv_decoder_get_int(&dec, &d)) return 0;
    return d;
}

/* One item at rec[*at], which then moves past it (a decoder reads a
 * single top-level item). */
static qv_status next_item(const uint8_t *rec, size_t len, size_t *at, size_t *start, size_t *end) {
    qv_decoder dec;
    qv_decoder_reset(&dec, rec + *at, len - *at);
    qv_status st = qv__decoder_item_span(&dec, start, end);
    if (st) return st;
    *start += *at;
    *end += *at;
    *at = *end;
    return QV_OK;
}

/* The builder writes the name third after the result, so this reads no
 * further than the name. */
qv_status qv__record_name(const uint8_t *rec, size_t len, size_t *start, size_t *end) {
    size_t at, ks, ke;
    qv_status st = qv__record_result(rec, len, start, &at);
    if (st) return st;
    for (int i = 0; i < R_NAME; i++) {
        if (next_item(rec, len, &at, &ks, &ke) || next_item(rec, len, &at, start, end)) break;
        if (ke - ks == 1 && rec[ks] == R_NAME) {
            if (rec[*start] >> 5 != 3) break;
            return QV_OK;
        }
    }
    return qv__error(QV_ECORRUPT, "call record has no name");
}

qv_status qv__call_name(const uint8_t *call, size_t len, size_t *start, size_t *end) {
    size_t at = 1, ms, me;
    /* a 5-item list whose second item is text */
    if (!len || call[0] != 0x85 || next_item(call, len, &at, &ms, &me) || next_item(call, len, &at, start, end) ||
        call[*start] >> 5 != 3)
        return bad_call("no name");
    return QV_OK;
}

/* ------------------------------------------------------------------- load */

typedef struct {
    qv_value_lookup lookup;
    void *userdata;
} resolver;

/* A record item, with a value reference replaced by the value itself. */
static qv_status resolve(const resolver *r, const qv_value *item, qv_value **out) {
    uint64_t tag;
    const qv_value *content;
    const uint8_t *d;
    size_t n;
    if (qv_value_get_tag(item, &tag, &content) == QV_OK && tag == QV_TAG_REF &&
        qv_value_get_bytes(content, &d, &n) == QV_OK && n == 16) {
        const void *v;
        qv_status st = r->lookup(d, &v, &n, r->userdata);
        if (st == QV_NOTFOUND) return qv__error(QV_ECORRUPT, "a value the record refers to is missing");
        if (st) return st;
        if (qv_value_decode(out, v, n)) return qv__error(QV_ECORRUPT, "a value the record refers to: %s", qv_errmsg());
        return QV_OK;
    }
    return qv_value_clone(out, item);
}

static qv_status resolve_field(const resolver *r, int key, const qv_value *item, qv_value **out) {
    qv_status st;
    if (key == R_ARGS || key == R_KWARGS) {
        /* a field of another type is corrupt, not an empty one */
        if (qv_value_type(item) != (key == R_ARGS ? QV_TYPE_LIST : QV_TYPE_MAP))
            return qv__error(QV_ECORRUPT, "call record's %s is not a %s", record_keys[key], key == R_ARGS ? "list" : "map");
        size_t n = qv_value_count(item);
        if ((st = key == R_ARGS ? qv_value_new_list(out) : qv_value_new_map(out))) return st;
        for (size_t i = 0; i < n; i++) {
            qv_value *v, *k = NULL;
            if (key == R_ARGS) st = resolve(r, qv_value_list_get(item, i), &v);
            else if (!(st = qv_value_clone(&k, qv_value_map_key(item, i)))) {
                if ((st = resolve(r, qv_value_map_value(item, i), &v))) qv_value_free(k);
            }
            if (!st) st = key == R_ARGS ? qv_value_list_append(*out, v) : qv_value_map_set(*out, k, v);
            if (st) break;
        }
    } else if (key == R_RESULT) {
        return resolve(r, item, out);
    } else {
        return qv_value_clone(out, item);
    }
    if (st) {
        qv_value_free(*out);
        *out = NULL;
    }
    return st;
}

qv_status qv__record_load(const void *data, size_t len, qv_value_lookup lookup, void *userdata, qv_value **out) {
    resolver r = {lookup, userdata};
    qv_value *raw;
    qv_status st = qv_value_decode(&raw, data, len);
    if (st) return qv__error(QV_ECORRUPT, "call record is malformed: %s", qv_errmsg());
    if (qv_value_type(raw) != QV_TYPE_MAP || qv_value_count(raw) < R_COUNT) {
        qv_value_free(raw);
        return qv__error(QV_ECORRUPT, "call record is not a map of %d fields", R_COUNT);
    }
    if (!(st = qv_value_new_map(out))) {
        for (size_t i = 0; !st && i < qv_value_count(raw); i++) {
            int64_t k;
            if (qv_value_get_int(qv_value_map_key(raw, i), &k) || k < 0) {
                st = qv__error(QV_ECORRUPT, "call record has a key that is not a field number");
            } else if (k < R_COUNT) { /* fields of a newer format are skipped */
                qv_value *key, *v;
                if (!(st = resolve_field(&r, (int)k, qv_value_map_value(raw, i), &v))) {
                    if ((st = qv_value_new_text(&key, record_keys[k], strlen(record_keys[k])))) qv_value_free(v);
                    else st = qv_value_map_set(*out, key, v);
                }
            }
        }
        if (st) {
            qv_value_free(*out);
            *out = NULL;
        }
    }
    qv_value_free(raw);
    return st;
}

typedef struct {
    qv_cache *c;
    qv_txn *txn;
} store_values;

static qv_status value_in_store(const uint8_t digest[16], const void **data, size_t *len, void *userdata) {
    store_values *sv = userdata;
    return sv->c->store->ops->get(sv->c->store, sv->txn, T_VALUES, digest, 16, data, len);
}

static qv_status put_int(qv_value *map, const char *name, int64_t n) {
    qv_value *k, *v;
    qv_status st = qv_value_new_text(&k, name, strlen(name));
    if (st) return st;
    if ((st = qv_value_new_int(&v, n))) {
        qv_value_free(k);
        return st;
    }
    return qv_value_map_set(map, k, v);
}

/* The hits table's count and last hit time, 0 for a call never counted (or
 * in a cache from before the table, opened read-only). */
static qv_status add_hit_fields(qv_cache *c, qv_txn *txn, const qv_digest *key, qv_value *rec) {
    uint64_t hits;
    int64_t last;
    qv_status st = qv__get_hits(c, txn, key, &hits, &last);
    if (st && st != QV_NOTFOUND) return st;
    if ((st = put_int(rec, "hits", hits > INT64_MAX ? INT64_MAX : (int64_t)hits))) return st;
    return put_int(rec, "last_hit_ns", last);
}

qv_status qv_cache_load(qv_cache *cache, const qv_digest *key, qv_value **record) {
    if (!record) return qv__error(QV_EINVAL, "qv_cache_load: record is NULL");
    *record = NULL;
    if (!cache || !key) return qv__error(QV_EINVAL, "qv_cache_load: NULL argument");
    if (cache->tier) return cache->tier->load(cache, key, record);
    qv_txn *txn;
    qv_status st = cache->store->ops->read_begin(cache->store, &txn);
    if (st) return st;
    const void *v;
    size_t n;
    store_values sv = {cache, txn};
    if (!(st = cache->store->ops->get(cache->store, txn, T_CALLS, key->bytes, 16, &v, &n)))
        st = qv__record_load(v, n, value_in_store, &sv, record);
    if (!st && (st = add_hit_fields(cache, txn, key, *record))) {
        qv_value_free(*record);
        *record = NULL;
    }
    cache->store->ops->read_end(cache->store, txn);
    if (st == QV__EFORGED) {
        qv__cache_count(cache, QV_STAT_FORGED, 1);
        st = QV_ECORRUPT;
    }
    if (st == QV_ECORRUPT) {
        char hex[33], why[512];
        qv_digest_hex(key, hex);
        snprintf(why, sizeof why, "%s", qv_errmsg());
        return qv__error(QV_ECORRUPT, "%s: entry %s is corrupt: %s", cache->path, hex, why);
    }
    return st;
}

static void hash_head(qv_hasher *h, int major, uint64_t n) {
    uint8_t b[9];
    size_t len = qv__encode_uint(b, n);
    b[0] |= (uint8_t)(major << 5);
    qv__hasher_update(h, b, len);
}

/* An argument as it was in the call: a value reference resolved. */
static qv_status hash_item(verify_ctx *v, const uint8_t *item, size_t len) {
    if (qv__record_is_ref(item, len)) {
        const void *val;
        qv_status st = v->c->store->ops->get(v->c->store, v->txn, T_VALUES, item + 6, 16, &val, &len);
        if (st) return st;
        item = val;
    }
    qv__hasher_update(v->h, item, len);
    return QV_OK;
}

/* The digest of the call a record says it holds, rebuilt from its name,
 * version, args and kwargs (fields R_NAME..R_KWARGS, in that order). */
qv_status qv__record_call_digest(verify_ctx *v, const uint8_t *rec, size_t len, qv_digest *out) {
    /* [QV_CALL_MARKER, ...: a 5-item list, then the marker as text */
    uint8_t head[2 + sizeof QV_CALL_MARKER - 1] = {0x85, 0x60 | (sizeof QV_CALL_MARKER - 1)};
    _Static_assert(sizeof QV_CALL_MARKER - 1 < 24, "the marker's length fits its text head");
    memcpy(head + 2, QV_CALL_MARKER, sizeof QV_CALL_MARKER - 1);
    qv_decoder dec;
    qv_decoder_reset(&dec, rec, len);
    qv_type t;
    uint64_t n, inner;
    size_t s, e;
    int want = R_NAME;
    qv__hasher_reset(v->h);
    qv__hasher_update(v->h, head, sizeof head);
    if (qv_decoder_next(&dec, &t) || t != QV_TYPE_MAP) return QV_ECORRUPT;
    qv_decoder_get_count(&dec, &n);
    for (uint64_t i = 0; i < n; i++) {
        int64_t k;
        if (qv_decoder_next(&dec, &t) || t != QV_TYPE_INT || qv_decoder_get_int(&dec, &k)) return QV_ECORRUPT;
        if (k >= R_NAME && k <= R_KWARGS && k != want++) return QV_ECORRUPT;
        if (k == R_ARGS || k == R_KWARGS) {
            if (qv_decoder_next(&dec, &t) || t != (k == R_ARGS ? QV_TYPE_LIST : QV_TYPE_MAP)) return QV_ECORRUPT;
            qv_decoder_get_count(&dec, &inner);
            hash_head(v->h, k == R_ARGS ? 4 : 5, inner);
            for (uint64_t j = 0; j < inner; j++) {
                if (k == R_KWARGS) {
                    if (qv__decoder_item_span(&dec, &s, &e)) return QV_ECORRUPT;
                    qv__hasher_update(v->h, rec + s, e - s);
                }
                if (qv__decoder_item_span(&dec, &s, &e) || hash_item(v, rec + s, e - s)) return QV_ECORRUPT;
            }
        } else {
            if (qv__decoder_item_span(&dec, &s, &e)) return QV_ECORRUPT;
            if (k == R_NAME || k == R_VERSION) qv__hasher_update(v->h, rec + s, e - s);
        }
    }
    if (want != R_KWARGS + 1) return QV_ECORRUPT;
    qv__hasher_digest(v->h, out);
    return QV_OK;
}
