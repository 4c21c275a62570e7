/* The store vtable (store.h), each test run on the memory store and on LMDB,
 * so the two answer alike: get, put, delete, overwrite, count, scans in key
 * order (from a key, stopped early, over a write transaction's own changes),
 * abort. Then what only the memory store promises: readers do not wait for
 * a writer's transaction, and a memory cache has a size limit by default. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"
#include "store.h"

static const char *const tables[] = {"a", "b"};

typedef struct {
    char *dir;
    qv_store *s;
} fixture;

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    qv_store_config cfg = {tables, 2, QV_DURABILITY_FAST, 0, 0, 0, 0};
    if (*state) {
        f->dir = qvt_tempdir("store");
        QVT_OK(qv__store_lmdb_open(&f->s, f->dir, &cfg));
    } else {
        QVT_OK(qv__store_memory_open(&f->s, &cfg));
    }
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    f->s->ops->close(f->s);
    qvt_rmtree(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

static qv_status put(qv_store *s, qv_txn *t, int table, const char *k, const char *v) {
    return s->ops->put(s, t, table, k, strlen(k), v, strlen(v));
}

/* QV_OK and the value equals want, or QV_NOTFOUND when want is NULL. */
static void expect(qv_store *s, qv_txn *t, int table, const char *k, const char *want) {
    const void *v;
    size_t n;
    qv_status st = s->ops->get(s, t, table, k, strlen(k), &v, &n);
    if (!want) {
        if (st != QV_NOTFOUND) fail_msg("%s: expected absent, got %s", k, qv_status_name(st));
        return;
    }
    if (st) fail_msg("%s: %s", k, qv_status_name(st));
    if (n != strlen(want) || memcmp(v, want, n)) fail_msg("%s: got %.*s, want %s", k, (int)n, (const char *)v, want);
}

static uint64_t count(qv_store *s, qv_txn *t, int table) {
    uint64_t n;
    QVT_OK(s->ops->count(s, t, table, &n));
    return n;
}

static void read_expect(qv_store *s, int table, const char *k, const char *want) {
    qv_txn *t;
    QVT_OK(s->ops->read_begin(s, &t));
    expect(s, t, table, k, want);
    s->ops->read_end(s, t);
}

static void get_put_del_count(void **state) {
    qv_store *s = ((fixture *)*state)->s;
    qv_txn *w;
    QVT_OK(s->ops->write_begin(s, &w));
    QVT_OK(put(s, w, 0, "k1", "v1"));
    QVT_OK(put(s, w, 0, "k2", "v2"));
    QVT_OK(put(s, w, 1, "k1", "other table"));
    expect(s, w, 0, "k1", "v1"); /* a write transaction sees its own changes */
    assert_int_equal(count(s, w, 0), 2);
    QVT_OK(put(s, w, 0, "k1", "v1 again")); /* overwrite inside one transaction */
    assert_int_equal(count(s, w, 0), 2);
    expect(s, w, 0, "k1", "v1 again");
    QVT_OK(s->ops->commit(s, w));

    read_expect(s, 0, "k1", "v1 again");
    read_expect(s, 0, "k2", "v2");
    read_expect(s, 1, "k1", "other table");
    read_expect(s, 1, "k2", NULL);

    QVT_OK(s->ops->write_begin(s, &w));
    QVT_OK(put(s, w, 0, "k2", "v2 new"));     /* overwrite a committed key */
    QVT_OK(s->ops->del(s, w, 0, "k1", 2));   /* delete one */
    assert_int_equal(s->ops->del(s, w, 0, "k1", 2), QV_NOTFOUND); /* twice */
    assert_int_equal(s->ops->del(s, w, 0, "nope", 4), QV_NOTFOUND);
    expect(s, w, 0, "k1", NULL);
    assert_int_equal(count(s, w, 0), 1);
    read_expect(s, 0, "k1", "v1 again"); /* readers see the last commit */
    QVT_OK(put(s, w, 0, "k1", "back")); /* deleted, then put again */
    assert_int_equal(count(s, w, 0), 2);
    QVT_OK(s->ops->del(s, w, 0, "k1", 2));
    QVT_OK(s->ops->commit(s, w));
    read_expect(s, 0, "k1", NULL);
    read_expect(s, 0, "k2", "v2 new");
    qv_txn *r;
    QVT_OK(s->ops->read_begin(s, &r));
    assert_int_equal(count(s, r, 0), 1);
    assert_int_equal(count(s, r, 1), 1);
    s->ops->read_end(s, r);

    /* abort leaves nothing behind */
    QVT_OK(s->ops->write_begin(s, &w));
    QVT_OK(put(s, w, 0, "k3", "v3"));
    QVT_OK(s->ops->del(s, w, 0, "k2", 2));
    s->ops->abort(s, w);
    read_expect(s, 0, "k3", NULL);
    read_expect(s, 0, "k2", "v2 new");
    /* an empty value is a value */
    QVT_OK(s->ops->write_begin(s, &w));
    QVT_OK(put(s, w, 0, "k4", ""));
    QVT_OK(s->ops->commit(s, w));
    read_expect(s, 0, "k4", "");
}

