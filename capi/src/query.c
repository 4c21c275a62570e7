/* Queries: the calls stored under a name, through the names index. */
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tier.h"

/* ------------------------------------------------------------------ query */

struct qv_iter {
    qv_digest *keys;
    size_t n, pos;
};

typedef struct {
    key_list keys;
    uint8_t prefix[8];
} name_scan;

static int collect_name(const void *key, size_t klen, const void *val, size_t vlen, void *userdata) {
    name_scan *ns = userdata;
    if (klen != 24 || memcmp(key, ns->prefix, 8) != 0) return 1;
    return qv__collect_key(key, klen, val, vlen, &ns->keys);
}

typedef struct {
    const uint8_t *name;
    size_t len;
    int match;
} name_check;

static qv_status name_check_visit(int key, const uint8_t *item, size_t len, void *userdata) {
    name_check *nc = userdata;
    if (key == R_NAME) nc->match = len == nc->len && memcmp(item, nc->name, len) == 0;
    return QV_OK;
}

qv_status qv__iter_new(qv_iter **out, qv_digest *keys, size_t n) {
    if (!(*out = calloc(1, sizeof **out))) {
        free(keys);
        return qv__nomem();
    }
    (*out)->keys = keys;
    (*out)->n = n;
    return QV_OK;
}

qv_status qv_cache_query(qv_iter **out, qv_cache *cache, const char *name) {
    if (!out) return qv__error(QV_EINVAL, "qv_cache_query: out is NULL");
    *out = NULL;
    if (!cache) return qv__error(QV_EINVAL, "qv_cache_query: cache is NULL");
    if (cache->tier) return cache->tier->query(out, cache, name);
    qv_iter *it = calloc(1, sizeof *it);
    if (!it) return qv__nomem();
    qv_store *s = cache->store;
    qv_txn *txn;
    qv_status st = s->ops->read_begin(s, &txn);
    if (st) {
        free(it);
        return st;
    }
    name_scan ns = {{NULL, 0, 0, 0, 0}, {0}};
    if (!name) {
        st = s->ops->scan(s, txn, T_CALLS, NULL, 0, qv__collect_all, &ns.keys);
    } else {
        /* the index is keyed by a hash of the name's encoding: confirm each */
        size_t nlen = strlen(name);
        uint8_t *enc = malloc(nlen + 9);
        size_t hl = 0;
        if (!enc) st = qv__nomem();
        else {
            qv_encoder *e = qv__thread_encoder_for(QV_ENCODER_RECORDS);
            const void *p;
            if (!e) st = qv__nomem();
            else {
                qv_encoder_reset(e);
                if (!(st = qv_encoder_text(e, name, nlen)) && !(st = qv_encoder_finish(e, &p, &hl))) memcpy(enc, p, hl);
            }
        }
        if (!st) {
            qv__put_be64(ns.prefix, qv__hash64(enc, hl));
            st = s->ops->scan(s, txn, T_NAMES, ns.prefix, 8, collect_name, &ns);
        }
        size_t kept = 0;
        for (size_t i = 0; !st && i < ns.keys.n; i++) {
            const void *v;
            size_t n;
            name_check nc = {enc, hl, 0};
            if (s->ops->get(s, txn, T_CALLS, ns.keys.keys[i].bytes, 16, &v, &n) == QV_OK &&
                qv__record_walk(v, n, name_check_visit, &nc) == QV_OK && nc.match)
                ns.keys.keys[kept++] = ns.keys.keys[i];
        }
        ns.keys.n = kept;
        free(enc);
    }
    s->ops->read_end(s, txn);
    if (!st && ns.keys.failed) st = qv__nomem();
    if (st) {
        free(ns.keys.keys);
        free(it);
        return st;
    }
    it->keys = ns.keys.keys;
    it->n = ns.keys.n;
    *out = it;
    return QV_OK;
}

qv_status qv_iter_next(qv_iter *iter, qv_digest *key) {
    if (!iter || !key) return qv__error(QV_EINVAL, "qv_iter_next: NULL argument");
    if (iter->pos >= iter->n) return QV_NOTFOUND;
    *key = iter->keys[iter->pos++];
    return QV_OK;
}

size_t qv_iter_count(const qv_iter *iter) {
    return iter ? iter->n : 0;
}

void qv_iter_free(qv_iter *iter) {
    if (!iter) return;
    free(iter->keys);
    free(iter);
}
