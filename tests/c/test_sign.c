/* Signed entries (docs/FORMAT.md "Signed entries"): tags checked against
 * vectors computed by an independent implementation, and signed caches that
 * meet tampered, moved, unsigned and wrongly keyed entries. Every such entry
 * must be a miss counted in QV_STAT_FORGED, never a wrong hit or a crash.
 * The LMDB store is edited underneath a closed cache, as an attacker who can
 * write the file but does not know the secret would. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "cache.h"
#include "sign.h"

static const char SECRET[] = "correct horse";

static qv_cache_options signed_options(const char *secret) {
    qv_cache_options o = QV_CACHE_OPTIONS_INIT;
    o.secret = secret;
    o.secret_len = secret ? strlen(secret) : 0;
    return o;
}

static qv_cache *open_dir(const char *dir, const char *secret) {
    qv_cache_options o = signed_options(secret);
    qv_cache *c;
    QVT_OK(qv_cache_open(&c, dir, &o));
    return c;
}

static uint64_t stat_of(qv_cache *c, int which) {
    uint64_t v;
    QVT_OK(qv_cache_stat(c, which, &v));
    return v;
}

static qv_digest key_of(int64_t x) {
    qv_value *args = qvt_int_args(x);
    qv_digest d;
    QVT_OK(qv_call_digest(&d, "t.sign", "1", args, NULL));
    qv_value_free(args);
    return d;
}

/* The result of x: a small int, or (big) bytes past the inline limit, so
 * that they live in the values table. */
static qv_value *result_of(int64_t x, int big) {
    qv_value *r;
    if (!big) {
        QVT_OK(qv_value_new_int(&r, x * 10));
        return r;
    }
    uint8_t b[2000];
    for (size_t i = 0; i < sizeof b; i++) b[i] = (uint8_t)(x + i * 7);
    QVT_OK(qv_value_new_bytes(&r, b, sizeof b));
    return r;
}

static void store(qv_cache *c, int64_t x, int big) {
    qv_value *args = qvt_int_args(x), *r = result_of(x, big);
    QVT_OK(qv_cache_store_value(c, "t.sign", "1", args, NULL, r, NULL));
    qv_value_free(args);
    qv_value_free(r);
}

/* A hit with the right result, or QV_NOTFOUND. */
static qv_status lookup(qv_cache *c, int64_t x, int big) {
    qv_digest k = key_of(x);
    qv_value *got;
    qv_status st = qv_cache_get_value(c, &k, &got);
    if (st) return st;
    qv_value *want = result_of(x, big);
    void *a, *b;
    size_t alen, blen;
    QVT_OK(qv_value_encode(got, &a, &alen));
    QVT_OK(qv_value_encode(want, &b, &blen));
    assert_int_equal(alen, blen);
    assert_memory_equal(a, b, alen);
    qv_free(a);
    qv_free(b);
    qv_value_free(got);
    qv_value_free(want);
    return QV_OK;
}

/* ------------------------------------------------------------- raw store */

static qv_store *raw_open(const char *dir) {
    qv_store_config cfg = {qv__table_names, T_COUNT, QV_DURABILITY_SAFE, 0, 0, 0, 0};
    qv_store *s;
    QVT_OK(qv__store_lmdb_open(&s, dir, &cfg));
    return s;
}

/* A copy of the stored bytes of key in table (tag included). */
static uint8_t *raw_get(const char *dir, int table, const void *key, size_t *len) {
    qv_store *s = raw_open(dir);
    qv_txn *txn;
    const void *v;
    QVT_OK(s->ops->read_begin(s, &txn));
    QVT_OK(s->ops->get(s, txn, table, key, 16, &v, len));
    uint8_t *copy = malloc(*len);
    memcpy(copy, v, *len);
    s->ops->read_end(s, txn);
    s->ops->close(s);
    return copy;
}

static void raw_put(const char *dir, int table, const void *key, const void *val, size_t len) {
    qv_store *s = raw_open(dir);
    qv_txn *txn;
    QVT_OK(s->ops->write_begin(s, &txn));
    QVT_OK(s->ops->put(s, txn, table, key, 16, val, len));
    QVT_OK(s->ops->commit(s, txn));
    s->ops->close(s);
}

