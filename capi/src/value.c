/* The value tree, for C, Rust and Go callers who want one. Bindings drive the
 * streaming encoder and decoder directly instead. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct qv_value {
    qv_type type;
    union {
        int b;
        struct {
            uint64_t n;
            int negative;
        } i;
        double f;
        struct {
            uint8_t *data; /* text is NUL-terminated */
            size_t len;
            int negative;  /* bigint */
        } s;
        struct {
            qv_value **items; /* maps interleave keys and values */
            size_t len, cap;
        } c;
        struct {
            uint64_t tag;
            qv_value *content;
        } t;
    } u;
};

static qv_status alloc(qv_value **out, qv_type type) {
    if (!out) return qv__error(QV_EINVAL, "out is NULL");
    *out = calloc(1, sizeof(qv_value));
    if (!*out) return qv__nomem();
    (*out)->type = type;
    return QV_OK;
}

qv_status qv_value_new_null(qv_value **out) {
    return alloc(out, QV_TYPE_NULL);
}

qv_status qv_value_new_bool(qv_value **out, int b) {
    qv_status st = alloc(out, QV_TYPE_BOOL);
    if (!st) (*out)->u.b = b != 0;
    return st;
}

static qv_status new_cbor_int(qv_value **out, int negative, uint64_t n) {
    qv_status st = alloc(out, QV_TYPE_INT);
    if (!st) {
        (*out)->u.i.n = n;
        (*out)->u.i.negative = negative;
    }
    return st;
}

qv_status qv_value_new_int(qv_value **out, int64_t i) {
    return i >= 0 ? new_cbor_int(out, 0, (uint64_t)i) : new_cbor_int(out, 1, (uint64_t)(-(i + 1)));
}

qv_status qv_value_new_uint(qv_value **out, uint64_t u) {
    return new_cbor_int(out, 0, u);
}

qv_status qv_value_new_negint(qv_value **out, uint64_t n) {
    return new_cbor_int(out, 1, n);
}

static qv_status new_string(qv_value **out, qv_type type, const void *data, size_t len) {
    if (!data && len) {
        if (out) *out = NULL;
        return qv__error(QV_EINVAL, "NULL data with length %zu", len);
    }
    qv_status st = alloc(out, type);
    if (st) return st;
    qv_value *v = *out;
    if (!(v->u.s.data = malloc(len + 1))) {
        free(v);
        *out = NULL;
        return qv__nomem();
    }
    if (len) memcpy(v->u.s.data, data, len);
    v->u.s.data[len] = 0;
    v->u.s.len = len;
    return QV_OK;
}

qv_status qv_value_new_bigint(qv_value **out, int negative, const void *magnitude, size_t len) {
    const uint8_t *m = magnitude;
    if (!m && len) {
        if (out) *out = NULL;
        return qv__error(QV_EINVAL, "NULL magnitude with length %zu", len);
    }
    while (len && *m == 0) {
        m++;
        len--;
    }
    if (len <= 8) {
        uint64_t n = 0;
        for (size_t i = 0; i < len; i++) n = (n << 8) | m[i];
        return new_cbor_int(out, negative != 0, n);
    }
    qv_status st = new_string(out, QV_TYPE_BIGINT, m, len);
    if (!st) (*out)->u.s.negative = negative != 0;
    return st;
}

qv_status qv_value_new_float(qv_value **out, double d) {
    qv_status st = alloc(out, QV_TYPE_FLOAT);
    if (!st) (*out)->u.f = d;
    return st;
}

qv_status qv_value_new_text(qv_value **out, const char *s, size_t len) {
    if (s && !qv_utf8_valid((const uint8_t *)s, len)) {
        if (out) *out = NULL;
        return qv__error(QV_EENCODE, "text is not valid UTF-8");
    }
    return new_string(out, QV_TYPE_TEXT, s, len);
}

qv_status qv_value_new_bytes(qv_value **out, const void *data, size_t len) {
    return new_string(out, QV_TYPE_BYTES, data, len);
}

qv_status qv_value_new_list(qv_value **out) {
    return alloc(out, QV_TYPE_LIST);
}

qv_status qv_value_new_map(qv_value **out) {
    return alloc(out, QV_TYPE_MAP);
}

