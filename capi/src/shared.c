/* Named counters and dicts on a cache's store, for workers in any process or
 * language to share (DESIGN section 11: SafeCounter and SafeDict).
 *
 * They live beside the cache, in an LMDB environment of their own (the
 * directory "shared" in the cache's, docs/FORMAT.md), keyed by kind, name
 * and the caller's key. Every change is one write transaction: an increment
 * reads, adds and writes under LMDB's writer lock, so increments from many
 * processes never lose one. That environment never waits for the disk: a
 * flush per increment would cap a counter near a thousand increments a
 * second (LMDB 0.9 cannot skip it per transaction), and these are a run's
 * tallies, not results. A change survives its process at once; a crash of
 * the machine may lose the latest. They are not calls: eviction, gc and the
 * byte count never see them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cache.h"

enum { KIND_COUNTER = 'c', KIND_DICT = 'd' };

#define SHARED_MAP_SIZE ((uint64_t)64 << 20) /* grows when full */
static const char *const shared_tables[] = {"shared"};
enum { T_ENTRIES };

/* The cache's shared store, opened at first use. QV_NOTFOUND: a read-only
 * cache whose shared store nobody has made yet (every entry is absent). */
static qv_status shared_store(qv_store **out, qv_cache *c) {
    qv_store *s = atomic_load_explicit(&c->shared, memory_order_acquire);
    if (s) {
        *out = s;
        return QV_OK;
    }
    int readonly = (c->flags & QV_CACHE_READONLY) != 0;
    /* a read-only cache has warned about its directory already */
    qv_store_config cfg = {shared_tables, 1, QV_DURABILITY_FAST, readonly, SHARED_MAP_SIZE,
                           (c->flags & QV_CACHE_ALLOW_NETWORK_FS) != 0, readonly};
    qv_status st;
    if (c->memory) st = qv__store_memory_open(&s, &cfg);
    else {
        size_t n = strlen(c->path) + sizeof "/shared";
        char *path = malloc(n);
        if (!path) return qv__nomem();
        snprintf(path, n, "%s/shared", c->path);
        st = readonly && access(path, F_OK) != 0 ? QV_NOTFOUND : qv__store_lmdb_open(&s, path, &cfg);
        free(path);
    }
    if (st) return st;
    /* two threads may open it at once: one keeps its handle */
    qv_store *was = NULL;
    if (!atomic_compare_exchange_strong(&c->shared, &was, s)) {
        s->ops->close(s);
        s = was;
    }
    *out = s;
    return QV_OK;
}

typedef struct {
    uint8_t b[2 + QV_SHARED_KEY_MAX]; /* LMDB's largest key is 511 bytes */
    size_t n;
} shared_key;

static qv_status make_key(shared_key *k, qv_cache *c, int kind, const char *name, const void *key, size_t klen,
                          const char *fn) {
    if (!c || !name || (!key && klen)) return qv__error(QV_EINVAL, "%s: NULL argument", fn);
    if (c->tier)
        return qv__error(QV_EINVAL,
                         "%s: shared counters and dicts live in an LMDB or memory cache, not on a remote tier or stack "
                         "(open its local cache by path)",
                         fn);
    size_t nlen = strlen(name);
    if (nlen == 0 || nlen > 255) return qv__error(QV_EINVAL, "%s: a name has 1 to 255 bytes, not %zu", fn, nlen);
    if (klen > QV_SHARED_KEY_MAX - nlen) /* nlen + klen could wrap */
        return qv__error(QV_EINVAL, "%s: name and key together have %zu bytes, more than %d", fn, nlen + klen,
                         QV_SHARED_KEY_MAX);
    k->b[0] = (uint8_t)kind;
    k->b[1] = (uint8_t)nlen;
    memcpy(k->b + 2, name, nlen);
    if (klen) memcpy(k->b + 2 + nlen, key, klen);
    k->n = 2 + nlen + klen;
    return QV_OK;
}

static qv_status writable(qv_cache *c, const char *fn) {
    if (c->flags & QV_CACHE_READONLY)
        return qv__error(QV_EREADONLY, "%s: the cache at %s was opened read-only", fn, c->path);
    return QV_OK;
}