/* ------------------------------------------------------------- scans */

#define NKEYS 3000

typedef struct {
    uint8_t prev[32];
    size_t prev_len, n, stop_after;
    int have_prev, ordered;
    const uint8_t *from;
    size_t flen;
    int below_from;
} scan_check;

static int key_cmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen) {
    int c = memcmp(a, b, alen < blen ? alen : blen);
    return c ? c : (alen > blen) - (alen < blen);
}

static int check_order(const void *key, size_t klen, const void *val, size_t vlen, void *userdata) {
    scan_check *c = userdata;
    if (c->have_prev && key_cmp(c->prev, c->prev_len, key, klen) >= 0) c->ordered = 0;
    if (c->from && key_cmp(key, klen, c->from, c->flen) < 0) c->below_from = 1;
    /* each value is its key reversed: a scan hands out matching pairs */
    if (vlen != klen) c->ordered = 0;
    for (size_t i = 0; i < klen && vlen == klen; i++)
        if (((const uint8_t *)val)[i] != ((const uint8_t *)key)[klen - 1 - i]) c->ordered = 0;
    memcpy(c->prev, key, klen);
    c->prev_len = klen;
    c->have_prev = 1;
    c->n++;
    return c->stop_after && c->n >= c->stop_after;
}

static size_t random_key(uint8_t *k, uint64_t *seed) {
    *seed = *seed * 6364136223846793005ull + 1442695040888963407ull;
    size_t len = 1 + (*seed >> 33) % 24;
    for (size_t i = 0; i < len; i++) {
        *seed = *seed * 6364136223846793005ull + 1442695040888963407ull;
        k[i] = (uint8_t)(*seed >> 56) & 0x3f; /* a small alphabet: many shared prefixes */
    }
    return len;
}

static qv_status put_reversed(qv_store *s, qv_txn *w, const uint8_t *k, size_t len) {
    uint8_t v[32];
    for (size_t i = 0; i < len; i++) v[i] = k[len - 1 - i];
    return s->ops->put(s, w, 0, k, len, v, len);
}

static scan_check scan(qv_store *s, qv_txn *t, const uint8_t *from, size_t flen, size_t stop_after) {
    scan_check c;
    memset(&c, 0, sizeof c);
    c.ordered = 1;
    c.from = from;
    c.flen = flen;
    c.stop_after = stop_after;
    QVT_OK(s->ops->scan(s, t, 0, from, flen, check_order, &c));
    assert_true(c.ordered);
    assert_false(c.below_from);
    return c;
}

