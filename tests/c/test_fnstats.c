/* Counts per function (qv_cache_function_stats): hits, misses, stores,
 * evictions, corrupt entries and the time hits saved, added up across
 * handles and processes in the cache, written in the batches that carry the
 * totals, reset with them, and never counted by a read-only handle. */
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"

typedef struct {
    uint8_t result[16];
    int runs;
    long sleep_ns;
} body_state;

static qv_status body(const void **result, size_t *len, void *userdata) {
    body_state *b = userdata;
    b->runs++;
    if (b->sleep_ns) nanosleep(&(struct timespec){0, b->sleep_ns}, NULL);
    b->result[0] = 0x18; /* the integer 42 */
    b->result[1] = 42;
    *result = b->result;
    *len = 2;
    return QV_OK;
}

static qv_status on_hit(const void *data, size_t len, void *userdata) {
    (void)userdata;
    assert_int_equal(len, 2);
    assert_int_equal(((const uint8_t *)data)[1], 42);
    return QV_OK;
}

/* name(x) through the call runtime; 1 when the body ran. */
static int call(qv_cache *c, const char *name, int64_t x, long sleep_ns) {
    qvt_call k = qvt_make_call(name, x);
    body_state b = {{0}, 0, sleep_ns};
    int outcome;
    QVT_OK(qv_call_run(&outcome, c, &k.key, k.bytes, k.len, NULL, on_hit, body, &b));
    return b.runs;
}

/* One call through a handle opened for it and closed after (so its counts
 * are written); how many times the body ran. */
static int call_in_a_new_handle(const char *dir, const char *name, int64_t x) {
    qv_cache *c;
    QVT_OK(qv_cache_open(&c, dir, NULL));
    int runs = call(c, name, x, 0);
    qv_cache_close(c);
    return runs;
}

typedef struct {
    const char *name;
    qv_function_stats stats;
    int seen, functions;
} lookup;

static int find(const char *name, size_t len, const qv_function_stats *stats, void *userdata) {
    lookup *l = userdata;
    l->functions++;
    if (strlen(l->name) == len && !memcmp(l->name, name, len)) {
        l->stats = *stats;
        l->seen = 1;
    }
    return 0;
}

/* name's counts as a new read-only handle sees them. */
static lookup stats_of(const char *dir, const char *name) {
    qv_cache *c;
    qv_cache_options o = QV_CACHE_OPTIONS_INIT;
    o.flags |= QV_CACHE_READONLY;
    QVT_OK(qv_cache_open(&c, dir, &o));
    lookup l = {name, {0}, 0, 0};
    QVT_OK(qv_cache_function_stats(c, find, &l));
    qv_cache_close(c);
    return l;
}

static void child_calls(const char *dir, long sleep_ns) {
    qv_cache *c;
    if (qv_cache_open(&c, dir, NULL)) _exit(1);
    for (int x = 0; x < 3; x++) call(c, "t.square", x, sleep_ns);
    call(c, "t.cube", 1, sleep_ns);
    qv_cache_close(c);
    _exit(0);
}

static void run_child(const char *dir, long sleep_ns) {
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) child_calls(dir, sleep_ns);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void add_up_across_processes(void **state) {
    (void)state;
    char *dir = qvt_tempdir("fnstats");
    run_child(dir, 2000000); /* computes: 2 ms a call */
    run_child(dir, 0);       /* hits every call */
    run_child(dir, 0);
    lookup sq = stats_of(dir, "t.square"), cube = stats_of(dir, "t.cube");
    assert_true(sq.seen && cube.seen);
    assert_int_equal(sq.functions, 2);
    assert_int_equal(sq.stats.misses, 3);
    assert_int_equal(sq.stats.stores, 3);
    assert_int_equal(sq.stats.hits, 6);
    assert_int_equal(cube.stats.misses, 1);
    assert_int_equal(cube.stats.stores, 1);
    assert_int_equal(cube.stats.hits, 2);
    assert_int_equal(sq.stats.evictions + sq.stats.corrupt, 0);
    /* each hit saved the 2 ms its call took */
    assert_true(sq.stats.saved_ns >= 6 * 2000000ull);
    assert_true(cube.stats.saved_ns >= 2 * 2000000ull);
    qvt_rmtree(dir);
    free(dir);
}

