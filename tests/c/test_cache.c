/* The cache's behaviour, each test run on the memory store and on LMDB:
 * lookups, records, values by reference, reruns, eviction, gc, query,
 * statistics, read-only handles and bad input. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"

typedef struct {
    int lmdb;
    char *dir;
    qv_cache *cache;
    qv_cache_options opts;
} fixture;

static int open_fixture(fixture *f) {
    if (!f->lmdb) return qv_cache_open_memory(&f->cache);
    if (!f->dir) f->dir = qvt_tempdir("cache");
    return qv_cache_open(&f->cache, f->dir, &f->opts);
}

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    f->lmdb = *state != NULL;
    qv_cache_options o = QV_CACHE_OPTIONS_INIT;
    f->opts = o;
    QVT_OK(open_fixture(f));
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    qv_cache_close(f->cache);
    qvt_rmtree(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

static qv_value *bytes_value(size_t n, uint8_t seed) {
    uint8_t *b = malloc(n);
    for (size_t i = 0; i < n; i++) b[i] = (uint8_t)(seed + i * 31);
    qv_value *v;
    QVT_OK(qv_value_new_bytes(&v, b, n));
    free(b);
    return v;
}

static uint64_t stat_of(qv_cache *c, int which) {
    uint64_t v;
    QVT_OK(qv_cache_stat(c, which, &v));
    return v;
}

static void store_int(qv_cache *c, const char *name, int64_t x, int64_t result) {
    qv_value *args = qvt_int_args(x), *r;
    QVT_OK(qv_value_new_int(&r, result));
    QVT_OK(qv_cache_store_value(c, name, "1", args, NULL, r, NULL));
    qv_value_free(args);
    qv_value_free(r);
}

static qv_digest key_of(const char *name, int64_t x) {
    qv_value *args = qvt_int_args(x);
    qv_digest d;
    QVT_OK(qv_call_digest(&d, name, "1", args, NULL));
    qv_value_free(args);
    return d;
}

static void miss_then_hit(void **state) {
    fixture *f = *state;
    qv_digest k = key_of("t.add", 1);
    qv_value *r;
    assert_int_equal(qv_cache_get_value(f->cache, &k, &r), QV_NOTFOUND);
    assert_null(r);
    assert_int_equal(qv_cache_contains(f->cache, &k), QV_NOTFOUND);
    store_int(f->cache, "t.add", 1, 3);
    QVT_OK(qv_cache_contains(f->cache, &k));
    QVT_OK(qv_cache_get_value(f->cache, &k, &r));
    int64_t i;
    QVT_OK(qv_value_get_int(r, &i));
    assert_int_equal(i, 3);
    qv_value_free(r);
    void *raw;
    size_t len;
    QVT_OK(qv_cache_get(f->cache, &k, &raw, &len));
    assert_int_equal(len, 1);
    assert_int_equal(((uint8_t *)raw)[0], 0x03);
    qv_free(raw);
    assert_int_equal(stat_of(f->cache, QV_STAT_HITS), 2);
    assert_int_equal(stat_of(f->cache, QV_STAT_MISSES), 1);
    assert_int_equal(stat_of(f->cache, QV_STAT_ENTRIES), 1);
    assert_int_equal(stat_of(f->cache, QV_STAT_STORES), 1);
    assert_true(stat_of(f->cache, QV_STAT_BYTES) > 0);
}

static void null_result_is_cached(void **state) {
    fixture *f = *state;
    qv_value *args = qvt_int_args(9), *r;
    QVT_OK(qv_value_new_null(&r));
    QVT_OK(qv_cache_store_value(f->cache, "t.none", NULL, args, NULL, r, NULL));
    qv_value_free(r);
    qv_digest k;
    QVT_OK(qv_call_digest(&k, "t.none", NULL, args, NULL));
    QVT_OK(qv_cache_get_value(f->cache, &k, &r));
    assert_int_equal(qv_value_type(r), QV_TYPE_NULL);
    qv_value_free(r);
    qv_value_free(args);
}

static void record_holds_the_call(void **state) {
    fixture *f = *state;
    qv_value *args, *kwargs, *k, *v, *meta, *result;
    QVT_OK(qv_value_new_list(&args));
    QVT_OK(qv_value_new_text(&v, "alpha", 5));
    QVT_OK(qv_value_list_append(args, v));
    QVT_OK(qv_value_new_map(&kwargs));
    QVT_OK(qv_value_new_text(&k, "scale", 5));
    QVT_OK(qv_value_new_float(&v, 0.5));
    QVT_OK(qv_value_map_set(kwargs, k, v));
    QVT_OK(qv_value_new_float(&result, 2.25));
    QVT_OK(qv_value_new_map(&meta));
    QVT_OK(qv_value_new_text(&k, "project", 7));
    QVT_OK(qv_value_new_text(&v, "p1", 2));
    QVT_OK(qv_value_map_set(meta, k, v));
    void *meta_enc;
    size_t meta_len;
    QVT_OK(qv_value_encode(meta, &meta_enc, &meta_len));
    qv_store_info info = QV_STORE_INFO_INIT;
    info.start_ns = 1700000000123456789;
    info.duration_ns = 4200;
    info.lang = "python";
    info.meta = meta_enc;
    info.meta_len = meta_len;
    QVT_OK(qv_cache_store_value(f->cache, "t.feature", "2", args, kwargs, result, &info));
    qv_digest key;
    QVT_OK(qv_call_digest(&key, "t.feature", "2", args, kwargs));
    qv_value *rec;
    QVT_OK(qv_cache_load(f->cache, &key, &rec));
    const char *s;
    size_t n;
    QVT_OK(qv_value_get_text(qv_value_map_find(rec, "name"), &s, &n));
    assert_string_equal(s, "t.feature");
    QVT_OK(qv_value_get_text(qv_value_map_find(rec, "version"), &s, &n));
    assert_string_equal(s, "2");
    QVT_OK(qv_value_get_text(qv_value_map_find(rec, "lang"), &s, &n));
    assert_string_equal(s, "python");
    assert_int_equal(qv_value_compare(qv_value_map_find(rec, "args"), args), 0);
    assert_int_equal(qv_value_compare(qv_value_map_find(rec, "kwargs"), kwargs), 0);
    assert_int_equal(qv_value_compare(qv_value_map_find(rec, "result"), result), 0);
    assert_int_equal(qv_value_compare(qv_value_map_find(rec, "meta"), meta), 0);
    int64_t t;
    QVT_OK(qv_value_get_int(qv_value_map_find(rec, "start_ns"), &t));
    assert_true(t == 1700000000123456789);
    QVT_OK(qv_value_get_int(qv_value_map_find(rec, "duration_ns"), &t));
    assert_int_equal(t, 4200);
    qv_value_free(rec);
    qv_free(meta_enc);
    qv_value_free(meta);
    qv_value_free(args);
    qv_value_free(kwargs);
    qv_value_free(result);
}

static void large_values_stored_once_by_digest(void **state) {
    fixture *f = *state;
    qv_value *big = bytes_value(4096, 1), *a1, *a2, *r1, *r2, *big2;
    QVT_OK(qv_value_clone(&big2, big));
    QVT_OK(qv_value_new_list(&a1));
    QVT_OK(qv_value_list_append(a1, big));
    QVT_OK(qv_value_new_list(&a2));
    QVT_OK(qv_value_list_append(a2, big2));
    /* the same 4 KiB argument to two functions; results small and large */
    QVT_OK(qv_value_new_int(&r1, 1));
    r2 = bytes_value(2048, 7);
    QVT_OK(qv_cache_store_value(f->cache, "t.len", NULL, a1, NULL, r1, NULL));
    QVT_OK(qv_cache_store_value(f->cache, "t.copy", NULL, a2, NULL, r2, NULL));
    assert_int_equal(stat_of(f->cache, QV_STAT_ENTRIES), 2);
    assert_int_equal(stat_of(f->cache, QV_STAT_VALUES), 2); /* the argument once, the big result */
    qv_digest k;
    QVT_OK(qv_call_digest(&k, "t.copy", NULL, a2, NULL));
    qv_value *got;
    QVT_OK(qv_cache_get_value(f->cache, &k, &got));
    assert_int_equal(qv_value_compare(got, r2), 0);
    qv_value_free(got);
    qv_value *rec;
    QVT_OK(qv_cache_load(f->cache, &k, &rec));
    assert_int_equal(qv_value_compare(qv_value_map_find(rec, "args"), a2), 0);
    qv_value_free(rec);
    /* evicting one call keeps the shared argument, drops its own result */
    QVT_OK(qv_cache_evict(f->cache, &k));
    assert_int_equal(qv_cache_evict(f->cache, &k), QV_NOTFOUND);
    assert_int_equal(stat_of(f->cache, QV_STAT_VALUES), 1);
    QVT_OK(qv_call_digest(&k, "t.len", NULL, a1, NULL));
    QVT_OK(qv_cache_evict(f->cache, &k));
    assert_int_equal(stat_of(f->cache, QV_STAT_VALUES), 0);
    assert_int_equal(stat_of(f->cache, QV_STAT_ENTRIES), 0);
    uint64_t freed;
    QVT_OK(qv_cache_gc(f->cache, &freed));
    assert_int_equal(freed, 0);
    qv_value_free(a1);
    qv_value_free(a2);
    qv_value_free(r1);
    qv_value_free(r2);
}