/* A counter's value is one canonical CBOR integer that fits int64_t. */
static qv_status decode_count(const uint8_t *p, size_t len, int64_t *out) {
    if (len == 0) return qv__error(QV_ECORRUPT, "a shared counter's entry is empty");
    uint8_t major = p[0] >> 5, info = p[0] & 31;
    uint64_t v;
    size_t need;
    if (major > 1 || info > 27) return qv__error(QV_ECORRUPT, "a shared counter's entry is not an integer");
    if (info < 24) {
        v = info;
        need = 1;
    } else {
        need = 1 + ((size_t)1 << (info - 24));
        if (len < need) return qv__error(QV_ECORRUPT, "a shared counter's entry is truncated");
        v = 0;
        for (size_t i = 1; i < need; i++) v = v << 8 | p[i];
    }
    if (len != need || v > INT64_MAX) return qv__error(QV_ECORRUPT, "a shared counter's entry is not an int64");
    *out = major ? -1 - (int64_t)v : (int64_t)v;
    return QV_OK;
}

static size_t encode_count(uint8_t out[9], int64_t v) {
    if (v >= 0) return qv__encode_uint(out, (uint64_t)v);
    size_t n = qv__encode_uint(out, (uint64_t)(-1 - v));
    out[0] |= 0x20; /* major type 1: -1 - n */
    return n;
}

/* Run one change in a write transaction, growing the map when it is full. */
typedef qv_status (*change_fn)(qv_store *s, qv_txn *txn, const shared_key *k, void *arg);

static qv_status write_change(qv_cache *c, const shared_key *k, change_fn change, void *arg) {
    qv_store *s;
    qv_status st = shared_store(&s, c);
    if (st) return st;
    for (;;) {
        qv_txn *txn;
        if ((st = s->ops->write_begin(s, &txn))) return st;
        if ((st = change(s, txn, k, arg))) {
            s->ops->abort(s, txn);
            if (st == QV_EFULL && !s->ops->grow(s)) continue;
            return st;
        }
        st = s->ops->commit(s, txn);
        if (st == QV_EFULL && !s->ops->grow(s)) continue;
        return st;
    }
}

typedef struct {
    int64_t delta, value;
} add_arg;

static qv_status add_change(qv_store *s, qv_txn *txn, const shared_key *k, void *arg) {
    add_arg *a = arg;
    const void *v;
    size_t vlen;
    int64_t now = 0;
    qv_status st = s->ops->get(s, txn, T_ENTRIES, k->b, k->n, &v, &vlen);
    if (st == QV_OK) st = decode_count(v, vlen, &now);
    else if (st == QV_NOTFOUND) st = QV_OK;
    if (st) return st;
    if (__builtin_add_overflow(now, a->delta, &a->value))
        return qv__error(QV_ERANGE, "qv_counter_add: %lld + %lld does not fit an int64", (long long)now,
                         (long long)a->delta);
    uint8_t buf[9];
    return s->ops->put(s, txn, T_ENTRIES, k->b, k->n, buf, encode_count(buf, a->value));
}

qv_status qv_counter_add(int64_t *out, qv_cache *cache, const char *name, const void *key, size_t key_len,
                         int64_t delta) {
    shared_key k;
    qv_status st = make_key(&k, cache, KIND_COUNTER, name, key, key_len, "qv_counter_add");
    if (!st) st = writable(cache, "qv_counter_add");
    if (st) return st;
    add_arg a = {delta, 0};
    if ((st = write_change(cache, &k, add_change, &a))) return st;
    if (out) *out = a.value;
    return QV_OK;
}

/* Copy an entry out of a read transaction: nothing of the caller runs in it. */
static qv_status read_entry(qv_cache *c, const shared_key *k, uint8_t **data, size_t *len) {
    qv_store *s;
    qv_txn *txn;
    qv_status st = shared_store(&s, c);
    if (!st) st = s->ops->read_begin(s, &txn);
    if (st) return st;
    const void *v;
    size_t vlen;
    st = s->ops->get(s, txn, T_ENTRIES, k->b, k->n, &v, &vlen);
    if (!st) {
        *data = malloc(vlen ? vlen : 1);
        if (!*data) st = qv__nomem();
        else {
            memcpy(*data, v, vlen);
            *len = vlen;
        }
    }
    s->ops->read_end(s, txn);
    return st;
}