static void scans_are_in_key_order(void **state) {
    qv_store *s = ((fixture *)*state)->s;
    uint64_t seed = 42;
    uint8_t k[32];
    qv_txn *w, *r;
    QVT_OK(s->ops->write_begin(s, &w));
    for (int i = 0; i < NKEYS; i++) {
        size_t len = random_key(k, &seed);
        QVT_OK(put_reversed(s, w, k, len));
    }
    uint64_t n = count(s, w, 0);
    assert_true(n > NKEYS / 2); /* duplicates among short keys overwrite */
    assert_int_equal(scan(s, w, NULL, 0, 0).n, n);
    QVT_OK(s->ops->commit(s, w));

    QVT_OK(s->ops->read_begin(s, &r));
    assert_int_equal(scan(s, r, NULL, 0, 0).n, n);
    assert_int_equal(scan(s, r, NULL, 0, 10).n, 10); /* stopped early */
    assert_int_equal(scan(s, r, NULL, 0, 100).n, 100);
    uint8_t from[] = {0x20, 0x01};
    scan_check c = scan(s, r, from, sizeof from, 0);
    s->ops->read_end(s, r);
    assert_true(c.n > 0 && c.n < n);

    /* a write transaction scans its own changes merged with the last commit */
    QVT_OK(s->ops->write_begin(s, &w));
    seed = 42;
    size_t deleted = 0;
    for (int i = 0; i < NKEYS / 3; i++) {
        size_t len = random_key(k, &seed);
        if (s->ops->del(s, w, 0, k, len) == QV_OK) deleted++;
    }
    uint64_t seed2 = 7;
    size_t added = 0;
    for (int i = 0; i < 500; i++) {
        size_t len = random_key(k, &seed2);
        const void *v;
        size_t vl;
        if (s->ops->get(s, w, 0, k, len, &v, &vl) == QV_NOTFOUND) added++;
        QVT_OK(put_reversed(s, w, k, len));
    }
    assert_int_equal(count(s, w, 0), n - deleted + added);
    assert_int_equal(scan(s, w, NULL, 0, 0).n, n - deleted + added);
    QVT_OK(s->ops->commit(s, w));
    QVT_OK(s->ops->read_begin(s, &r));
    assert_int_equal(scan(s, r, NULL, 0, 0).n, n - deleted + added);
    assert_int_equal(count(s, r, 0), n - deleted + added);
    s->ops->read_end(s, r);
}

/* Many entries over many commits: every one is found, deletes stick. */
static void many_entries(void **state) {
    qv_store *s = ((fixture *)*state)->s;
    size_t total = getenv("QV_SMALL") ? 20000 : 200000;
    qv_txn *w;
    uint8_t key[16];
    for (size_t i = 0; i < total; i += 1000) {
        QVT_OK(s->ops->write_begin(s, &w));
        for (size_t j = i; j < i + 1000; j++) {
            qv__put_be64(key, j * 0x9e3779b97f4a7c15ull);
            qv__put_be64(key + 8, j);
            QVT_OK(s->ops->put(s, w, 1, key, 16, key + 8, 8));
        }
        QVT_OK(s->ops->commit(s, w));
    }
    QVT_OK(s->ops->write_begin(s, &w));
    for (size_t j = 0; j < total; j += 2) {
        qv__put_be64(key, j * 0x9e3779b97f4a7c15ull);
        qv__put_be64(key + 8, j);
        QVT_OK(s->ops->del(s, w, 1, key, 16));
    }
    QVT_OK(s->ops->commit(s, w));
    qv_txn *r;
    QVT_OK(s->ops->read_begin(s, &r));
    assert_int_equal(count(s, r, 1), total / 2);
    for (size_t j = 0; j < total; j++) {
        qv__put_be64(key, j * 0x9e3779b97f4a7c15ull);
        qv__put_be64(key + 8, j);
        const void *v;
        size_t n;
        qv_status st = s->ops->get(s, r, 1, key, 16, &v, &n);
        if (j % 2) {
            if (st || n != 8 || qv__get_be64(v) != j) fail_msg("entry %zu: %s", j, qv_status_name(st));
        } else if (st != QV_NOTFOUND) {
            fail_msg("deleted entry %zu: %s", j, qv_status_name(st));
        }
    }
    s->ops->read_end(s, r);
}

/* ---------------------------------------- readers and a long write */

typedef struct {
    qv_store *s;
    _Atomic int holding; /* 1 while the writer holds its transaction open */
    _Atomic int done;
    _Atomic long reads_while_held;
} long_write;

static void *hold_write(void *p) {
    long_write *lw = p;
    qv_txn *w;
    QVT_OK(lw->s->ops->write_begin(lw->s, &w));
    QVT_OK(put(lw->s, w, 0, "x", "new"));
    atomic_store(&lw->holding, 1);
    struct timespec ts = {0, 300 * 1000 * 1000};
    nanosleep(&ts, NULL);
    atomic_store(&lw->holding, 2);
    QVT_OK(lw->s->ops->commit(lw->s, w));
    return NULL;
}

