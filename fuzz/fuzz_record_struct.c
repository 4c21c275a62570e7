/* libFuzzer target, structure-aware: the fuzz input drives a byte consumer
 * that generates a call (name, version, args, kwargs), its result and its
 * store info; the library's own builder (qv__record_prepare) turns them into
 * a record and its values, which are then mutated field by field (entries
 * dropped, replaced by another type, duplicated, swapped, added under other
 * keys; the map head miscounted; values missing, changed or filed under
 * another digest) and sometimes byte by byte. So the readers meet records
 * that are valid down to their last field, where byte mutations rarely get.
 *
 * Each record goes through the readers as record_check.h runs them, and
 * through a memory cache: get, contains, load, verify with repair, evict and
 * gc, after which nothing of it may remain. An unmutated record must read
 * back as the call that made it. */
#include <math.h>

#include "input.h"
#include "record_check.h"

/* ------------------------------------------------------- byte consumer */

/* Up to max bytes of the input, as is. */
static const uint8_t *take_span(input *in, size_t max, size_t *len) {
    size_t n = take8(in);
    if (n > max) n = max;
    if (n > in->n) n = in->n;
    const uint8_t *p = in->p;
    in->p += n;
    in->n -= n;
    *len = n;
    return p;
}

/* ------------------------------------------------------------ values */

/* Valid UTF-8 text: ASCII, two-, three- and four-byte characters. */
static qv_status gen_text(qv_encoder *enc, input *in) {
    static const char *const pieces[] = {"a", "quiver", ".", "_", "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80",
                                         "\xef\xbf\xbf", "\xf4\x8f\xbf\xbf", " ", "0", "\x7f"};
    char buf[96];
    size_t len = 0, n = take8(in) % 12;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = take8(in);
        if (c & 0x80) { /* one ASCII byte, NUL included */
            buf[len++] = (char)(c & 0x7f);
            continue;
        }
        const char *piece = pieces[c % (sizeof pieces / sizeof pieces[0])];
        size_t pl = strlen(piece);
        if (len + pl > sizeof buf) break;
        memcpy(buf + len, piece, pl);
        len += pl;
    }
    return qv_encoder_text(enc, buf, len);
}

static qv_status gen_value(qv_encoder *enc, input *in, int depth);

static qv_status gen_container(qv_encoder *enc, input *in, int depth, int kind) {
    size_t n = take8(in) % 5;
    qv_status st;
    if (kind == 0) {
        if ((st = qv_encoder_list(enc, n))) return st;
        for (size_t i = 0; i < n; i++)
            if ((st = gen_value(enc, in, depth + 1))) return st;
        return QV_OK;
    }
    if ((st = kind == 1 ? qv_encoder_map_begin(enc) : qv_encoder_set_begin(enc))) return st;
    for (size_t i = 0; i < n; i++) {
        if ((st = gen_value(enc, in, depth + 1))) return st;
        if (kind == 1 && (st = gen_value(enc, in, depth + 1))) return st;
    }
    return kind == 1 ? qv_encoder_map_end(enc) : qv_encoder_set_end(enc);
}