static void evictions_by_function(void **state) {
    (void)state;
    char *dir = qvt_tempdir("fnstats-evict");
    qv_cache_options o = QV_CACHE_OPTIONS_INIT;
    o.max_bytes = 16 * 1024;
    qv_cache *c;
    QVT_OK(qv_cache_open(&c, dir, &o));
    for (int x = 0; x < 2000; x++) call(c, "t.many", x, 0);
    uint64_t evicted;
    QVT_OK(qv_cache_stat(c, QV_STAT_EVICTIONS, &evicted));
    assert_true(evicted > 0);
    qv_cache_close(c);
    lookup l = stats_of(dir, "t.many");
    assert_int_equal(l.stats.stores, 2000);
    assert_int_equal(l.stats.evictions, evicted);
    qvt_rmtree(dir);
    free(dir);
}

/* A write transaction on one table of the cache through raw LMDB, as a
 * damaged disk or another version of quiver would write it. */
static MDB_txn *raw_begin(const char *dir, const char *table, MDB_env **env, MDB_dbi *dbi) {
    MDB_txn *txn;
    assert_int_equal(mdb_env_create(env), 0);
    mdb_env_set_maxdbs(*env, 16);
    mdb_env_set_mapsize(*env, (size_t)1 << 30);
    assert_int_equal(mdb_env_open(*env, dir, 0, 0644), 0);
    assert_int_equal(mdb_txn_begin(*env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, table, 0, dbi), 0);
    return txn;
}