static void rerun_replaces(void **state) {
    fixture *f = *state;
    store_int(f->cache, "t.rerun", 5, 10);
    uint64_t bytes = stat_of(f->cache, QV_STAT_BYTES);
    store_int(f->cache, "t.rerun", 5, 11);
    assert_int_equal(stat_of(f->cache, QV_STAT_ENTRIES), 1);
    assert_int_equal(stat_of(f->cache, QV_STAT_BYTES), bytes);
    qv_digest k = key_of("t.rerun", 5);
    qv_value *r;
    QVT_OK(qv_cache_get_value(f->cache, &k, &r));
    int64_t i;
    QVT_OK(qv_value_get_int(r, &i));
    assert_int_equal(i, 11);
    qv_value_free(r);
}

/* A rerun whose record holds, by reference, the same value as the record it
 * replaces: the old record lets go of the value before the new one takes
 * it, so the value stays, counted once. */
static void rerun_keeps_a_value_both_records_hold(void **state) {
    fixture *f = *state;
    qv_value *args, *r;
    for (int64_t result = 1; result <= 2; result++) {
        QVT_OK(qv_value_new_list(&args));
        QVT_OK(qv_value_list_append(args, bytes_value(4096, 7))); /* by reference: above the inline limit */
        QVT_OK(qv_value_new_int(&r, result));
        QVT_OK(qv_cache_store_value(f->cache, "t.rerun_ref", NULL, args, NULL, r, NULL));
        qv_value_free(r);
        if (result == 2) break;
        qv_value_free(args);
    }
    assert_int_equal(stat_of(f->cache, QV_STAT_ENTRIES), 1);
    assert_int_equal(stat_of(f->cache, QV_STAT_VALUES), 1);
    qv_digest k;
    QVT_OK(qv_call_digest(&k, "t.rerun_ref", NULL, args, NULL));
    QVT_OK(qv_cache_get_value(f->cache, &k, &r));
    int64_t i;
    QVT_OK(qv_value_get_int(r, &i));
    assert_int_equal(i, 2);
    qv_value_free(r);
    uint64_t bytes = stat_of(f->cache, QV_STAT_BYTES), freed, bad;
    QVT_OK(qv_cache_verify(f->cache, 0, &bad));
    assert_int_equal(bad, 0);
    QVT_OK(qv_cache_gc(f->cache, &freed));
    assert_int_equal(freed, 0);                                /* the value is held, */
    assert_int_equal(stat_of(f->cache, QV_STAT_BYTES), bytes); /* and counted once */
    QVT_OK(qv_cache_evict(f->cache, &k));
    assert_int_equal(stat_of(f->cache, QV_STAT_VALUES), 0); /* its one reference went with the record */
    qv_value_free(args);
}

