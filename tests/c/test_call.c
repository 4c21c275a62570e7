/* qv_call_run: every row of DESIGN section 12's policy, on a real LMDB cache. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"

typedef struct {
    _Atomic int runs;
    qv_status fail;       /* what the body returns instead of a result */
    int64_t sleep_ns;
    uint8_t result[16];   /* the canonical encoding it returns */
    size_t result_len;
    uint8_t seen[64];     /* what hit received */
    size_t seen_len;
    int refuse_hits;      /* hit answers QV_NOTFOUND: an entry the host cannot use */
    pthread_mutex_t lock; /* racing threads' hits write seen */
} spec;
#define SPEC_INIT {.lock = PTHREAD_MUTEX_INITIALIZER}

static qv_status body(const void **result, size_t *len, void *userdata) {
    spec *s = userdata;
    atomic_fetch_add(&s->runs, 1);
    if (s->sleep_ns) {
        struct timespec ts = {0, (long)s->sleep_ns};
        nanosleep(&ts, NULL);
    }
    if (s->fail) return s->fail == QV_EENCODE ? QV_EENCODE : qv_error_set(s->fail, "the body failed on purpose");
    *result = s->result;
    *len = s->result_len;
    return QV_OK;
}

static qv_status hit(const void *data, size_t len, void *userdata) {
    spec *s = userdata;
    if (s->refuse_hits) return QV_NOTFOUND;
    if (len > sizeof s->seen) return QV_ERANGE;
    pthread_mutex_lock(&s->lock);
    memcpy(s->seen, data, len);
    s->seen_len = len;
    pthread_mutex_unlock(&s->lock);
    return QV_OK;
}

/* The call "call.f"(x) and its digest. */
typedef qvt_call call;

static void test_call_head_digests_like_qv_call_digest(void **state) {
    call c = qvt_make_call("call.f", 42);
    qv_value *args, *arg;
    QVT_OK(qv_value_new_list(&args));
    QVT_OK(qv_value_new_int(&arg, 42));
    QVT_OK(qv_value_list_append(args, arg));
    qv_digest d;
    QVT_OK(qv_call_digest(&d, "call.f", NULL, args, NULL));
    assert_memory_equal(d.bytes, c.key.bytes, 16);
    qv_value_free(args);
    qv_encoder *enc;
    QVT_OK(qv_encoder_new(&enc));
    assert_int_equal(qv_encoder_call_head(enc, "\xff", 1, NULL, 0), QV_EENCODE); /* not UTF-8 */
    assert_int_equal(qv_encoder_call_head(NULL, "f", 1, NULL, 0), QV_EINVAL);
    qv_encoder_free(enc);
}

static void set_result(spec *s, uint8_t small_int) {
    s->result[0] = small_int; /* 0..23 encode in one byte */
    s->result_len = 1;
}

static int run(qv_cache *cache, const call *c, spec *s, uint32_t flags, int64_t wait, qv_status *st) {
    qv_call_options o = QV_CALL_OPTIONS_INIT;
    o.flags = flags;
    o.wait_timeout_ns = wait;
    int outcome = 99;
    *st = qv_call_run(&outcome, cache, &c->key, c->bytes, c->len, &o, hit, body, s);
    return outcome;
}