static qv_status gen_value(qv_encoder *enc, input *in, int depth) {
    uint8_t kind = take8(in);
    if (depth > 5) kind %= 9; /* scalars only */
    qv_status st;
    switch (kind % 16) {
    case 0: return qv_encoder_null(enc);
    case 1: return qv_encoder_bool(enc, kind & 16);
    case 2: return qv_encoder_int(enc, (int64_t)take(in, 1 + (kind >> 5)));
    case 3: return qv_encoder_negint(enc, take(in, 8));
    case 4: {
        static const double specials[] = {0.0, -0.0, NAN, INFINITY, -INFINITY, 1.5, 5e-324, 65504.0};
        uint64_t bits = take(in, 8);
        double d;
        memcpy(&d, &bits, sizeof d);
        return qv_encoder_float(enc, kind & 16 ? specials[(kind >> 5) & 7] : d);
    }
    case 5: return gen_text(enc, in);
    case 6: {
        size_t len;
        const uint8_t *p = take_span(in, 64, &len);
        return qv_encoder_bytes(enc, p, len);
    }
    case 7: {
        size_t len;
        const uint8_t *p = take_span(in, 24, &len);
        return qv_encoder_bigint(enc, kind & 16, p, len);
    }
    case 8: {
        /* a byte string past the default inline limit */
        static uint8_t big[2048];
        size_t len = (size_t)take(in, 2);
        if (len > sizeof big) len = sizeof big;
        memset(big, kind, len);
        return qv_encoder_bytes(enc, big, len);
    }
    case 9: return gen_container(enc, in, depth, 0);
    case 10: return gen_container(enc, in, depth, 1);
    case 11: return gen_container(enc, in, depth, 2);
    case 12: {
        /* a value that looks like a reference: the builder must store it by reference */
        uint8_t d[16];
        for (int i = 0; i < 16; i++) d[i] = take8(in);
        if ((st = qv_encoder_tag(enc, QV_TAG_REF))) return st;
        return qv_encoder_bytes(enc, d, 16);
    }
    case 13: {
        static const uint64_t tags[] = {0, 1, 40, 78, 0x51560001u, 0x51560004u, 0x5156000eu, UINT64_MAX};
        if ((st = qv_encoder_tag(enc, tags[(kind >> 4) & 7]))) return st;
        return gen_value(enc, in, depth + 1);
    }
    case 14: {
        /* nesting, now and then up to and past what a record may hold
         * inline (rarely: deep items are slow to decode under the sanitizers) */
        size_t n = (size_t)take(in, 2) % ((kind & 0xf0) == 0xe0 ? 600 : 24);
        for (size_t i = 0; i < n; i++)
            if ((st = qv_encoder_list(enc, 1))) return st;
        return qv_encoder_null(enc);
    }
    default: return qv_encoder_uint(enc, take(in, 8));
    }
}

/* ----------------------------------------------------------- the call */

typedef struct {
    void *call, *result, *meta;
    size_t call_len, result_len, meta_len;
    char lang[32];
    qv_store_info info;
} generated;

static qv_status finish_copy(qv_encoder *enc, void **out, size_t *len) {
    const void *p;
    qv_status st = qv_encoder_finish(enc, &p, len);
    if (st) return st;
    if (!(*out = malloc(*len))) return QV_ENOMEM;
    memcpy(*out, p, *len);
    return QV_OK;
}

static qv_status gen_call(generated *g, input *in) {
    qv_encoder *enc;
    qv_status st = qv_encoder_new(&enc);
    if (st) return st;
    /* [marker, name, version, args, kwargs] */
    uint8_t shape = take8(in);
    if (!(st = qv_encoder_list(enc, 5)) && !(st = qv_encoder_text(enc, QV_CALL_MARKER, sizeof QV_CALL_MARKER - 1)) &&
        !(st = gen_text(enc, in)))
        st = shape & 1 ? qv_encoder_null(enc) : gen_text(enc, in);
    size_t nargs = (shape >> 1) % 5, nkw = (shape >> 4) % 4;
    if (!st) st = qv_encoder_list(enc, nargs);
    for (size_t i = 0; !st && i < nargs; i++) st = gen_value(enc, in, 1);
    if (!st) st = qv_encoder_map_begin(enc);
    for (size_t i = 0; !st && i < nkw; i++) {
        char key[8] = {'k', (char)('0' + i)};
        if (!(st = qv_encoder_text(enc, key, 2))) st = gen_value(enc, in, 1);
    }
    if (!st) st = qv_encoder_map_end(enc);
    if (!st) st = finish_copy(enc, &g->call, &g->call_len);
    qv_encoder_reset(enc);
    if (!st && !(st = gen_value(enc, in, 0))) st = finish_copy(enc, &g->result, &g->result_len);
    qv_encoder_reset(enc);
    if (!st && !(st = qv_encoder_map_begin(enc))) {
        for (size_t i = 0, n = take8(in) % 3; !st && i < n; i++)
            if (!(st = gen_text(enc, in))) st = gen_value(enc, in, 2);
        if (!st && !(st = qv_encoder_map_end(enc))) st = finish_copy(enc, &g->meta, &g->meta_len);
    }
    qv_encoder_free(enc);
    if (st) return st;
    g->info = (qv_store_info)QV_STORE_INFO_INIT;
    g->info.start_ns = (int64_t)take(in, 8) | 1; /* 0 would mean now */
    g->info.duration_ns = (int64_t)take(in, 8);
    size_t n = take8(in) % sizeof g->lang;
    for (size_t i = 0; i < n; i++) g->lang[i] = (char)('a' + take8(in) % 26);
    g->lang[n] = 0;
    g->info.lang = n ? g->lang : NULL;
    if (take8(in) & 1) {
        g->info.meta = g->meta;
        g->info.meta_len = g->meta_len;
    }
    return QV_OK;
}