qv_status qv_value_new_tag(qv_value **out, uint64_t tag, qv_value *content) {
    if (!content) {
        if (out) *out = NULL;
        return qv__error(QV_EINVAL, "tag content is NULL");
    }
    if (tag == QV_TAG_BIGNUM_POS || tag == QV_TAG_BIGNUM_NEG) {
        /* Keep one representation per number: a bignum is QV_TYPE_BIGINT. */
        qv_status st = content->type == QV_TYPE_BYTES
                           ? qv_value_new_bigint(out, tag == QV_TAG_BIGNUM_NEG, content->u.s.data, content->u.s.len)
                           : qv__error(QV_EINVAL, "bignum tag content must be bytes");
        if (st && out) *out = NULL;
        qv_value_free(content);
        return st;
    }
    qv_status st = alloc(out, QV_TYPE_TAG);
    if (st) {
        qv_value_free(content);
        return st;
    }
    (*out)->u.t.tag = tag;
    (*out)->u.t.content = content;
    return QV_OK;
}

void qv_value_free(qv_value *v) {
    if (!v) return;
    switch (v->type) {
    case QV_TYPE_TEXT:
    case QV_TYPE_BYTES:
    case QV_TYPE_BIGINT:
        free(v->u.s.data);
        break;
    case QV_TYPE_LIST:
    case QV_TYPE_MAP:
        for (size_t i = 0; i < v->u.c.len; i++) qv_value_free(v->u.c.items[i]);
        free(v->u.c.items);
        break;
    case QV_TYPE_TAG:
        qv_value_free(v->u.t.content);
        break;
    default:
        break;
    }
    free(v);
}

static qv_status push_child(qv_value *c, qv_value *item) {
    if (c->u.c.len == c->u.c.cap) {
        size_t cap = c->u.c.cap ? c->u.c.cap * 2 : 4;
        qv_value **items = realloc(c->u.c.items, cap * sizeof *items);
        if (!items) return qv__nomem();
        c->u.c.items = items;
        c->u.c.cap = cap;
    }
    c->u.c.items[c->u.c.len++] = item;
    return QV_OK;
}

qv_status qv_value_list_append(qv_value *list, qv_value *item) {
    qv_status st;
    if (!list || list->type != QV_TYPE_LIST) st = qv__error(QV_ETYPE, "qv_value_list_append: not a list");
    else if (!item) st = qv__error(QV_EINVAL, "qv_value_list_append: item is NULL");
    else if (!(st = push_child(list, item))) return QV_OK;
    qv_value_free(item);
    return st;
}

/* Whether two keys encode alike. Text and byte strings, nearly every key,
 * are compared in place: qv_value_compare encodes both, and a record's nine
 * fields cost 36 comparisons on every qv_cache_load. */
static int same_key(const qv_value *a, const qv_value *b) {
    if ((a->type == QV_TYPE_TEXT || a->type == QV_TYPE_BYTES) && (b->type == QV_TYPE_TEXT || b->type == QV_TYPE_BYTES))
        return a->type == b->type && a->u.s.len == b->u.s.len && memcmp(a->u.s.data, b->u.s.data, a->u.s.len) == 0;
    return qv_value_compare(a, b) == 0;
}

qv_status qv_value_map_set(qv_value *map, qv_value *key, qv_value *value) {
    qv_status st = QV_OK;
    if (!map || map->type != QV_TYPE_MAP) st = qv__error(QV_ETYPE, "qv_value_map_set: not a map");
    else if (!key || !value) st = qv__error(QV_EINVAL, "qv_value_map_set: key or value is NULL");
    for (size_t i = 0; !st && i < map->u.c.len; i += 2)
        if (same_key(map->u.c.items[i], key)) st = qv__error(QV_EINVAL, "qv_value_map_set: duplicate key");
    if (!st && !(st = push_child(map, key))) {
        if (!(st = push_child(map, value))) return QV_OK;
        map->u.c.len--; /* the key goes with the value */
    }
    qv_value_free(key);
    qv_value_free(value);
    return st;
}