static void *read_loop(void *p) {
    long_write *lw = p;
    while (!atomic_load(&lw->done)) {
        qv_txn *r;
        QVT_OK(lw->s->ops->read_begin(lw->s, &r));
        const void *v;
        size_t n;
        QVT_OK(lw->s->ops->get(lw->s, r, 0, "x", 1, &v, &n));
        int before_commit = atomic_load(&lw->holding) == 1;
        lw->s->ops->read_end(lw->s, r);
        if (before_commit) atomic_fetch_add(&lw->reads_while_held, 1);
    }
    return NULL;
}

static void readers_do_not_wait_for_a_writer(void **state) {
    qv_store *s = ((fixture *)*state)->s;
    qv_txn *w;
    QVT_OK(s->ops->write_begin(s, &w));
    QVT_OK(put(s, w, 0, "x", "old"));
    QVT_OK(s->ops->commit(s, w));
    long_write lw = {s, 0, 0, 0};
    pthread_t writer, reader;
    alarm(60); /* a reader stuck behind the writer must fail, not hang */
    pthread_create(&writer, NULL, hold_write, &lw);
    while (!atomic_load(&lw.holding)) sched_yield();
    pthread_create(&reader, NULL, read_loop, &lw);
    pthread_join(writer, NULL);
    atomic_store(&lw.done, 1);
    pthread_join(reader, NULL);
    alarm(0);
    /* 300 ms of reading, at well under a millisecond a read even under ThreadSanitizer */
    if (atomic_load(&lw.reads_while_held) < 100)
        fail_msg("the reader read %ld times in the 300 ms the writer held its transaction",
                 atomic_load(&lw.reads_while_held));
    read_expect(s, 0, "x", "new");
}

/* ------------------------------------------------- the default limit */

static void memory_cache_has_a_default_limit(void **state) {
    if (getenv("QV_SMALL")) skip(); /* 288 MiB is too much under ThreadSanitizer */
    qv_cache *c;
    QVT_OK(qv_cache_open_memory(&c));
    uint64_t max, bytes, evictions;
    QVT_OK(qv_cache_stat(c, QV_STAT_MAX_BYTES, &max));
    assert_int_equal(max, (uint64_t)256 << 20);
    /* 36 results of 8 MiB: 288 MiB, past the limit */
    size_t big = (size_t)8 << 20;
    uint8_t *b = malloc(big);
    for (size_t i = 0; i < big; i++) b[i] = (uint8_t)(i * 7);
    for (int i = 0; i < 36; i++) {
        qv_value *args, *x, *r;
        QVT_OK(qv_value_new_list(&args));
        QVT_OK(qv_value_new_int(&x, i));
        QVT_OK(qv_value_list_append(args, x));
        b[0] = (uint8_t)i;
        QVT_OK(qv_value_new_bytes(&r, b, big));
        QVT_OK(qv_cache_store_value(c, "t.default_limit", NULL, args, NULL, r, NULL));
        qv_value_free(args);
        qv_value_free(r);
    }
    free(b);
    QVT_OK(qv_cache_stat(c, QV_STAT_BYTES, &bytes));
    QVT_OK(qv_cache_stat(c, QV_STAT_EVICTIONS, &evictions));
    assert_true(evictions > 0);
    assert_true(bytes <= max);
    qv_cache_close(c);

    /* a limit of the caller's own still wins */
    qv_cache_options o = QV_CACHE_OPTIONS_INIT;
    o.max_bytes = 1 << 20;
    QVT_OK(qv_cache_open(&c, ":memory:", &o));
    QVT_OK(qv_cache_stat(c, QV_STAT_MAX_BYTES, &max));
    assert_int_equal(max, 1 << 20);
    qv_cache_close(c);
}

#define BOTH(fn)                                                                                      \
    cmocka_unit_test_prestate_setup_teardown(fn, setup, teardown, NULL),                             \
        cmocka_unit_test_prestate_setup_teardown(fn, setup, teardown, (void *)1)

int main(void) {
    const struct CMUnitTest tests[] = {
        BOTH(get_put_del_count),
        BOTH(scans_are_in_key_order),
        BOTH(many_entries),
        BOTH(readers_do_not_wait_for_a_writer),
        cmocka_unit_test(memory_cache_has_a_default_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