typedef struct {
    char *dir;
    qv_cache *cache;
} fixture;

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    f->dir = qvt_tempdir("call");
    if (qv_cache_open(&f->cache, f->dir, NULL)) return -1;
    *state = f;
    alarm(60);
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    alarm(0);
    qv_cache_close(f->cache);
    qvt_rmtree(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

static void test_miss_runs_once_then_hits(void **state) {
    fixture *f = *state;
    call c = qvt_make_call("call.f", 1);
    spec s = SPEC_INIT;
    set_result(&s, 7);
    qv_status st;
    assert_int_equal(run(f->cache, &c, &s, 0, 0, &st), QV_CALL_STORED);
    QVT_OK(st);
    assert_int_equal(run(f->cache, &c, &s, 0, 0, &st), QV_CALL_HIT);
    QVT_OK(st);
    assert_int_equal(s.runs, 1);
    assert_int_equal(s.seen_len, 1);
    assert_int_equal(s.seen[0], 7);
}

static void test_failure_propagates_and_stores_nothing(void **state) {
    fixture *f = *state;
    call c = qvt_make_call("call.f", 2);
    spec s = SPEC_INIT;
    s.fail = QV_EFAILED;
    qv_status st;
    run(f->cache, &c, &s, 0, 0, &st);
    assert_int_equal(st, QV_EFAILED);
    assert_non_null(strstr(qv_errmsg(), "on purpose"));
    assert_int_equal(qv_cache_contains(f->cache, &c.key), QV_NOTFOUND);
    s.fail = QV_OK;
    set_result(&s, 3);
    assert_int_equal(run(f->cache, &c, &s, 0, 0, &st), QV_CALL_STORED);
    assert_int_equal(s.runs, 2);
}

static void test_unencodable_result_is_returned_unstored(void **state) {
    fixture *f = *state;
    call c = qvt_make_call("call.f", 3);
    spec s = SPEC_INIT;
    s.fail = QV_EENCODE;
    qv_status st;
    assert_int_equal(run(f->cache, &c, &s, 0, 0, &st), QV_EENCODE);
    QVT_OK(st);
    assert_int_equal(qv_cache_contains(f->cache, &c.key), QV_NOTFOUND);
}

static void test_read_only_cache_runs_and_returns_unstored(void **state) {
    fixture *f = *state;
    qv_cache_options o = QV_CACHE_OPTIONS_INIT;
    o.flags = QV_CACHE_READONLY;
    qv_cache *ro;
    QVT_OK(qv_cache_open(&ro, f->dir, &o));
    call c = qvt_make_call("call.f", 4);
    spec s = SPEC_INIT;
    set_result(&s, 9);
    qv_status st;
    assert_int_equal(run(ro, &c, &s, 0, 0, &st), QV_EREADONLY);
    QVT_OK(st);
    assert_int_equal(s.runs, 1);
    assert_int_equal(qv_cache_contains(ro, &c.key), QV_NOTFOUND);
    qv_cache_close(ro);
}

static void test_entry_the_host_cannot_use_is_a_miss_and_replaced(void **state) {
    fixture *f = *state;
    call c = qvt_make_call("call.f", 5);
    spec s = SPEC_INIT;
    set_result(&s, 1);
    qv_status st;
    assert_int_equal(run(f->cache, &c, &s, 0, 0, &st), QV_CALL_STORED);
    s.refuse_hits = 1;
    set_result(&s, 2);
    assert_int_equal(run(f->cache, &c, &s, 0, 0, &st), QV_CALL_STORED);
    QVT_OK(st);
    s.refuse_hits = 0;
    assert_int_equal(run(f->cache, &c, &s, 0, 0, &st), QV_CALL_HIT);
    assert_int_equal(s.seen[0], 2);
    assert_int_equal(s.runs, 2);
}

static void test_rerun_runs_and_replaces(void **state) {
    fixture *f = *state;
    call c = qvt_make_call("call.f", 6);
    spec s = SPEC_INIT;
    set_result(&s, 1);
    qv_status st;
    run(f->cache, &c, &s, 0, 0, &st);
    set_result(&s, 5);
    assert_int_equal(run(f->cache, &c, &s, QV_CALL_RERUN, 0, &st), QV_CALL_STORED);
    assert_int_equal(run(f->cache, &c, &s, 0, 0, &st), QV_CALL_HIT);
    assert_int_equal(s.seen[0], 5);
    assert_int_equal(s.runs, 2);
}

typedef struct {
    qv_cache *cache;
    call c;
    spec *s;
    uint32_t flags;
    int64_t wait;
    int outcome;
    qv_status st;
} racer;

static void *race_main(void *arg) {
    racer *r = arg;
    r->outcome = run(r->cache, &r->c, r->s, r->flags, r->wait, &r->st);
    return NULL;
}

static int race(qv_cache *cache, int64_t x, spec *s, uint32_t flags, int64_t wait, int n) {
    racer rs[8];
    pthread_t th[8];
    for (int i = 0; i < n; i++) {
        rs[i] = (racer){cache, qvt_make_call("call.f", x), s, flags, wait, 99, 0};
        pthread_create(&th[i], NULL, race_main, &rs[i]);
    }
    int stored = 0;
    for (int i = 0; i < n; i++) {
        pthread_join(th[i], NULL);
        QVT_OK(rs[i].st);
        stored += rs[i].outcome == QV_CALL_STORED;
    }
    return stored;
}

static void test_concurrent_misses_run_once(void **state) {
    fixture *f = *state;
    spec s = SPEC_INIT;
    s.sleep_ns = 200000000;
    set_result(&s, 4);
    assert_int_equal(race(f->cache, 7, &s, 0, 0, 6), 1);
    assert_int_equal(s.runs, 1);
}

static void test_no_dedup_runs_each(void **state) {
    fixture *f = *state;
    spec s = SPEC_INIT;
    s.sleep_ns = 200000000;
    set_result(&s, 4);
    race(f->cache, 8, &s, QV_CALL_NO_DEDUP, 0, 4);
    assert_int_equal(s.runs, 4);
}

static void test_waiters_stop_waiting_after_their_timeout(void **state) {
    fixture *f = *state;
    spec s = SPEC_INIT;
    s.sleep_ns = 600000000;
    set_result(&s, 4);
    /* 50 ms of patience against a 600 ms call: everyone runs it */
    race(f->cache, 9, &s, 0, 50000000, 3);
    assert_int_equal(s.runs, 3);
}

static void test_bad_arguments(void **state) {
    fixture *f = *state;
    call c = qvt_make_call("call.f", 10);
    spec s = SPEC_INIT;
    int outcome;
    assert_int_equal(qv_call_run(&outcome, NULL, &c.key, c.bytes, c.len, NULL, hit, body, &s), QV_EINVAL);
    assert_int_equal(qv_call_run(&outcome, f->cache, &c.key, c.bytes, c.len, NULL, hit, NULL, &s), QV_EINVAL);
    qv_call_options o = QV_CALL_OPTIONS_INIT;
    o.version = 99;
    assert_int_equal(qv_call_run(&outcome, f->cache, &c.key, c.bytes, c.len, &o, hit, body, &s), QV_EINVAL);
    assert_int_equal(qv_call_options_init(&o, 99), QV_EINVAL);
    QVT_OK(qv_call_options_init(&o, QV_CALL_OPTIONS_VERSION));
    assert_int_equal(o.flags, 0);
}

/* ------------------------------------------------------ the provider */

typedef struct {
    qv_cache *cache;
    int asked, destroyed;
} provider_state;

static qv_ctx *provide(void *userdata) {
    provider_state *p = userdata;
    p->asked++;
    qv_ctx *ctx = NULL;
    static const uint8_t meta[] = {0xa1, 0x61, 0x70, 0x01}; /* {"p": 1} */
    return qv_ctx_new(&ctx, p->cache, meta, sizeof meta) ? NULL : ctx;
}

static void provider_gone(void *userdata) {
    ((provider_state *)userdata)->destroyed++;
}

static qv_status twice(qv_value **result, const qv_value *args, const qv_value *kwargs, void *userdata) {
    int64_t x;
    qv_status st = qv_value_get_int(qv_value_list_get(args, 0), &x);
    return st ? st : qv_value_new_int(result, 2 * x);
}

static void call_twice(qv_fn *fn, int64_t x) {
    qv_value *args, *arg, *r = NULL;
    QVT_OK(qv_value_new_list(&args));
    QVT_OK(qv_value_new_int(&arg, x));
    QVT_OK(qv_value_list_append(args, arg));
    QVT_OK(qv_fn_call(fn, args, &r));
    qv_value_free(r);
    qv_value_free(args);
}

static qv_digest twice_key(qv_fn *fn, int64_t x) {
    qv_value *args, *arg;
    qv_digest d;
    QVT_OK(qv_value_new_list(&args));
    QVT_OK(qv_value_new_int(&arg, x));
    QVT_OK(qv_value_list_append(args, arg));
    QVT_OK(qv_fn_digest(&d, fn, args, NULL));
    qv_value_free(args);
    return d;
}

static void test_a_binding_supplies_the_active_context(void **state) {
    fixture *f = *state;
    qv_cache *mine;
    QVT_OK(qv_cache_open_memory(&mine));
    provider_state p = {mine, 0, 0};
    QVT_OK(qv_ctx_set_provider(provide, &p, provider_gone));
    qv_fn *fn;
    QVT_OK(qv_fn_new(&fn, "call.twice", NULL, twice, NULL, NULL));
    /* nothing pushed: the provider's cache, with its metadata */
    call_twice(fn, 1);
    qv_digest k1 = twice_key(fn, 1);
    assert_int_equal(qv_cache_contains(mine, &k1), QV_OK);
    assert_true(p.asked >= 1);
    qv_value *rec;
    QVT_OK(qv_cache_load(mine, &k1, &rec));
    const qv_value *meta = qv_value_map_find(rec, "meta");
    assert_non_null(meta);
    assert_non_null(qv_value_map_find(meta, "p"));
    qv_value_free(rec);
    /* a push on the thread wins over the provider */
    QVT_OK(qv_ctx_push(f->cache, NULL));
    call_twice(fn, 2);
    QVT_OK(qv_ctx_pop());
    qv_digest k2 = twice_key(fn, 2);
    assert_int_equal(qv_cache_contains(f->cache, &k2), QV_OK);
    assert_int_equal(qv_cache_contains(mine, &k2), QV_NOTFOUND);
    /* a capture takes the provider's context too */
    qv_ctx *cap;
    QVT_OK(qv_ctx_capture(&cap));
    QVT_OK(qv_ctx_enter(cap));
    qv_cache *now;
    QVT_OK(qv_ctx_current(&now, NULL, NULL));
    assert_ptr_equal(now, mine);
    QVT_OK(qv_ctx_pop());
    qv_ctx_free(cap);
    /* removed: the default cache again, and destroy ran once */
    QVT_OK(qv_ctx_set_provider(NULL, NULL, NULL));
    assert_int_equal(p.destroyed, 1);
    int asked = p.asked;
    call_twice(fn, 3);
    assert_int_equal(p.asked, asked);
    qv_digest k3 = twice_key(fn, 3);
    assert_int_equal(qv_cache_contains(mine, &k3), QV_NOTFOUND);
    qv_fn_free(fn);
    qv_cache_close(mine);
}

static void test_ctx_new_checks_its_metadata(void **state) {
    fixture *f = *state;
    qv_ctx *ctx = (qv_ctx *)1;
    static const uint8_t list[] = {0x80}, bad[] = {0xa1, 0x01};
    assert_int_equal(qv_ctx_new(&ctx, f->cache, list, sizeof list), QV_ETYPE);
    assert_null(ctx);
    assert_int_equal(qv_ctx_new(&ctx, f->cache, bad, sizeof bad), QV_EDECODE);
    assert_int_equal(qv_ctx_new(&ctx, NULL, NULL, 0), QV_EINVAL);
    QVT_OK(qv_ctx_new(&ctx, f->cache, NULL, 0));
    qv_ctx_free(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_call_head_digests_like_qv_call_digest),
        cmocka_unit_test_setup_teardown(test_miss_runs_once_then_hits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failure_propagates_and_stores_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unencodable_result_is_returned_unstored, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_only_cache_runs_and_returns_unstored, setup, teardown),
        cmocka_unit_test_setup_teardown(test_entry_the_host_cannot_use_is_a_miss_and_replaced, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rerun_runs_and_replaces, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_misses_run_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_dedup_runs_each, setup, teardown),
        cmocka_unit_test_setup_teardown(test_waiters_stop_waiting_after_their_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_arguments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_binding_supplies_the_active_context, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ctx_new_checks_its_metadata, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