/* The digest of the value a big result's record refers to. */
static qv_digest value_key(const char *dir, int64_t x) {
    qv_cache *c = open_dir(dir, SECRET);
    qv_digest k = key_of(x), d;
    qv_value *rec, *result;
    QVT_OK(qv_cache_load(c, &k, &rec));
    result = NULL;
    for (size_t i = 0; i < qv_value_count(rec); i++) {
        const char *name;
        size_t n;
        if (qv_value_get_text(qv_value_map_key(rec, i), &name, &n) == QV_OK && n == 6 &&
            !memcmp(name, "result", 6))
            result = (qv_value *)qv_value_map_value(rec, i);
    }
    assert_non_null(result);
    void *enc;
    size_t len;
    QVT_OK(qv_value_encode(result, &enc, &len));
    qv_digest_bytes(&d, enc, len);
    qv_free(enc);
    qv_value_free(rec);
    qv_cache_close(c);
    return d;
}

/* ------------------------------------------------------------------ tests */

static void hex_of(const uint8_t *b, size_t n, char *out) {
    for (size_t i = 0; i < n; i++) sprintf(out + 2 * i, "%02x", b[i]);
}

/* Vectors from Python's hmac module and `openssl dgst -sha256 -mac HMAC`
 * over the bytes docs/FORMAT.md gives, not from this code. */
static void vectors(void **state) {
    static const struct {
        const char *secret, *table;
        uint8_t key0;
        const char *payload;
        size_t plen;
        const char *tag;
    } v[] = {
        {"correct horse", "calls", 0, "\xa1\x00\x01", 3, "88a81511bb1c9477755ff94b71076a9e9aab4cf941314a98fafb57a93d657601"},
        {NULL, "values", 16, "hello", 5, "0d558d175ab035dead3d29ef362a86bec869e7f5618b31085cf7df3fe16897d9"},
        {"correct horse", "values", 0, "", 0, "a1440f561dae2e5a2661cb4f630c106aff2cccc091d5b8dae2541806484448a7"},
    };
    char long_secret[101];
    memset(long_secret, 'k', 100); /* longer than a block: hashed first */
    long_secret[100] = 0;
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        const char *secret = v[i].secret ? v[i].secret : long_secret;
        qv_signer *s;
        QVT_OK(qv__signer_new(&s, secret, strlen(secret)));
        uint8_t key[16], tag[32], stored[64];
        char hex[65];
        for (int j = 0; j < 16; j++) key[j] = (uint8_t)(v[i].key0 + j);
        QVT_OK(qv__sign(s, v[i].table, key, 16, v[i].payload, v[i].plen, tag));
        hex_of(tag, 32, hex);
        assert_string_equal(hex, v[i].tag);
        memcpy(stored, v[i].payload, v[i].plen);
        memcpy(stored + v[i].plen, tag, 32);
        size_t plen = 99;
        QVT_OK(qv__sign_check(s, v[i].table, key, 16, stored, v[i].plen + 32, &plen));
        assert_int_equal(plen, v[i].plen);
        /* every byte of payload and tag counts */
        for (size_t j = 0; j < v[i].plen + 32; j++) {
            stored[j] ^= 1;
            assert_int_equal(qv__sign_check(s, v[i].table, key, 16, stored, v[i].plen + 32, &plen), QV__EFORGED);
            stored[j] ^= 1;
        }
        /* another table, another key, a shorter entry */
        assert_int_equal(qv__sign_check(s, strcmp(v[i].table, "calls") ? "calls" : "values", key, 16, stored,
                                        v[i].plen + 32, &plen),
                         QV__EFORGED);
        key[15] ^= 1;
        assert_int_equal(qv__sign_check(s, v[i].table, key, 16, stored, v[i].plen + 32, &plen), QV__EFORGED);
        assert_int_equal(qv__sign_check(s, v[i].table, key, 16, stored, 31, &plen), QV__EFORGED);
        qv__signer_free(s);
    }
    qv_signer *s;
    assert_int_equal(qv__signer_new(&s, "", 0), QV_EINVAL);
    assert_null(s);
    qv__signer_free(NULL);
}