static void query_by_name(void **state) {
    fixture *f = *state;
    for (int i = 0; i < 20; i++) store_int(f->cache, "t.even", 2 * i, i);
    for (int i = 0; i < 7; i++) store_int(f->cache, "t.odd", 2 * i + 1, i);
    qv_iter *it;
    QVT_OK(qv_cache_query(&it, f->cache, "t.even"));
    assert_int_equal(qv_iter_count(it), 20);
    qv_digest k;
    int seen = 0;
    while (qv_iter_next(it, &k) == QV_OK) {
        qv_value *rec;
        QVT_OK(qv_cache_load(f->cache, &k, &rec));
        const char *s;
        size_t n;
        QVT_OK(qv_value_get_text(qv_value_map_find(rec, "name"), &s, &n));
        assert_string_equal(s, "t.even");
        qv_value_free(rec);
        seen++;
    }
    assert_int_equal(seen, 20);
    qv_iter_free(it);
    QVT_OK(qv_cache_query(&it, f->cache, "t.odd"));
    assert_int_equal(qv_iter_count(it), 7);
    qv_iter_free(it);
    QVT_OK(qv_cache_query(&it, f->cache, "t.none"));
    assert_int_equal(qv_iter_count(it), 0);
    assert_int_equal(qv_iter_next(it, &k), QV_NOTFOUND);
    qv_iter_free(it);
    QVT_OK(qv_cache_query(&it, f->cache, NULL));
    assert_int_equal(qv_iter_count(it), 27);
    qv_iter_free(it);
    qv_iter_free(NULL);
}