static void raw_commit(MDB_env *env, MDB_txn *txn) {
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

/* Overwrite a stored record with an empty map, as a damaged disk might. */
static void damage(const char *dir, const qv_digest *key) {
    MDB_env *env;
    MDB_dbi dbi;
    MDB_txn *txn = raw_begin(dir, "calls", &env, &dbi);
    MDB_val k = {16, (void *)key->bytes}, v = {1, "\xa0"};
    assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
    raw_commit(env, txn);
}

static void corrupt_by_function(void **state) {
    (void)state;
    char *dir = qvt_tempdir("fnstats-corrupt");
    qv_cache *c;
    assert_int_equal(call_in_a_new_handle(dir, "t.fragile", 7), 1);
    qvt_call k = qvt_make_call("t.fragile", 7);
    damage(dir, &k.key);
    QVT_OK(qv_cache_open(&c, dir, NULL));
    assert_int_equal(call(c, "t.fragile", 7, 0), 1); /* a miss, computed again */
    assert_int_equal(call(c, "t.fragile", 7, 0), 0);
    qv_cache_close(c);
    lookup l = stats_of(dir, "t.fragile");
    assert_int_equal(l.stats.corrupt, 1);
    assert_int_equal(l.stats.misses, 2);
    assert_int_equal(l.stats.stores, 2);
    assert_int_equal(l.stats.hits, 1);
    qvt_rmtree(dir);
    free(dir);
}

/* The only row of the funcs table, rewritten by fn when given: raw LMDB, as
 * another version of quiver would see it. */
static void funcs_row(const char *dir, uint8_t *out, size_t *len, void (*fn)(uint8_t *row, size_t *len)) {
    MDB_env *env;
    MDB_dbi dbi;
    MDB_cursor *cur;
    MDB_val k, v;
    MDB_txn *txn = raw_begin(dir, "funcs", &env, &dbi);
    assert_int_equal(mdb_cursor_open(txn, dbi, &cur), 0);
    assert_int_equal(mdb_cursor_get(cur, &k, &v, MDB_FIRST), 0);
    assert_true(v.mv_size <= 256);
    memcpy(out, v.mv_data, v.mv_size);
    *len = v.mv_size;
    mdb_cursor_close(cur);
    if (fn) {
        fn(out, len);
        MDB_val nv = {*len, out};
        assert_int_equal(mdb_put(txn, dbi, &k, &nv, 0), 0);
    }
    raw_commit(env, txn);
}

/* A seventh counter, as a newer quiver may append: 99. */
static void append_counter(uint8_t *row, size_t *len) {
    size_t k = row[0], name = *len - 1 - 8 * k;
    memmove(row + 1 + 8 * (k + 1), row + 1 + 8 * k, name);
    memset(row + 1 + 8 * k, 0, 8);
    row[1 + 8 * k + 7] = 99;
    row[0] = (uint8_t)(k + 1);
    *len += 8;
}

static void newer_counters_are_kept(void **state) {
    (void)state;
    char *dir = qvt_tempdir("fnstats-newer");
    call_in_a_new_handle(dir, "t.newer", 1);
    uint8_t row[256];
    size_t len;
    funcs_row(dir, row, &len, append_counter);
    call_in_a_new_handle(dir, "t.newer", 2);
    funcs_row(dir, row, &len, NULL);
    assert_int_equal(row[0], 7);
    assert_int_equal(row[1 + 8 * 6 + 7], 99);
    assert_int_equal(row[1 + 8 * 1 + 7], 2); /* misses: ours, added to */
    assert_int_equal(stats_of(dir, "t.newer").stats.stores, 2);
    qvt_rmtree(dir);
    free(dir);
}

/* A corrupt entry is counted once by the call that met it, not again by
 * the next miss of the same call on that thread. */
static void corrupt_counted_once(void **state) {
    (void)state;
    char *dir = qvt_tempdir("fnstats-once");
    qv_cache *c;
    call_in_a_new_handle(dir, "t.once", 3);
    qvt_call k = qvt_make_call("t.once", 3);
    damage(dir, &k.key);
    QVT_OK(qv_cache_open(&c, dir, NULL));
    assert_int_equal(call(c, "t.once", 3, 0), 1);
    QVT_OK(qv_cache_evict(c, &k.key));
    assert_int_equal(call(c, "t.once", 3, 0), 1);
    qv_cache_close(c);
    lookup l = stats_of(dir, "t.once");
    assert_int_equal(l.stats.corrupt, 1);
    assert_int_equal(l.stats.misses, 3);
    uint64_t total;
    qv_cache_options o = QV_CACHE_OPTIONS_INIT;
    o.flags |= QV_CACHE_READONLY;
    QVT_OK(qv_cache_open(&c, dir, &o));
    QVT_OK(qv_cache_stat(c, QV_STAT_TOTAL_CORRUPT, &total));
    assert_int_equal(total, 1);
    qv_cache_close(c);
    qvt_rmtree(dir);
    free(dir);
}

static void reset_and_read_only(void **state) {
    (void)state;
    char *dir = qvt_tempdir("fnstats-reset");
    qv_cache *c, *ro;
    QVT_OK(qv_cache_open(&c, dir, NULL));
    call(c, "t.r", 1, 0);
    call(c, "t.r", 1, 0);
    QVT_OK(qv_cache_sync(c));
    assert_int_equal(stats_of(dir, "t.r").stats.hits, 1);
    /* a read-only handle's hits are nobody's to write */
    qv_cache_options o = QV_CACHE_OPTIONS_INIT;
    o.flags |= QV_CACHE_READONLY;
    QVT_OK(qv_cache_open(&ro, dir, &o));
    call(ro, "t.r", 1, 0);
    qv_cache_close(ro);
    assert_int_equal(stats_of(dir, "t.r").stats.hits, 1);
    /* pending counts go with the written ones, hits not yet written too */
    call(c, "t.r", 2, 0);
    call(c, "t.r", 2, 0);
    QVT_OK(qv_cache_reset_totals(c));
    qv_cache_close(c);
    lookup l = stats_of(dir, "t.r");
    assert_int_equal(l.functions, 0);
    qvt_rmtree(dir);
    free(dir);
}

static void stack_counts_in_local(void **state) {
    (void)state;
    char *dir = qvt_tempdir("fnstats-stack");
    qv_cache *local, *remote, *stack;
    QVT_OK(qv_cache_open(&local, dir, NULL));
    QVT_OK(qv_cache_open_memory(&remote));
    QVT_OK(qv_cache_stack(&stack, local, remote, NULL));
    assert_int_equal(call(stack, "t.s", 1, 0), 1);
    assert_int_equal(call(stack, "t.s", 1, 0), 0);
    lookup l = {"t.s", {0}, 0, 0};
    QVT_OK(qv_cache_sync(stack));
    QVT_OK(qv_cache_function_stats(stack, find, &l));
    assert_true(l.seen);
    assert_int_equal(l.stats.misses, 1);
    assert_int_equal(l.stats.stores, 1);
    qv_cache_close(stack);
    qv_cache_close(remote);
    qv_cache_close(local);
    assert_int_equal(stats_of(dir, "t.s").stats.hits, 1);
    qvt_rmtree(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(add_up_across_processes),
        cmocka_unit_test(evictions_by_function),
        cmocka_unit_test(corrupt_by_function),
        cmocka_unit_test(newer_counters_are_kept),
        cmocka_unit_test(corrupt_counted_once),
        cmocka_unit_test(reset_and_read_only),
        cmocka_unit_test(stack_counts_in_local),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