static void round_trip(qv_cache *c) {
    assert_int_equal(qv_cache_signed(c), 1);
    for (int big = 0; big < 2; big++) {
        assert_int_equal(lookup(c, 1 + big, big), QV_NOTFOUND);
        store(c, 1 + big, big);
        QVT_OK(lookup(c, 1 + big, big));
        qv_digest k = key_of(1 + big);
        QVT_OK(qv_cache_contains(c, &k));
        qv_value *rec;
        QVT_OK(qv_cache_load(c, &k, &rec));
        qv_value_free(rec);
    }
    store(c, 2, 1); /* a rerun replaces a signed record */
    QVT_OK(lookup(c, 2, 1));
    assert_int_equal(stat_of(c, QV_STAT_FORGED), 0);
    assert_int_equal(stat_of(c, QV_STAT_CORRUPT), 0);
    assert_int_equal(stat_of(c, QV_STAT_ENTRIES), 2);
    assert_int_equal(stat_of(c, QV_STAT_VALUES), 1);
    uint64_t bad = 9, freed = 9;
    QVT_OK(qv_cache_verify(c, 0, &bad));
    assert_int_equal(bad, 0);
    QVT_OK(qv_cache_gc(c, &freed));
    assert_int_equal(freed, 0);
    qv_iter *it;
    qv_digest k;
    int n = 0;
    QVT_OK(qv_cache_query(&it, c, "t.sign"));
    while (qv_iter_next(it, &k) == QV_OK) n++;
    qv_iter_free(it);
    assert_int_equal(n, 2);
    k = key_of(1);
    QVT_OK(qv_cache_evict(c, &k));
    assert_int_equal(lookup(c, 1, 0), QV_NOTFOUND);
    QVT_OK(lookup(c, 2, 1));
}

static void memory_round_trip(void **state) {
    qv_cache_options o = signed_options(SECRET);
    qv_cache *c;
    QVT_OK(qv_cache_open(&c, ":memory:", &o));
    round_trip(c);
    qv_cache_close(c);
    QVT_OK(qv_cache_open_memory(&c));
    assert_int_equal(qv_cache_signed(c), 0);
    qv_cache_close(c);
    assert_int_equal(qv_cache_signed(NULL), 0);
}

static void lmdb_round_trip(void **state) {
    char *dir = qvt_tempdir("sign");
    qv_cache *c = open_dir(dir, SECRET);
    round_trip(c);
    qv_cache_close(c);
    /* the tag is on disk: 32 bytes after the record */
    qv_digest k = key_of(2);
    size_t len;
    free(raw_get(dir, T_CALLS, k.bytes, &len));
    c = open_dir(dir, SECRET);
    QVT_OK(lookup(c, 2, 1));
    qv_cache_close(c);
    qvt_rmtree(dir);
    free(dir);
}

/* Open, look x up expecting a forged miss, store it again, expect a hit. */
static void forged_then_healed(const char *dir, int64_t x, int big) {
    qv_cache *c = open_dir(dir, SECRET);
    assert_int_equal(lookup(c, x, big), QV_NOTFOUND);
    assert_int_equal(stat_of(c, QV_STAT_FORGED), 1);
    assert_int_equal(stat_of(c, QV_STAT_MISSES), 1);
    assert_int_equal(stat_of(c, QV_STAT_HITS), 0);
    qv_digest k = key_of(x);
    /* contains reads the record alone, as it does for a corrupt value */
    if (!big) assert_int_equal(qv_cache_contains(c, &k), QV_NOTFOUND);
    qv_value *rec;
    assert_int_equal(qv_cache_load(c, &k, &rec), QV_ECORRUPT);
    assert_null(rec);
    store(c, x, big);
    QVT_OK(lookup(c, x, big));
    qv_cache_close(c);
}

static void tampered_record(void **state) {
    char *dir = qvt_tempdir("sign");
    qv_cache *c = open_dir(dir, SECRET);
    store(c, 5, 0);
    qv_cache_close(c);
    qv_digest k = key_of(5);
    size_t len;
    uint8_t *rec = raw_get(dir, T_CALLS, k.bytes, &len);
    /* the result 50 is 18 32 after the map head and key 0; make it 51 */
    uint8_t *p = memchr(rec, 0x32, len - 32);
    assert_non_null(p);
    *p = 0x33;
    raw_put(dir, T_CALLS, k.bytes, rec, len);
    free(rec);
    forged_then_healed(dir, 5, 0);
    qvt_rmtree(dir);
    free(dir);
}

static void tampered_value(void **state) {
    char *dir = qvt_tempdir("sign");
    qv_cache *c = open_dir(dir, SECRET);
    store(c, 6, 1);
    qv_cache_close(c);
    qv_digest d = value_key(dir, 6);
    size_t len;
    uint8_t *val = raw_get(dir, T_VALUES, d.bytes, &len);
    assert_int_equal(len, 3 + 2000 + 32);
    val[100] ^= 0xff;
    raw_put(dir, T_VALUES, d.bytes, val, len);
    free(val);
    forged_then_healed(dir, 6, 1);
    qvt_rmtree(dir);
    free(dir);
}