/* ------------------------------------------------------------- values */

#define MAX_VALUES 64

typedef struct {
    qv_digest digest;
    const uint8_t *data;
    size_t len;
} stored_value;

typedef struct {
    stored_value v[MAX_VALUES];
    size_t n;
} value_table;

static qv_status table_lookup(const uint8_t digest[16], const void **data, size_t *len, void *userdata) {
    value_table *t = userdata;
    for (size_t i = 0; i < t->n; i++) {
        if (memcmp(t->v[i].digest.bytes, digest, 16) == 0) {
            *data = t->v[i].data;
            *len = t->v[i].len;
            return QV_OK;
        }
    }
    return QV_NOTFOUND;
}

/* ---------------------------------------------------------- mutations */

typedef struct {
    const uint8_t *p;
    size_t len;
} span;

/* A record's top-level entries (key and value) as spans; 0 if it is not a
 * map of at most 16 entries. */
static size_t entries(const uint8_t *rec, size_t len, span *key, span *val) {
    qv_decoder dec;
    qv_type t;
    uint64_t n;
    qv_decoder_reset(&dec, rec, len);
    if (qv_decoder_next(&dec, &t) || t != QV_TYPE_MAP) return 0;
    qv_decoder_get_count(&dec, &n);
    if (n > 16) return 0;
    for (uint64_t i = 0; i < n; i++) {
        size_t s, e;
        if (qv__decoder_item_span(&dec, &s, &e)) return 0;
        key[i] = (span){rec + s, e - s};
        if (qv__decoder_item_span(&dec, &s, &e)) return 0;
        val[i] = (span){rec + s, e - s};
    }
    return (size_t)n;
}

static uint8_t scratch_items[1 << 16];
static size_t scratch_used;

/* A generated item, kept until the next record. */
static span gen_span(input *in, int depth) {
    qv_encoder *enc;
    const void *p;
    size_t len;
    span s = {NULL, 0};
    if (qv_encoder_new(&enc)) return s;
    if (!gen_value(enc, in, depth) && !qv_encoder_finish(enc, &p, &len) &&
        len <= sizeof scratch_items - scratch_used) {
        memcpy(scratch_items + scratch_used, p, len);
        s = (span){scratch_items + scratch_used, len};
        scratch_used += len;
    }
    qv_encoder_free(enc);
    return s;
}

/* The record rebuilt from its entries, field-level mutations applied, with
 * the map head written as given (so it may miscount). */
static size_t mutate_fields(uint8_t *out, size_t cap, const uint8_t *rec, size_t len, input *in) {
    span key[24], val[24];
    size_t n = entries(rec, len, key, val);
    if (!n) return 0;
    static const uint8_t keys[][3] = {{0x09}, {0x18, 0xff}, {0x20}, {0x61, 0x78}, {0xf9, 0x3e, 0x00}, {0x00}, {0x05}};
    static const uint8_t key_len[] = {1, 2, 1, 2, 3, 1, 1};
    for (int m = 0, count = take8(in) % 4; m < count; m++) {
        uint8_t op = take8(in), a = take8(in) % n, b = take8(in) % n;
        switch (op % 6) {
        case 0: /* drop an entry */
            if (n > 1) {
                memmove(key + a, key + a + 1, (n - a - 1) * sizeof *key);
                memmove(val + a, val + a + 1, (n - a - 1) * sizeof *val);
                n--;
            }
            break;
        case 1: { /* another value, often of another type */
            span s = gen_span(in, 1);
            if (s.p) val[a] = s;
            break;
        }
        case 2: /* swap two entries: keys out of order */
            if (a != b) {
                span k = key[a], v = val[a];
                key[a] = key[b], val[a] = val[b], key[b] = k, val[b] = v;
            }
            break;
        case 3: /* duplicate an entry */
            if (n < 16) {
                key[n] = key[a], val[n] = val[a];
                n++;
            }
            break;
        case 4: { /* an entry under another key: a later format's, or none a record has */
            if (n < 16) {
                int k = b % 7;
                span s = gen_span(in, 1);
                if (!s.p) break;
                key[n] = (span){keys[k], key_len[k]};
                val[n] = s;
                n++;
            }
            break;
        }
        default: /* value of one field under another's key */
            val[a] = val[b];
        }
    }
    uint8_t head = take8(in);
    size_t count = n;
    if (head % 5 == 0) count = (n + (head >> 3)) % 24; /* a head that miscounts */
    size_t o = 0;
    if (count < 24) out[o++] = (uint8_t)(0xa0 | count);
    else out[o++] = 0xb8, out[o++] = (uint8_t)count;
    for (size_t i = 0; i < n; i++) {
        if (o + key[i].len + val[i].len > cap) return 0;
        memcpy(out + o, key[i].p, key[i].len);
        o += key[i].len;
        memcpy(out + o, val[i].p, val[i].len);
        o += val[i].len;
    }
    return o;
}