static void size_limit_evicts_oldest(void **state) {
    fixture *f = *state;
    qv_cache_close(f->cache);
    f->opts.max_bytes = 64 * 1024;
    if (f->lmdb) QVT_OK(open_fixture(f));
    else QVT_OK(qv_cache_open(&f->cache, ":memory:", &f->opts));
    for (int i = 0; i < 200; i++) {
        qv_value *args = qvt_int_args(i), *r = bytes_value(2048, (uint8_t)i);
        QVT_OK(qv_cache_store_value(f->cache, "t.big", NULL, args, NULL, r, NULL));
        qv_value_free(args);
        qv_value_free(r);
    }
    assert_true(stat_of(f->cache, QV_STAT_BYTES) <= 64 * 1024);
    assert_true(stat_of(f->cache, QV_STAT_EVICTIONS) > 0);
    assert_true(stat_of(f->cache, QV_STAT_ENTRIES) < 200);
    qv_value *args = qvt_int_args(199), *r;
    qv_digest k;
    QVT_OK(qv_call_digest(&k, "t.big", NULL, args, NULL));
    QVT_OK(qv_cache_get_value(f->cache, &k, &r)); /* the newest stays */
    qv_value_free(r);
    qv_value_free(args);
    args = qvt_int_args(0);
    QVT_OK(qv_call_digest(&k, "t.big", NULL, args, NULL));
    assert_int_equal(qv_cache_contains(f->cache, &k), QV_NOTFOUND); /* the oldest went */
    qv_value_free(args);
    uint64_t bytes = stat_of(f->cache, QV_STAT_BYTES), freed;
    QVT_OK(qv_cache_gc(f->cache, &freed));
    assert_int_equal(freed, 0);                                /* eviction freed values itself */
    assert_int_equal(stat_of(f->cache, QV_STAT_BYTES), bytes); /* and kept the count exact */
}

static void gc_and_verify_agree_on_a_healthy_cache(void **state) {
    fixture *f = *state;
    for (int i = 0; i < 30; i++) {
        qv_value *args = qvt_int_args(i), *r = bytes_value(i % 2 ? 1000 : 10, (uint8_t)i);
        QVT_OK(qv_cache_store_value(f->cache, "t.gc", NULL, args, NULL, r, NULL));
        qv_value_free(args);
        qv_value_free(r);
    }
    uint64_t bytes = stat_of(f->cache, QV_STAT_BYTES), freed, bad;
    QVT_OK(qv_cache_gc(f->cache, &freed));
    assert_int_equal(freed, 0);
    assert_int_equal(stat_of(f->cache, QV_STAT_BYTES), bytes);
    QVT_OK(qv_cache_verify(f->cache, 0, &bad));
    assert_int_equal(bad, 0);
    QVT_OK(qv_cache_sync(f->cache));
}