/* A signed record copied under another key: valid bytes, wrong place. */
static void moved_record(void **state) {
    char *dir = qvt_tempdir("sign");
    qv_cache *c = open_dir(dir, SECRET);
    store(c, 7, 0);
    qv_cache_close(c);
    qv_digest from = key_of(7), to = key_of(8);
    size_t len;
    uint8_t *rec = raw_get(dir, T_CALLS, from.bytes, &len);
    raw_put(dir, T_CALLS, to.bytes, rec, len);
    /* and as a value: the other table */
    raw_put(dir, T_VALUES, to.bytes, rec, len);
    free(rec);
    c = open_dir(dir, SECRET);
    QVT_OK(lookup(c, 7, 0));
    qv_digest k = key_of(8);
    qv_value *got;
    assert_int_equal(qv_cache_get_value(c, &k, &got), QV_NOTFOUND);
    assert_int_equal(stat_of(c, QV_STAT_FORGED), 1);
    /* verify finds both (the record cannot name its call; the value reads
     * as empty) and repair removes them, then gc runs cleanly */
    uint64_t bad;
    QVT_OK(qv_cache_verify(c, 0, &bad));
    assert_int_equal(bad, 2);
    QVT_OK(qv_cache_verify(c, 1, &bad));
    assert_int_equal(bad, 2);
    QVT_OK(qv_cache_verify(c, 0, &bad));
    assert_int_equal(bad, 0);
    QVT_OK(lookup(c, 7, 0));
    assert_int_equal(stat_of(c, QV_STAT_ENTRIES), 1);
    qv_cache_close(c);
    qvt_rmtree(dir);
    free(dir);
}

/* Entries without a tag: a cache written unsigned, then opened signed; and
 * raw untagged bytes put into a signed cache, short and long. */
static void unsigned_entries(void **state) {
    char *dir = qvt_tempdir("sign");
    qv_cache *c = open_dir(dir, NULL);
    assert_int_equal(qv_cache_signed(c), 0);
    store(c, 9, 0);
    store(c, 10, 1);
    QVT_OK(lookup(c, 9, 0));
    qv_cache_close(c);
    forged_then_healed(dir, 9, 0);
    forged_then_healed(dir, 10, 1);
    /* the signed handle marked it: an unsigned one is now refused */
    qv_cache_options o = signed_options(NULL);
    assert_int_equal(qv_cache_open(&c, dir, &o), QV_EINVAL);
    assert_null(c);
    assert_non_null(strstr(qv_errmsg(), "secret"));
    /* untagged bytes written by someone else: a valid record without its tag */
    qv_digest k9 = key_of(9), k11 = key_of(11);
    size_t len;
    uint8_t *rec = raw_get(dir, T_CALLS, k9.bytes, &len);
    raw_put(dir, T_CALLS, k11.bytes, rec, len - 32);
    raw_put(dir, T_CALLS, k9.bytes, "\xa0", 1);
    free(rec);
    c = open_dir(dir, SECRET);
    assert_int_equal(lookup(c, 11, 0), QV_NOTFOUND);
    assert_int_equal(lookup(c, 9, 0), QV_NOTFOUND);
    assert_int_equal(stat_of(c, QV_STAT_FORGED), 2);
    /* eviction removes a forged record */
    QVT_OK(qv_cache_evict(c, &k11));
    assert_int_equal(qv_cache_evict(c, &k11), QV_NOTFOUND);
    uint64_t freed;
    QVT_OK(qv_cache_gc(c, &freed));
    store(c, 9, 0);
    QVT_OK(lookup(c, 9, 0));
    QVT_OK(lookup(c, 10, 1));
    qv_cache_close(c);
    qvt_rmtree(dir);
    free(dir);
}

static void wrong_secret(void **state) {
    char *dir = qvt_tempdir("sign");
    qv_cache *c = open_dir(dir, SECRET);
    store(c, 12, 0);
    store(c, 13, 1);
    qv_cache_close(c);
    c = open_dir(dir, "battery staple");
    assert_int_equal(qv_cache_signed(c), 1);
    assert_int_equal(lookup(c, 12, 0), QV_NOTFOUND);
    assert_int_equal(lookup(c, 13, 1), QV_NOTFOUND);
    assert_int_equal(stat_of(c, QV_STAT_FORGED), 2);
    assert_int_equal(stat_of(c, QV_STAT_HITS), 0);
    qv_cache_close(c);
    c = open_dir(dir, SECRET);
    QVT_OK(lookup(c, 12, 0));
    QVT_OK(lookup(c, 13, 1));
    qv_cache_close(c);
    qvt_rmtree(dir);
    free(dir);
}

