/* A store that signs the "calls" and "values" tables of another (sign.h):
 * a put there stores payload || tag, a get checks the tag and hands back the
 * payload alone, so the cache above sees the bytes of an unsigned store.
 * The other tables (meta, refs, names, atime, lru) pass through: they hold
 * bookkeeping that a hit never returns. Only signed caches have this layer;
 * an unsigned cache calls its store directly and pays nothing. */
#include <stdlib.h>
#include <string.h>

#include "sign.h"

typedef struct {
    qv_store base;
    qv_store *inner;
    const qv_signer *signer;
    const char *signed_table[QV_STORE_MAX_TABLES]; /* the name of a signed table, else NULL */
} signed_store;

#define SS(s) ((signed_store *)(s))
#define INNER(s) (SS(s)->inner)

static qv_status ss_read_begin(qv_store *s, qv_txn **txn) {
    return INNER(s)->ops->read_begin(INNER(s), txn);
}

static void ss_read_end(qv_store *s, qv_txn *txn) {
    INNER(s)->ops->read_end(INNER(s), txn);
}

static qv_status ss_write_begin(qv_store *s, qv_txn **txn) {
    return INNER(s)->ops->write_begin(INNER(s), txn);
}

static qv_status ss_commit(qv_store *s, qv_txn *txn) {
    return INNER(s)->ops->commit(INNER(s), txn);
}

static void ss_abort(qv_store *s, qv_txn *txn) {
    INNER(s)->ops->abort(INNER(s), txn);
}

static qv_status ss_get(qv_store *s, qv_txn *txn, int table, const void *key, size_t klen, const void **val,
                        size_t *vlen) {
    qv_status st = INNER(s)->ops->get(INNER(s), txn, table, key, klen, val, vlen);
    const char *name = SS(s)->signed_table[table];
    if (st || !name) return st;
    return qv__sign_check(SS(s)->signer, name, key, klen, *val, *vlen, vlen);
}

/* put or put_new of the inner store, the value signed when its table is. */
static qv_status ss_write(qv_store *s, qv_txn *txn, int table, const void *key, size_t klen, const void *val,
                          size_t vlen, int only_new) {
    qv_store *in = INNER(s);
    qv_status (*write)(qv_store *, qv_txn *, int, const void *, size_t, const void *, size_t) =
        only_new ? in->ops->put_new : in->ops->put;
    const char *name = SS(s)->signed_table[table];
    if (!name) return write(in, txn, table, key, klen, val, vlen);
    uint8_t small[1024], *buf = small;
    if (vlen + QV_SIGN_TAG_LEN > sizeof small && !(buf = malloc(vlen + QV_SIGN_TAG_LEN))) return qv__nomem();
    if (vlen) memcpy(buf, val, vlen);
    qv_status st = qv__sign(SS(s)->signer, name, key, klen, val, vlen, buf + vlen);
    if (!st) st = write(in, txn, table, key, klen, buf, vlen + QV_SIGN_TAG_LEN);
    if (buf != small) free(buf);
    return st;
}

static qv_status ss_put(qv_store *s, qv_txn *txn, int table, const void *key, size_t klen, const void *val,
                        size_t vlen) {
    return ss_write(s, txn, table, key, klen, val, vlen, 0);
}

static qv_status ss_put_new(qv_store *s, qv_txn *txn, int table, const void *key, size_t klen, const void *val,
                            size_t vlen) {
    return ss_write(s, txn, table, key, klen, val, vlen, 1);
}

static qv_status ss_del(qv_store *s, qv_txn *txn, int table, const void *key, size_t klen) {
    return INNER(s)->ops->del(INNER(s), txn, table, key, klen);
}

typedef struct {
    const qv_signer *signer;
    const char *table;
    qv_scan_cb cb;
    void *userdata;
} scan_ctx;

/* A scan visits every key, so that maintenance can find and remove entries
 * whose tag fails; their value reads as empty, which no validation accepts. */
static int checked_visit(const void *key, size_t klen, const void *val, size_t vlen, void *userdata) {
    scan_ctx *c = userdata;
    size_t plen;
    if (qv__sign_check(c->signer, c->table, key, klen, val, vlen, &plen)) return c->cb(key, klen, "", 0, c->userdata);
    return c->cb(key, klen, val, plen, c->userdata);
}

static qv_status ss_scan(qv_store *s, qv_txn *txn, int table, const void *from, size_t flen, qv_scan_cb cb,
                         void *userdata) {
    const char *name = SS(s)->signed_table[table];
    if (!name) return INNER(s)->ops->scan(INNER(s), txn, table, from, flen, cb, userdata);
    scan_ctx c = {SS(s)->signer, name, cb, userdata};
    return INNER(s)->ops->scan(INNER(s), txn, table, from, flen, checked_visit, &c);
}

static qv_status ss_count(qv_store *s, qv_txn *txn, int table, uint64_t *n) {
    return INNER(s)->ops->count(INNER(s), txn, table, n);
}

static qv_status ss_grow(qv_store *s) {
    return INNER(s)->ops->grow(INNER(s));
}

static qv_status ss_sync(qv_store *s) {
    return INNER(s)->ops->sync(INNER(s));
}

static uint64_t ss_map_size(qv_store *s) {
    return INNER(s)->ops->map_size(INNER(s));
}

static void ss_close(qv_store *s) {
    INNER(s)->ops->close(INNER(s));
    free(s);
}

static const qv_store_ops signed_ops = {
    ss_read_begin, ss_read_end, ss_write_begin, ss_commit, ss_abort,    ss_get,  ss_put, ss_put_new,
    ss_del,        ss_scan,     ss_count,       ss_grow,   ss_sync,     ss_map_size, ss_close,
};

qv_status qv__store_signed_open(qv_store **out, qv_store *inner, const qv_signer *signer, const qv_store_config *cfg) {
    *out = NULL;
    signed_store *ss = calloc(1, sizeof *ss);
    if (!ss) {
        inner->ops->close(inner);
        return qv__nomem();
    }
    ss->base.ops = &signed_ops;
    ss->inner = inner;
    ss->signer = signer;
    for (int i = 0; i < cfg->ntables && i < QV_STORE_MAX_TABLES; i++)
        if (!strcmp(cfg->tables[i], "calls") || !strcmp(cfg->tables[i], "values")) ss->signed_table[i] = cfg->tables[i];
    *out = &ss->base;
    return QV_OK;
}