static void store_refuses_bad_input(void **state) {
    fixture *f = *state;
    uint8_t result[] = {0x01};
    uint8_t not_a_call[] = {0x82, 0x01, 0x02};
    uint8_t wrong_marker[] = {0x85, 0x61, 0x78, 0x61, 0x66, 0xf6, 0x80, 0xa0};
    assert_int_equal(qv_cache_store(f->cache, NULL, not_a_call, 3, result, 1, NULL), QV_EINVAL);
    assert_non_null(strstr(qv_errmsg(), "quiver/call/v1"));
    assert_int_equal(qv_cache_store(f->cache, NULL, wrong_marker, sizeof wrong_marker, result, 1, NULL), QV_EINVAL);
    uint8_t bad_result[] = {0x18, 0x01};
    /* a well-formed call with a non-canonical result */
    qv_value *args = qvt_int_args(1);
    qv_encoder *enc;
    QVT_OK(qv_encoder_new(&enc));
    QVT_OK(qv_encoder_list(enc, 5));
    QVT_OK(qv_encoder_text(enc, "quiver/call/v1", 14));
    QVT_OK(qv_encoder_text(enc, "t.raw", 5));
    QVT_OK(qv_encoder_null(enc));
    QVT_OK(qv_encoder_value(enc, args));
    QVT_OK(qv_encoder_map_begin(enc));
    QVT_OK(qv_encoder_map_end(enc));
    const void *call;
    size_t call_len;
    QVT_OK(qv_encoder_finish(enc, &call, &call_len));
    assert_int_equal(qv_cache_store(f->cache, NULL, call, call_len, bad_result, 2, NULL), QV_EDECODE);
    qv_store_info old = {99, 0, 0, 0, NULL, NULL, 0};
    assert_int_equal(qv_cache_store(f->cache, NULL, call, call_len, result, 1, &old), QV_EINVAL);
    qv_store_info badmeta = QV_STORE_INFO_INIT;
    badmeta.meta = result; /* an int is not a map */
    badmeta.meta_len = 1;
    assert_int_equal(qv_cache_store(f->cache, NULL, call, call_len, result, 1, &badmeta), QV_EINVAL);
    /* the raw call with key NULL lands under its call digest */
    QVT_OK(qv_cache_store(f->cache, NULL, call, call_len, result, 1, NULL));
    qv_digest k;
    QVT_OK(qv_call_digest(&k, "t.raw", NULL, args, NULL));
    QVT_OK(qv_cache_contains(f->cache, &k));
    qv_encoder_free(enc);
    qv_value_free(args);
    assert_int_equal(qv_cache_contains(NULL, &k), QV_EINVAL);
    assert_int_equal(qv_cache_get_with(f->cache, &k, NULL, NULL), QV_EINVAL);
    qv_cache_close(NULL);
}

static void options_are_versioned(void **state) {
    qv_cache_options o;
    QVT_OK(qv_cache_options_init(&o, QV_CACHE_OPTIONS_VERSION));
    assert_int_equal(o.version, QV_CACHE_OPTIONS_VERSION);
    assert_int_equal(o.durability, QV_DURABILITY_SAFE);
    assert_int_equal(qv_cache_options_init(&o, 0), QV_EINVAL);
    assert_int_equal(qv_cache_options_init(&o, QV_CACHE_OPTIONS_VERSION + 1), QV_EINVAL);
    qv_store_info info;
    QVT_OK(qv_store_info_init(&info, QV_STORE_INFO_VERSION));
    assert_null(info.lang);
    char *dir = qvt_tempdir("opts");
    qv_cache *c = (qv_cache *)1;
    o.version = 7;
    assert_int_equal(qv_cache_open(&c, dir, &o), QV_EINVAL);
    assert_null(c);
    QVT_OK(qv_cache_options_init(&o, 1));
    o.durability = 9;
    assert_int_equal(qv_cache_open(&c, dir, &o), QV_EINVAL);
    assert_int_equal(qv_cache_open(&c, NULL, NULL), QV_EINVAL);
    qvt_rmtree(dir);
    free(dir);
}