/* Mutate the values table: a value missing, changed, or another's bytes. */
static void mutate_values(value_table *t, input *in, uint8_t *spare, size_t spare_cap) {
    if (!t->n) return;
    uint8_t op = take8(in);
    size_t i = take8(in) % t->n, j = take8(in) % t->n;
    switch (op % 8) {
    case 0: t->v[i] = t->v[--t->n]; break;
    case 1: t->v[i].data = t->v[j].data, t->v[i].len = t->v[j].len; break;
    case 2: {
        size_t len = t->v[i].len < spare_cap ? t->v[i].len : spare_cap;
        memcpy(spare, t->v[i].data, len);
        if (len) spare[take(in, 2) % len] ^= (uint8_t)(take8(in) | 1);
        t->v[i].data = spare, t->v[i].len = len;
        break;
    }
    case 3: t->v[i].len = t->v[i].len ? take(in, 2) % t->v[i].len : 0; break; /* truncated */
    default: break;
    }
}

/* --------------------------------------------------- the memory cache */

static qv_cache *cache;

static void put(qv_txn *txn, int table, const void *key, size_t klen, const void *val, size_t vlen) {
    if (cache->store->ops->put(cache->store, txn, table, key, klen, val, vlen)) abort();
}

static int count_table(int table) {
    qv_txn *txn;
    uint64_t n;
    if (cache->store->ops->read_begin(cache->store, &txn)) abort();
    if (cache->store->ops->count(cache->store, txn, table, &n)) abort();
    cache->store->ops->read_end(cache->store, txn);
    return (int)n;
}

typedef struct {
    uint8_t keys[256][24];
    size_t klen[256];
    size_t n;
} key_set;

static int gather(const void *key, size_t klen, const void *val, size_t vlen, void *userdata) {
    key_set *k = userdata;
    (void)val, (void)vlen;
    if (k->n == 256 || klen > 24) return 1;
    memcpy(k->keys[k->n], key, klen);
    k->klen[k->n++] = klen;
    return 0;
}

/* Leave the cache as empty as the next input expects it. */
static void empty_cache(void) {
    qv_store *s = cache->store;
    for (int table = 0; table < T_COUNT; table++) {
        if (table == T_META) continue;
        for (;;) {
            key_set k = {.n = 0};
            qv_txn *txn;
            if (s->ops->write_begin(s, &txn)) abort();
            if (s->ops->scan(s, txn, table, NULL, 0, gather, &k)) abort();
            for (size_t i = 0; i < k.n; i++)
                if (s->ops->del(s, txn, table, k.keys[i], k.klen[i])) abort();
            if (s->ops->commit(s, txn)) abort();
            if (k.n < 256) break;
        }
    }
}

static qv_status copy_out(const void *data, size_t len, void *userdata) {
    span *s = userdata;
    s->p = malloc(len ? len : 1);
    if (!s->p) return QV_ENOMEM;
    memcpy((void *)s->p, data, len);
    s->len = len;
    return QV_OK;
}

/* The record and its values as a writer put them, through every cache
 * operation that reads records. */