qv_status qv_counter_get(int64_t *out, qv_cache *cache, const char *name, const void *key, size_t key_len) {
    if (!out) return qv__error(QV_EINVAL, "qv_counter_get: out is NULL");
    *out = 0;
    shared_key k;
    qv_status st = make_key(&k, cache, KIND_COUNTER, name, key, key_len, "qv_counter_get");
    if (st) return st;
    uint8_t *data;
    size_t len;
    st = read_entry(cache, &k, &data, &len);
    if (st == QV_NOTFOUND) return QV_OK; /* a counter never bumped is 0 */
    if (st) return st;
    st = decode_count(data, len, out);
    free(data);
    return st;
}

typedef struct {
    const void *data;
    size_t len;
} bytes_arg;

static qv_status set_change(qv_store *s, qv_txn *txn, const shared_key *k, void *arg) {
    bytes_arg *b = arg;
    return s->ops->put(s, txn, T_ENTRIES, k->b, k->n, b->data, b->len);
}

qv_status qv_dict_set(qv_cache *cache, const char *name, const void *key, size_t key_len, const void *value,
                      size_t value_len) {
    shared_key k;
    qv_status st = make_key(&k, cache, KIND_DICT, name, key, key_len, "qv_dict_set");
    if (!st) st = writable(cache, "qv_dict_set");
    if (!st && !value) st = qv__error(QV_EINVAL, "qv_dict_set: value is NULL");
    if (!st) st = qv_validate(value, value_len);
    if (st) return st;
    bytes_arg b = {value, value_len};
    return write_change(cache, &k, set_change, &b);
}

qv_status qv_dict_get(void **data, size_t *len, qv_cache *cache, const char *name, const void *key, size_t key_len) {
    if (!data || !len) return qv__error(QV_EINVAL, "qv_dict_get: NULL argument");
    *data = NULL;
    *len = 0;
    shared_key k;
    qv_status st = make_key(&k, cache, KIND_DICT, name, key, key_len, "qv_dict_get");
    if (st) return st;
    uint8_t *copy;
    size_t n;
    if ((st = read_entry(cache, &k, &copy, &n))) return st;
    /* the table is nobody's to sign: what another writer left must at least parse */
    if ((st = qv_validate(copy, n))) {
        free(copy);
        return qv__error(QV_ECORRUPT, "qv_dict_get: the entry under %s is not one canonical item", name);
    }
    *data = copy;
    *len = n;
    return QV_OK;
}

static qv_status del_change(qv_store *s, qv_txn *txn, const shared_key *k, void *arg) {
    int *found = arg;
    qv_status st = s->ops->del(s, txn, T_ENTRIES, k->b, k->n);
    if (st == QV_NOTFOUND) return QV_OK; /* committed anyway: nothing changed */
    if (!st) *found = 1;
    return st;
}

qv_status qv_dict_del(qv_cache *cache, const char *name, const void *key, size_t key_len) {
    shared_key k;
    qv_status st = make_key(&k, cache, KIND_DICT, name, key, key_len, "qv_dict_del");
    if (!st) st = writable(cache, "qv_dict_del");
    if (st) return st;
    int found = 0;
    if ((st = write_change(cache, &k, del_change, &found))) return st;
    return found ? QV_OK : QV_NOTFOUND;
}

/* --------------------------------------------------------------- clearing */

typedef struct {
    const shared_key *prefix;
    uint8_t **held;
    size_t *lens, n, cap;
    int failed;
} prefix_scan;

static int collect_prefixed(const void *key, size_t klen, const void *val, size_t vlen, void *userdata) {
    (void)val;
    (void)vlen;
    prefix_scan *p = userdata;
    if (klen < p->prefix->n || memcmp(key, p->prefix->b, p->prefix->n) != 0) return 1;
    if (p->n == p->cap) {
        size_t cap = p->cap ? 2 * p->cap : 64;
        uint8_t **h = realloc(p->held, cap * sizeof *h);
        if (h) p->held = h;
        size_t *l = h ? realloc(p->lens, cap * sizeof *l) : NULL;
        if (l) p->lens = l;
        if (!h || !l) return p->failed = 1;
        p->cap = cap;
    }
    if (!(p->held[p->n] = malloc(klen))) return p->failed = 1;
    memcpy(p->held[p->n], key, klen);
    p->lens[p->n++] = klen;
    return 0;
}