static void readonly_handle_refuses_writes(void **state) {
    char *dir = qvt_tempdir("ro");
    qv_cache *w, *r;
    QVT_OK(qv_cache_open(&w, dir, NULL));
    store_int(w, "t.ro", 1, 2);
    qv_cache_close(w);
    qv_cache_options o = QV_CACHE_OPTIONS_INIT;
    o.flags = QV_CACHE_READONLY;
    QVT_OK(qv_cache_open(&r, dir, &o));
    qv_digest k = key_of("t.ro", 1);
    QVT_OK(qv_cache_contains(r, &k));
    qv_value *args = qvt_int_args(2), *res;
    QVT_OK(qv_value_new_int(&res, 3));
    assert_int_equal(qv_cache_store_value(r, "t.ro", "1", args, NULL, res, NULL), QV_EREADONLY);
    assert_non_null(strstr(qv_errmsg(), "read-only"));
    assert_int_equal(qv_cache_evict(r, &k), QV_EREADONLY);
    assert_int_equal(qv_cache_gc(r, NULL), QV_EREADONLY);
    qv_value_free(args);
    qv_value_free(res);
    qv_cache_close(r);
    qvt_rmtree(dir);
    free(dir);
}

static void same_path_shares_one_environment(void **state) {
    char *dir = qvt_tempdir("shared");
    qv_cache *a, *b;
    QVT_OK(qv_cache_open(&a, dir, NULL));
    QVT_OK(qv_cache_open(&b, dir, NULL));
    store_int(a, "t.share", 1, 1);
    qv_digest k = key_of("t.share", 1);
    QVT_OK(qv_cache_contains(b, &k));
    qv_cache_close(a);
    QVT_OK(qv_cache_contains(b, &k)); /* b's environment outlives a */
    assert_non_null(strstr(qv_cache_path(b), dir + (dir[0] == '/' ? 1 : 0)));
    qv_cache_close(b);
    qvt_rmtree(dir);
    free(dir);
}

static void *other_thread_errmsg(void *arg) {
    qv_value *v;
    qv_value_decode(&v, "\x18\x01", 2);
    return strdup(qv_errmsg());
}

static void error_messages_are_per_thread(void **state) {
    qv_value *v;
    assert_int_equal(qv_value_decode(&v, "", 0), QV_EDECODE);
    char *mine = strdup(qv_errmsg());
    pthread_t t;
    void *theirs;
    pthread_create(&t, NULL, other_thread_errmsg, NULL);
    pthread_join(t, &theirs);
    assert_string_equal(qv_errmsg(), mine); /* untouched by the other thread */
    assert_non_null(strstr(theirs, "non-shortest"));
    assert_non_null(strstr(mine, "empty input"));
    free(mine);
    free(theirs);
}

/* A caller's key must be the digest of the call it stores: otherwise the
 * result would be filed under another call, for every language to read. */