qv_status qv_value_clone(qv_value **out, const qv_value *v) {
    if (!v) {
        if (out) *out = NULL;
        return qv__error(QV_EINVAL, "qv_value_clone: value is NULL");
    }
    switch (v->type) {
    case QV_TYPE_TEXT:
    case QV_TYPE_BYTES:
    case QV_TYPE_BIGINT: {
        qv_status st = new_string(out, v->type, v->u.s.data, v->u.s.len);
        if (!st) (*out)->u.s.negative = v->u.s.negative;
        return st;
    }
    case QV_TYPE_LIST:
    case QV_TYPE_MAP: {
        qv_status st = alloc(out, v->type);
        for (size_t i = 0; !st && i < v->u.c.len; i++) {
            qv_value *child;
            if (!(st = qv_value_clone(&child, v->u.c.items[i])) && (st = push_child(*out, child))) qv_value_free(child);
        }
        if (st && *out) {
            qv_value_free(*out);
            *out = NULL;
        }
        return st;
    }
    case QV_TYPE_TAG: {
        qv_value *content;
        qv_status st = qv_value_clone(&content, v->u.t.content);
        if (st) {
            *out = NULL;
            return st;
        }
        return qv_value_new_tag(out, v->u.t.tag, content);
    }
    default: {
        qv_status st = alloc(out, v->type);
        if (!st) (*out)->u = v->u;
        return st;
    }
    }
}

qv_type qv_value_type(const qv_value *v) {
    return v ? v->type : QV_TYPE_NULL;
}

static qv_status want(const qv_value *v, qv_type type, const char *what) {
    if (!v) return qv__error(QV_EINVAL, "value is NULL");
    if (v->type != type) return qv__error(QV_ETYPE, "value is not %s", what);
    return QV_OK;
}

qv_status qv_value_get_bool(const qv_value *v, int *out) {
    qv_status st = want(v, QV_TYPE_BOOL, "a bool");
    if (!st) *out = v->u.b;
    return st;
}

qv_status qv_value_get_int(const qv_value *v, int64_t *out) {
    qv_status st = want(v, QV_TYPE_INT, "an integer");
    if (st) return st;
    if (v->u.i.n > (uint64_t)INT64_MAX) return qv__error(QV_ERANGE, "integer does not fit in int64_t");
    *out = v->u.i.negative ? -(int64_t)v->u.i.n - 1 : (int64_t)v->u.i.n;
    return QV_OK;
}

qv_status qv_value_get_uint(const qv_value *v, uint64_t *out) {
    qv_status st = want(v, QV_TYPE_INT, "an integer");
    if (st) return st;
    if (v->u.i.negative) return qv__error(QV_ERANGE, "integer is negative");
    *out = v->u.i.n;
    return QV_OK;
}

qv_status qv_value_get_cbor_int(const qv_value *v, int *negative, uint64_t *n) {
    qv_status st = want(v, QV_TYPE_INT, "an integer");
    if (st) return st;
    *negative = v->u.i.negative;
    *n = v->u.i.n;
    return QV_OK;
}

qv_status qv_value_get_bigint(const qv_value *v, int *negative, const uint8_t **magnitude, size_t *len) {
    qv_status st = want(v, QV_TYPE_BIGINT, "a bignum");
    if (st) return st;
    *negative = v->u.s.negative;
    *magnitude = v->u.s.data;
    *len = v->u.s.len;
    return QV_OK;
}

qv_status qv_value_get_float(const qv_value *v, double *out) {
    qv_status st = want(v, QV_TYPE_FLOAT, "a float");
    if (!st) *out = v->u.f;
    return st;
}

qv_status qv_value_get_text(const qv_value *v, const char **s, size_t *len) {
    qv_status st = want(v, QV_TYPE_TEXT, "text");
    if (st) return st;
    *s = (const char *)v->u.s.data;
    if (len) *len = v->u.s.len;
    return QV_OK;
}

qv_status qv_value_get_bytes(const qv_value *v, const uint8_t **data, size_t *len) {
    qv_status st = want(v, QV_TYPE_BYTES, "bytes");
    if (st) return st;
    *data = v->u.s.data;
    *len = v->u.s.len;
    return QV_OK;
}

size_t qv_value_count(const qv_value *v) {
    if (!v) return 0;
    if (v->type == QV_TYPE_LIST) return v->u.c.len;
    if (v->type == QV_TYPE_MAP) return v->u.c.len / 2;
    return 0;
}

const qv_value *qv_value_list_get(const qv_value *list, size_t i) {
    if (!list || list->type != QV_TYPE_LIST || i >= list->u.c.len) return NULL;
    return list->u.c.items[i];
}