/* A scan cannot delete under its own cursor: gather the keys, then delete. */
static qv_status clear_change(qv_store *s, qv_txn *txn, const shared_key *k, void *arg) {
    uint64_t *removed = arg;
    prefix_scan p = {.prefix = k};
    qv_status st = s->ops->scan(s, txn, T_ENTRIES, k->b, k->n, collect_prefixed, &p);
    if (!st && p.failed) st = qv__nomem();
    for (size_t i = 0; i < p.n; i++) {
        if (!st && (st = s->ops->del(s, txn, T_ENTRIES, p.held[i], p.lens[i])) == QV_NOTFOUND) st = QV_OK;
        free(p.held[i]);
    }
    free(p.held);
    free(p.lens);
    if (!st) *removed = p.n;
    return st;
}

static qv_status clear_kind(uint64_t *removed, qv_cache *cache, int kind, const char *name, const char *fn) {
    shared_key k;
    qv_status st = make_key(&k, cache, kind, name, NULL, 0, fn);
    if (!st) st = writable(cache, fn);
    if (st) return st;
    uint64_t n = 0;
    if ((st = write_change(cache, &k, clear_change, &n))) return st;
    if (removed) *removed = n;
    return QV_OK;
}

qv_status qv_counter_clear(uint64_t *removed, qv_cache *cache, const char *name) {
    return clear_kind(removed, cache, KIND_COUNTER, name, "qv_counter_clear");
}

qv_status qv_dict_clear(uint64_t *removed, qv_cache *cache, const char *name) {
    return clear_kind(removed, cache, KIND_DICT, name, "qv_dict_clear");
}

/* ---------------------------------------------------------------- listing */

typedef struct {
    const shared_key *prefix;
    int counter;
    qv_value *list;
    qv_status st;
} items_scan;

static qv_status pair_of(qv_value **out, const items_scan *p, const uint8_t *key, size_t klen, const uint8_t *val,
                         size_t vlen) {
    qv_value *k = NULL, *v = NULL;
    int64_t n;
    qv_status st = qv_value_new_list(out);
    if (!st) st = qv_value_new_bytes(&k, key + p->prefix->n, klen - p->prefix->n);
    if (!st) st = qv_value_list_append(*out, k);
    if (!st && p->counter) st = decode_count(val, vlen, &n);
    if (!st) st = p->counter ? qv_value_new_int(&v, n) : qv_value_new_bytes(&v, val, vlen);
    if (!st) st = qv_value_list_append(*out, v);
    if (st) {
        qv_value_free(*out);
        *out = NULL;
    }
    return st;
}

static int collect_item(const void *key, size_t klen, const void *val, size_t vlen, void *userdata) {
    items_scan *p = userdata;
    if (klen < p->prefix->n || memcmp(key, p->prefix->b, p->prefix->n) != 0) return 1;
    qv_value *pair;
    if ((p->st = pair_of(&pair, p, key, klen, val, vlen)) || (p->st = qv_value_list_append(p->list, pair))) return 1;
    return 0;
}

static qv_status list_kind(qv_value **out, qv_cache *cache, int kind, const char *name, const char *fn) {
    if (!out) return qv__error(QV_EINVAL, "%s: out is NULL", fn);
    *out = NULL;
    shared_key k;
    qv_status st = make_key(&k, cache, kind, name, NULL, 0, fn);
    items_scan p = {&k, kind == KIND_COUNTER, NULL, QV_OK};
    if (!st) st = qv_value_new_list(&p.list);
    if (st) return st;
    qv_store *s;
    qv_txn *txn;
    st = shared_store(&s, cache);
    if (st == QV_NOTFOUND) { /* a read-only cache without shared entries */
        *out = p.list;
        return QV_OK;
    }
    if (!st && !(st = s->ops->read_begin(s, &txn))) {
        st = s->ops->scan(s, txn, T_ENTRIES, k.b, k.n, collect_item, &p);
        s->ops->read_end(s, txn);
    }
    if (!st) st = p.st;
    if (st) {
        qv_value_free(p.list);
        return st;
    }
    *out = p.list;
    return QV_OK;
}

qv_status qv_counter_items(qv_value **out, qv_cache *cache, const char *name) {
    return list_kind(out, cache, KIND_COUNTER, name, "qv_counter_items");
}

qv_status qv_dict_items(qv_value **out, qv_cache *cache, const char *name) {
    return list_kind(out, cache, KIND_DICT, name, "qv_dict_items");
}