static void store_refuses_a_key_that_is_not_the_calls_digest(void **state) {
    fixture *f = *state;
    qv_value *args = qvt_int_args(1);
    qv_encoder *enc;
    QVT_OK(qv_encoder_new(&enc));
    QVT_OK(qv_encoder_list(enc, 5));
    QVT_OK(qv_encoder_text(enc, "quiver/call/v1", 14));
    QVT_OK(qv_encoder_text(enc, "t.key", 5));
    QVT_OK(qv_encoder_null(enc));
    QVT_OK(qv_encoder_value(enc, args));
    QVT_OK(qv_encoder_map_begin(enc));
    QVT_OK(qv_encoder_map_end(enc));
    const void *call;
    size_t call_len;
    QVT_OK(qv_encoder_finish(enc, &call, &call_len));
    qv_digest right, wrong;
    QVT_OK(qv_call_digest(&right, "t.key", NULL, args, NULL));
    wrong = right;
    wrong.bytes[15] ^= 1;
    static const uint8_t result[] = {0x07};
    assert_int_equal(qv_cache_store(f->cache, &wrong, call, call_len, result, 1, NULL), QV_EINVAL);
    if (!strstr(qv_errmsg(), "not the digest")) fail_msg("message: %s", qv_errmsg());
    assert_int_equal(qv_cache_contains(f->cache, &wrong), QV_NOTFOUND);
    assert_int_equal(qv_cache_contains(f->cache, &right), QV_NOTFOUND);
    assert_int_equal(stat_of(f->cache, QV_STAT_ENTRIES), 0);
    QVT_OK(qv_cache_store(f->cache, &right, call, call_len, result, 1, NULL));
    QVT_OK(qv_cache_contains(f->cache, &right));
    uint64_t bad;
    QVT_OK(qv_cache_verify(f->cache, 0, &bad));
    assert_int_equal(bad, 0);
    qv_encoder_free(enc);
    qv_value_free(args);
}

/* A decoder that makes a memoized call of its own: the hit's callback stores
 * another call, and on LMDB that store must grow a small map. Both need the
 * hit to have let go of its transaction and the store's lock before calling
 * out; if it did not, the test hangs until the alarm kills it. */
typedef struct {
    qv_cache *c;
    size_t big;
    qv_status st;
} nested_store;

static qv_status store_from_callback(const void *data, size_t len, void *userdata) {
    nested_store *n = userdata;
    qv_value *args = qvt_int_args(2), *r = bytes_value(n->big, 7);
    n->st = qv_cache_store_value(n->c, "t.inner", NULL, args, NULL, r, NULL);
    qv_value_free(args);
    qv_value_free(r);
    return n->st;
}

static void callback_may_store_and_grow(void **state) {
    fixture *f = *state;
    if (f->lmdb) {
        qv_cache_close(f->cache);
        f->opts.map_size = (uint64_t)1 << 20;
        QVT_OK(open_fixture(f));
    }
    store_int(f->cache, "t.outer", 1, 3);
    qv_digest k = key_of("t.outer", 1);
    nested_store n = {f->cache, (size_t)2 << 20, QV_EINVAL};
    alarm(60);
    QVT_OK(qv_cache_get_with(f->cache, &k, store_from_callback, &n));
    alarm(0);
    QVT_OK(n.st);
    qv_value *args = qvt_int_args(2);
    qv_digest inner;
    QVT_OK(qv_call_digest(&inner, "t.inner", NULL, args, NULL));
    qv_value_free(args);
    QVT_OK(qv_cache_contains(f->cache, &inner));
    if (f->lmdb) assert_true(stat_of(f->cache, QV_STAT_MAP_SIZE) > ((uint64_t)2 << 20));
}

#define BOTH(fn)                                                                                      \
    cmocka_unit_test_prestate_setup_teardown(fn, setup, teardown, NULL),                             \
        cmocka_unit_test_prestate_setup_teardown(fn, setup, teardown, (void *)1)

int main(void) {
    const struct CMUnitTest tests[] = {
        BOTH(miss_then_hit),
        BOTH(null_result_is_cached),
        BOTH(record_holds_the_call),
        BOTH(large_values_stored_once_by_digest),
        BOTH(rerun_replaces),
        BOTH(rerun_keeps_a_value_both_records_hold),
        BOTH(query_by_name),
        BOTH(size_limit_evicts_oldest),
        BOTH(gc_and_verify_agree_on_a_healthy_cache),
        BOTH(store_refuses_bad_input),
        BOTH(callback_may_store_and_grow),
        BOTH(store_refuses_a_key_that_is_not_the_calls_digest),
        cmocka_unit_test(options_are_versioned),
        cmocka_unit_test(readonly_handle_refuses_writes),
        cmocka_unit_test(same_path_shares_one_environment),
        cmocka_unit_test(error_messages_are_per_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