const qv_value *qv_value_map_key(const qv_value *map, size_t i) {
    if (!map || map->type != QV_TYPE_MAP || i >= map->u.c.len / 2) return NULL;
    return map->u.c.items[2 * i];
}

const qv_value *qv_value_map_value(const qv_value *map, size_t i) {
    if (!map || map->type != QV_TYPE_MAP || i >= map->u.c.len / 2) return NULL;
    return map->u.c.items[2 * i + 1];
}

const qv_value *qv_value_map_find(const qv_value *map, const char *key) {
    if (!map || map->type != QV_TYPE_MAP || !key) return NULL;
    size_t klen = strlen(key);
    for (size_t i = 0; i < map->u.c.len; i += 2) {
        const qv_value *k = map->u.c.items[i];
        if (k->type == QV_TYPE_TEXT && k->u.s.len == klen && memcmp(k->u.s.data, key, klen) == 0)
            return map->u.c.items[i + 1];
    }
    return NULL;
}

qv_status qv_value_get_tag(const qv_value *v, uint64_t *tag, const qv_value **content) {
    qv_status st = want(v, QV_TYPE_TAG, "a tag");
    if (st) return st;
    *tag = v->u.t.tag;
    if (content) *content = v->u.t.content;
    return QV_OK;
}

qv_status qv_encoder_value(qv_encoder *enc, const qv_value *v) {
    if (!v) return qv__error(QV_EINVAL, "qv_encoder_value: value is NULL");
    qv_status st;
    switch (v->type) {
    case QV_TYPE_NULL:
        return qv_encoder_null(enc);
    case QV_TYPE_BOOL:
        return qv_encoder_bool(enc, v->u.b);
    case QV_TYPE_INT:
        return v->u.i.negative ? qv_encoder_negint(enc, v->u.i.n) : qv_encoder_uint(enc, v->u.i.n);
    case QV_TYPE_BIGINT:
        return qv_encoder_bigint(enc, v->u.s.negative, v->u.s.data, v->u.s.len);
    case QV_TYPE_FLOAT:
        return qv_encoder_float(enc, v->u.f);
    case QV_TYPE_TEXT:
        return qv_encoder_text_trusted(enc, (const char *)v->u.s.data, v->u.s.len);
    case QV_TYPE_BYTES:
        return qv_encoder_bytes(enc, v->u.s.data, v->u.s.len);
    case QV_TYPE_LIST:
        if ((st = qv_encoder_list(enc, v->u.c.len))) return st;
        for (size_t i = 0; i < v->u.c.len; i++)
            if ((st = qv_encoder_value(enc, v->u.c.items[i]))) return st;
        return QV_OK;
    case QV_TYPE_MAP:
        if ((st = qv_encoder_map_begin(enc))) return st;
        for (size_t i = 0; i < v->u.c.len; i++)
            if ((st = qv_encoder_value(enc, v->u.c.items[i]))) return st;
        return qv_encoder_map_end(enc);
    case QV_TYPE_TAG:
        /* A set built by hand holds its elements in the order they were
         * appended; its encoding is canonical only sorted and without
         * duplicates, as every binding's sets are written. */
        if (v->u.t.tag == QV_TAG_SET && v->u.t.content->type == QV_TYPE_LIST) {
            const qv_value *items = v->u.t.content;
            if ((st = qv_encoder_set_begin(enc))) return st;
            for (size_t i = 0; i < items->u.c.len; i++)
                if ((st = qv_encoder_value(enc, items->u.c.items[i]))) return st;
            return qv_encoder_set_end(enc);
        }
        if ((st = qv_encoder_tag(enc, v->u.t.tag))) return st;
        return qv_encoder_value(enc, v->u.t.content);
    default:
        return qv__error(QV_EINVAL, "value has an unknown type %d", v->type);
    }
}

qv_status qv_value_encode(const qv_value *v, void **data, size_t *len) {
    if (!data || !len) return qv__error(QV_EINVAL, "qv_value_encode: NULL output");
    *data = NULL;
    *len = 0;
    qv_encoder *enc;
    qv_status st = qv_encoder_new(&enc);
    if (st) return st;
    const void *p;
    size_t n;
    if (!(st = qv_encoder_value(enc, v)) && !(st = qv_encoder_finish(enc, &p, &n))) {
        if ((*data = malloc(n ? n : 1))) {
            memcpy(*data, p, n);
            *len = n;
        } else {
            st = qv__nomem();
        }
    }
    qv_encoder_free(enc);
    return st;
}