static void secret_from_environment(void **state) {
    char *dir = qvt_tempdir("sign");
    setenv("QUIVER_SECRET", SECRET, 1);
    qv_cache *c;
    QVT_OK(qv_cache_open(&c, dir, NULL));
    assert_int_equal(qv_cache_signed(c), 1);
    store(c, 14, 0);
    qv_cache_close(c);
    /* a version 1 options struct has no secret field: the environment's */
    qv_cache_options o1;
    QVT_OK(qv_cache_options_init(&o1, 1));
    QVT_OK(qv_cache_open(&c, dir, &o1));
    assert_int_equal(qv_cache_signed(c), 1);
    QVT_OK(lookup(c, 14, 0));
    qv_cache_close(c);
    /* the option wins over the environment */
    c = open_dir(dir, "battery staple");
    assert_int_equal(lookup(c, 14, 0), QV_NOTFOUND);
    assert_int_equal(stat_of(c, QV_STAT_FORGED), 1);
    qv_cache_close(c);
    setenv("QUIVER_SECRET", "", 1); /* empty: unsigned */
    assert_int_equal(qv_cache_open(&c, dir, NULL), QV_EINVAL);
    QVT_OK(qv_cache_open_memory(&c));
    assert_int_equal(qv_cache_signed(c), 0);
    qv_cache_close(c);
    unsetenv("QUIVER_SECRET");
    c = open_dir(dir, SECRET);
    QVT_OK(lookup(c, 14, 0));
    qv_cache_close(c);
    qvt_rmtree(dir);
    free(dir);
}

/* A secret of any bytes, NUL included, and of zero length refused. */
static void binary_secret(void **state) {
    qv_cache_options o = QV_CACHE_OPTIONS_INIT;
    o.secret = "a\0b";
    o.secret_len = 3;
    qv_cache *c;
    QVT_OK(qv_cache_open(&c, ":memory:", &o));
    assert_int_equal(qv_cache_signed(c), 1);
    store(c, 15, 0);
    QVT_OK(lookup(c, 15, 0));
    qv_cache_close(c);
    o.secret_len = 0;
    assert_int_equal(qv_cache_open(&c, ":memory:", &o), QV_EINVAL);
    assert_null(c);
}

static qv_cache *memory_cache(const char *secret) {
    qv_cache_options o = signed_options(secret);
    qv_cache *c;
    QVT_OK(qv_cache_open(&c, ":memory:", &o));
    return c;
}

/* A stack is signed when both tiers are; a remote hit copied into the local
 * tier is signed again there, with the local tier's own secret. */
static void stacks(void **state) {
    qv_cache *local = memory_cache(SECRET), *remote = memory_cache("battery staple"), *plain = memory_cache(NULL);
    qv_cache *st, *half;
    QVT_OK(qv_cache_stack(&st, local, remote, NULL));
    QVT_OK(qv_cache_stack(&half, local, plain, NULL));
    assert_int_equal(qv_cache_signed(st), 1);
    assert_int_equal(qv_cache_signed(half), 0);
    store(remote, 16, 0);
    store(remote, 17, 1);
    QVT_OK(lookup(st, 16, 0));
    QVT_OK(lookup(st, 17, 1));
    QVT_OK(qv_cache_sync(st)); /* the copies into local are written in the background */
    QVT_OK(lookup(local, 16, 0));
    QVT_OK(lookup(local, 17, 1));
    assert_int_equal(stat_of(local, QV_STAT_FORGED), 0);
    assert_int_equal(stat_of(st, QV_STAT_FORGED), 0);
    qv_cache_close(half);
    qv_cache_close(st);
    qv_cache_close(plain);
    qv_cache_close(remote);
    qv_cache_close(local);
}

int main(void) {
    unsetenv("QUIVER_SECRET");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(vectors),          cmocka_unit_test(memory_round_trip), cmocka_unit_test(lmdb_round_trip),
        cmocka_unit_test(tampered_record),  cmocka_unit_test(tampered_value),    cmocka_unit_test(moved_record),
        cmocka_unit_test(unsigned_entries), cmocka_unit_test(wrong_secret),      cmocka_unit_test(secret_from_environment),
        cmocka_unit_test(binary_secret),
        cmocka_unit_test(stacks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