static void through_cache(const qv_digest *key, const uint8_t *rec, size_t len, const value_table *t, int clean,
                          const generated *g) {
    qv_store *s = cache->store;
    qv_txn *txn;
    if (s->ops->write_begin(s, &txn)) abort();
    for (size_t i = 0; i < t->n; i++) {
        uint8_t count[8] = {0, 0, 0, 0, 0, 0, 0, 1};
        put(txn, T_VALUES, t->v[i].digest.bytes, 16, t->v[i].data, t->v[i].len);
        put(txn, T_REFS, t->v[i].digest.bytes, 16, count, 8);
    }
    put(txn, T_CALLS, key->bytes, 16, rec, len);
    if (s->ops->commit(s, txn)) abort();

    span got = {NULL, 0};
    qv_status st = qv_cache_get_with(cache, key, copy_out, &got);
    if (st != QV_OK && st != QV_NOTFOUND) abort();
    if (clean && (st || got.len != g->result_len || memcmp(got.p, g->result, got.len))) abort();
    free((void *)got.p);
    st = qv_cache_contains(cache, key);
    if (st != QV_OK && st != QV_NOTFOUND) abort();
    qv_value *loaded;
    st = qv_cache_load(cache, key, &loaded);
    if (st != QV_OK && st != QV_ECORRUPT) abort();
    if (clean && st) abort();
    qv_value_free(loaded);
    uint64_t bad;
    if (qv_cache_verify(cache, 1, &bad)) abort();
    if (clean && bad) abort();
    if (qv_cache_verify(cache, 0, &bad) || bad) abort(); /* repair left nothing bad */
    st = qv_cache_evict(cache, key);
    if (st != QV_OK && st != QV_NOTFOUND) abort();
    uint64_t freed;
    if (qv_cache_gc(cache, &freed)) abort();
    /* no call left, and so no value either */
    if (count_table(T_CALLS) || count_table(T_VALUES)) abort();
    empty_cache();
}

/* --------------------------------------------------------------- run */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!cache && qv_cache_open_memory(&cache)) abort();
    input in = {data, size};
    generated g = {0};
    qv_encoder *enc = NULL;
    record_builder b = {NULL, 0, NULL, 0, 0};
    pending p;
    scratch_used = 0;
    static const uint32_t limits[] = {512, 0, 16, 4096};
    uint8_t setup = take8(&in);
    if (gen_call(&g, &in) || qv_encoder_new(&enc)) goto done;
    b.enc = enc;
    b.inline_limit = limits[setup & 3];
    if (qv__record_prepare(&p, &b, NULL, g.call, g.call_len, g.result, g.result_len, &g.info)) goto done;

    value_table t = {.n = 0};
    for (size_t i = 0; i < b.nrefs && t.n < MAX_VALUES; i++)
        t.v[t.n++] = (stored_value){b.refs[i].digest, b.refs[i].data, b.refs[i].len};
    rc_values values = {table_lookup, &t};

    /* the record as built reads back as the call that made it */
    rc_check(p.record, p.record_len, &values);
    qv_value *loaded;
    if (qv__record_load(p.record, p.record_len, table_lookup, &t, &loaded)) abort();
    qv_digest want, got;
    qv_digest_bytes(&want, g.call, g.call_len);
    rc_loaded_call_digest(loaded, &got);
    int64_t d;
    if (memcmp(want.bytes, got.bytes, 16) || !rc_same_encoding(rc_field(loaded, "result"), g.result, g.result_len) ||
        qv_value_get_int(rc_field(loaded, "duration_ns"), &d) || d != g.info.duration_ns)
        abort();
    qv_value_free(loaded);
    size_t cs, ce, rs, re;
    if (qv__call_name(g.call, g.call_len, &cs, &ce) || qv__record_name(p.record, p.record_len, &rs, &re) ||
        ce - cs != re - rs || memcmp((const uint8_t *)g.call + cs, p.record + rs, ce - cs))
        abort();

    /* mutated */
    static uint8_t rec[1 << 20], spare[1 << 17];
    if (p.record_len > sizeof rec) goto done;
    size_t len = p.record_len;
    memcpy(rec, p.record, len);
    int clean = 1;
    if (setup & 4) {
        size_t n = mutate_fields(rec, sizeof rec, p.record, p.record_len, &in);
        if (n) len = n, clean = 0;
    }
    if (setup & 8) {
        mutate_values(&t, &in, spare, sizeof spare);
        clean = 0;
    }
    if (setup & 16) {
        for (int i = 0, n = 1 + take8(&in) % 3; i < n && len; i++) rec[take(&in, 2) % len] ^= (uint8_t)(take8(&in) | 1);
        clean = 0;
    }
    if (setup & 32 && len) {
        len = (size_t)take(&in, 2) % len; /* truncated */
        clean = 0;
    }
    rc_check(rec, len, &values);
    through_cache(&want, rec, len, &t, clean, &g);
done:
    free(b.refs);
    qv_encoder_free(enc);
    free(g.call);
    free(g.result);
    free(g.meta);
    return 0;
}