int qv_value_compare(const qv_value *a, const qv_value *b) {
    void *ea = NULL, *eb = NULL;
    size_t la = 0, lb = 0;
    qv_value_encode(a, &ea, &la);
    qv_value_encode(b, &eb, &lb);
    int c = memcmp(ea ? ea : "", eb ? eb : "", la < lb ? la : lb);
    if (!c) c = (la > lb) - (la < lb);
    qv_free(ea);
    qv_free(eb);
    return c;
}

static qv_status build(qv_decoder *dec, qv_type type, qv_value **out) {
    qv_status st;
    switch (type) {
    case QV_TYPE_NULL:
        return qv_value_new_null(out);
    case QV_TYPE_BOOL: {
        int b;
        qv_decoder_get_bool(dec, &b);
        return qv_value_new_bool(out, b);
    }
    case QV_TYPE_INT: {
        int neg;
        uint64_t n;
        qv_decoder_get_cbor_int(dec, &neg, &n);
        return new_cbor_int(out, neg, n);
    }
    case QV_TYPE_FLOAT: {
        double d;
        qv_decoder_get_float(dec, &d);
        return qv_value_new_float(out, d);
    }
    case QV_TYPE_TEXT:
    case QV_TYPE_BYTES: {
        const uint8_t *p;
        size_t n;
        qv_decoder_get_data(dec, &p, &n);
        return new_string(out, type, p, n);
    }
    case QV_TYPE_BIGINT: {
        const uint8_t *p;
        size_t n;
        int neg;
        qv_decoder_get_bigint(dec, &neg, &p, &n);
        if ((st = new_string(out, QV_TYPE_BIGINT, p, n))) return st;
        (*out)->u.s.negative = neg;
        return QV_OK;
    }
    case QV_TYPE_LIST:
    case QV_TYPE_MAP: {
        uint64_t count;
        qv_decoder_get_count(dec, &count);
        if ((st = alloc(out, type))) return st;
        uint64_t items = type == QV_TYPE_MAP ? count * 2 : count;
        for (uint64_t i = 0; i < items; i++) {
            qv_type t;
            qv_value *child;
            if ((st = qv_decoder_next(dec, &t)) || (st = build(dec, t, &child))) break;
            if ((st = push_child(*out, child))) {
                qv_value_free(child);
                break;
            }
        }
        if (st) {
            if (st == QV_NOTFOUND) st = qv__error(QV_EDECODE, "not canonical CBOR: truncated");
            qv_value_free(*out);
            *out = NULL;
        }
        return st;
    }
    case QV_TYPE_TAG: {
        uint64_t tag;
        qv_type t;
        qv_value *content;
        qv_decoder_get_tag(dec, &tag);
        if ((st = qv_decoder_next(dec, &t)) || (st = build(dec, t, &content))) {
            *out = NULL;
            return st;
        }
        return qv_value_new_tag(out, tag, content);
    }
    default:
        return qv__error(QV_EDECODE, "unknown item type %d", type);
    }
}

qv_status qv_value_decode(qv_value **out, const void *data, size_t len) {
    if (!out) return qv__error(QV_EINVAL, "qv_value_decode: out is NULL");
    *out = NULL;
    if (!data && len) return qv__error(QV_EINVAL, "qv_value_decode: NULL data with length %zu", len);
    qv_decoder *dec;
    qv_status st = qv_decoder_new(&dec);
    if (st) return st;
    qv_decoder_reset(dec, data, len);
    qv_type t;
    qv_value *v = NULL;
    if (!(st = qv_decoder_next(dec, &t)) && !(st = build(dec, t, &v))) {
        /* anything after the item is refused here */
        st = qv_decoder_next(dec, &t);
        if (st == QV_NOTFOUND) st = QV_OK;
        else if (st == QV_OK) st = qv__error(QV_EDECODE, "not canonical CBOR: trailing bytes after the item");
    }
    qv_decoder_free(dec);
    if (st) {
        qv_value_free(v);
        return st;
    }
    *out = v;
    return QV_OK;
}
