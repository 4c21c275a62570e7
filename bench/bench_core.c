/* bench_core: quiver's C core against the floors it is built on, measured in
 * the same run and printed as ratios (DESIGN section 8).
 *
 *   bench_core [--quick] [--entries N] [--fill-threads N] [--tmp DIR]
 *
 * Rows:
 *  1. a C hit on a hot key: encode the call in digest mode, qv_cache_get_with,
 *     decode the int result; floor: the same encode, a one-shot XXH3-128, a
 *     raw LMDB renew/get/copy/reset on an environment of the same size, and
 *     the same decode of the copied bytes;
 *  2. the same over N random keys (1M by default), floor on N random keys;
 *  3. one store in each durability mode against one raw LMDB put+commit in the
 *     matching mode;
 *  4. 8 threads storing durably against serial durable stores (group commit);
 *  5. encode+digest of a 1 MiB byte string against XXH3-128 on the same buffer.
 *
 * Every number is the median of several repetitions after a warm-up; quiver
 * and floor repetitions are interleaved so both see the same machine. A goal
 * missed is reported, never an exit status: this is a measurement, not a
 * test. Temporary stores live under $QUIVER_BUILD/bench-tmp (or the build
 * tree next to this executable) and are removed at the end. */
#define _GNU_SOURCE
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <lmdb.h>
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "bench.h"
#include "quiver.h"

/* From Debian's libxxhash (xxh_x86dispatch.h, which cannot be combined with
 * XXH_INLINE_ALL): the AVX2/AVX-512 dispatching one-shot. */
extern XXH128_hash_t XXH3_128bits_dispatch(const void *input, size_t len);

/* ------------------------------------------------------------------ setup */

typedef struct {
    int quick;
    size_t hot_n;       /* entries in the hot-key stores */
    size_t big_n;       /* entries in the random-key stores */
    int hit_reps;       /* repetitions of the hot-key loops */
    size_t hit_ops;     /* lookups per repetition */
    int rnd_reps;
    size_t rnd_ops;
    int store_samples;  /* single stores timed per durability mode (durable: a third) */
    double group_secs;  /* seconds of each phase of the group-commit row */
    int group_threads;
    int fill_threads;
    int dig_reps, dig_iters;
    size_t pool_tasks;  /* tasks in the pool throughput rows */
    char tmp[PATH_MAX];
} config;

static config cfg;
static volatile uint64_t sink; /* keeps results alive */
static int tmp_made;

static void cleanup(void) {
    if (tmp_made) rm_tree(cfg.tmp);
    tmp_made = 0;
}

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "bench_core: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    cleanup();
    exit(2);
}

#define QV_CHECK(expr)                                                                           \
    do {                                                                                         \
        qv_status st_ = (expr);                                                                  \
        if (st_) die("%s:%d: %s: %s (%s)", __FILE__, __LINE__, #expr, qv_status_name(st_), qv_errmsg()); \
    } while (0)
#define MDB_CHECK(expr)                                                                          \
    do {                                                                                         \
        int rc_ = (expr);                                                                        \
        if (rc_) die("%s:%d: %s: %s", __FILE__, __LINE__, #expr, mdb_strerror(rc_));            \
    } while (0)

static double median(const double *v, int n) {
    double *s = malloc((size_t)n * sizeof *s);
    if (!s) die("out of memory");
    memcpy(s, v, (size_t)n * sizeof *s);
    double m = median_in_place(s, n);
    free(s);
    return m;
}

static void subdir(char *out, const char *name) {
    if (snprintf(out, PATH_MAX, "%s/%s", cfg.tmp, name) >= PATH_MAX) die("temporary path too long");
    rm_tree(out);
    if (mkdir(out, 0755) != 0) die("cannot create %s: %s", out, strerror(errno));
}

/* xorshift64*: the random keys, reproducible per repetition. */
static inline uint64_t rnd_next(uint64_t *s) {
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* -------------------------------------------------------------- the table */

enum { G_NONE, G_MAX_NS, G_MAX_RATIO, G_MIN_SPEEDUP, G_MIN_GBPS };

typedef struct {
    char name[64];
    double q, f; /* ns per op; NAN: not measured */
    int goal;
    double goal_val;
    char note[128];
} row;

static row rows[32];
static int nrows;
static double plain_hit_ns; /* row 1, the floor of the wrapped hit */

static row *add_row(const char *name, double q, double f, int goal, double goal_val, const char *note_fmt, ...) {
    if (nrows == (int)(sizeof rows / sizeof rows[0])) die("too many rows");
    row *r = &rows[nrows++];
    snprintf(r->name, sizeof r->name, "%s", name);
    r->q = q;
    r->f = f;
    r->goal = goal;
    r->goal_val = goal_val;
    r->note[0] = 0;
    if (note_fmt) {
        va_list ap;
        va_start(ap, note_fmt);
        vsnprintf(r->note, sizeof r->note, note_fmt, ap);
        va_end(ap);
    }
    return r;
}

static void fmt_ns(char *out, size_t n, double v) {
    if (isnan(v)) snprintf(out, n, "-");
    else snprintf(out, n, "%.1f", v);
}

static void print_table(void) {
    const char *hdr = "%-44s %13s %13s %7s  %-19s %-6s %s\n";
    printf(hdr, "benchmark", "quiver ns/op", "floor ns/op", "ratio", "goal", "result", "notes");
    printf("%.*s\n", 140, "--------------------------------------------------------------------------------"
                          "------------------------------------------------------------");
    for (int i = 0; i < nrows; i++) {
        row *r = &rows[i];
        char q[32], f[32], ratio[32], goal[48], result[8] = "";
        fmt_ns(q, sizeof q, r->q);
        fmt_ns(f, sizeof f, r->f);
        if (isnan(r->q) || isnan(r->f)) snprintf(ratio, sizeof ratio, "-");
        else snprintf(ratio, sizeof ratio, "%.2f", r->q / r->f);
        int pass = 1;
        switch (r->goal) {
        case G_MAX_NS:
            snprintf(goal, sizeof goal, "<= %.0f ns", r->goal_val);
            pass = r->q <= r->goal_val;
            break;
        case G_MAX_RATIO:
            snprintf(goal, sizeof goal, "ratio <= %.2f", r->goal_val);
            pass = r->q / r->f <= r->goal_val;
            break;
        case G_MIN_SPEEDUP:
            snprintf(goal, sizeof goal, "speedup >= %.0fx", r->goal_val);
            pass = r->f / r->q >= r->goal_val;
            break;
        case G_MIN_GBPS:
            snprintf(goal, sizeof goal, ">= %.0f GB/s", r->goal_val);
            pass = (1 << 20) / r->q >= r->goal_val;
            break;
        default:
            snprintf(goal, sizeof goal, "-");
        }
        if (r->goal != G_NONE) snprintf(result, sizeof result, "%s", pass ? "PASS" : "MISS");
        printf(hdr, r->name, q, f, ratio, goal, result, r->note);
    }
}

/* ---------------------------------------------------------- call encoding */

static const char FN_NAME[] = "bench.f";
/* bench.f(arg): the call head every binding writes, then [arg] and {} */
static inline qv_status call_items(qv_encoder *enc, int64_t arg) {
    qv_status st;
    if ((st = qv_encoder_call_head(enc, FN_NAME, sizeof FN_NAME - 1, NULL, 0)) || (st = qv_encoder_list(enc, 1)) ||
        (st = qv_encoder_int(enc, arg)) || (st = qv_encoder_map_begin(enc)) || (st = qv_encoder_map_end(enc)))
        return st;
    return QV_OK;
}

/* quiver's way: a digesting encoder. */
static inline qv_status call_digest(qv_encoder *enc, int64_t arg, qv_digest *d) {
    qv_encoder_reset_for_digest(enc);
    qv_status st = call_items(enc, arg);
    return st ? st : qv_encoder_digest(enc, d);
}

/* The floor's way: the same encoder calls, then a one-shot XXH3-128 here. */
static inline qv_status call_key_floor(qv_encoder *enc, int64_t arg, uint8_t key[16]) {
    qv_encoder_reset(enc);
    qv_status st = call_items(enc, arg);
    const void *p;
    size_t n;
    if (st || (st = qv_encoder_finish(enc, &p, &n))) return st;
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits(p, n));
    memcpy(key, c.digest, 16);
    return QV_OK;
}

/* The result stored for argument i. */
static inline int64_t result_of(int64_t i) {
    return i * 3 + 1000;
}

/* A ~10-byte raw value: the result's encoding, zero-padded. */
#define RAW_VAL_LEN 10
static void raw_value(qv_encoder *enc, int64_t i, uint8_t out[RAW_VAL_LEN]) {
    const void *p;
    size_t n;
    memset(out, 0, RAW_VAL_LEN);
    qv_encoder_reset(enc);
    QV_CHECK(qv_encoder_int(enc, result_of(i)));
    QV_CHECK(qv_encoder_finish(enc, &p, &n));
    memcpy(out, p, n < RAW_VAL_LEN ? n : RAW_VAL_LEN);
}

/* ---------------------------------------------------------- quiver stores */

static qv_cache *open_cache(const char *dir, uint32_t durability) {
    qv_cache_options o = QV_CACHE_OPTIONS_INIT;
    o.durability = durability;
    qv_cache *c;
    QV_CHECK(qv_cache_open(&c, dir, &o));
    return c;
}

typedef struct {
    qv_encoder *call, *res;
} store_encoders;

static void store_encoders_init(store_encoders *e) {
    QV_CHECK(qv_encoder_new(&e->call));
    QV_CHECK(qv_encoder_new(&e->res));
}

static void store_encoders_free(store_encoders *e) {
    qv_encoder_free(e->call);
    qv_encoder_free(e->res);
}

/* Encode the call for arg and its result, and store them. */
static qv_status store_one(qv_cache *c, store_encoders *e, int64_t arg) {
    const void *call, *res;
    size_t call_len, res_len;
    qv_status st;
    qv_encoder_reset(e->call);
    if ((st = call_items(e->call, arg)) || (st = qv_encoder_finish(e->call, &call, &call_len))) return st;
    qv_encoder_reset(e->res);
    if ((st = qv_encoder_int(e->res, result_of(arg))) || (st = qv_encoder_finish(e->res, &res, &res_len))) return st;
    return qv_cache_store(c, NULL, call, call_len, res, res_len, NULL);
}

typedef struct {
    qv_cache *c;
    size_t from, to, stride;
    qv_status st;
    char msg[256];
} fill_arg;

static void *fill_thread(void *p) {
    fill_arg *a = p;
    store_encoders e;
    store_encoders_init(&e);
    for (size_t i = a->from; i < a->to; i += a->stride) {
        if ((a->st = store_one(a->c, &e, (int64_t)i))) {
            snprintf(a->msg, sizeof a->msg, "%s", qv_errmsg());
            break;
        }
    }
    store_encoders_free(&e);
    return NULL;
}

/* Store arguments 0..n-1 from `threads` threads. One thread is the default:
 * with fast durability a commit costs little more than its fsync-free write,
 * so more threads only add hand-offs. */
static void fill_cache(qv_cache *c, size_t n, int threads) {
    pthread_t tid[64];
    fill_arg args[64];
    if (threads > 64) threads = 64;
    if ((size_t)threads > n) threads = n ? (int)n : 1;
    for (int t = 0; t < threads; t++) {
        args[t] = (fill_arg){c, (size_t)t, n, (size_t)threads, QV_OK, ""};
        if (pthread_create(&tid[t], NULL, fill_thread, &args[t])) die("pthread_create failed");
    }
    for (int t = 0; t < threads; t++) pthread_join(tid[t], NULL);
    for (int t = 0; t < threads; t++)
        if (args[t].st) die("filling the cache: %s (%s)", qv_status_name(args[t].st), args[t].msg);
    uint64_t entries;
    QV_CHECK(qv_cache_stat(c, QV_STAT_ENTRIES, &entries));
    if (entries != n) die("the cache holds %llu entries, not %zu", (unsigned long long)entries, n);
}

/* -------------------------------------------------------------- raw LMDB */

typedef struct {
    MDB_env *env;
    MDB_dbi dbi, names;
    MDB_txn *rtxn; /* a reset read transaction, renewed per lookup */
} raw_env;

static void raw_open(raw_env *r, const char *dir, unsigned flags, size_t map_size) {
    MDB_CHECK(mdb_env_create(&r->env));
    MDB_CHECK(mdb_env_set_maxdbs(r->env, 9));
    MDB_CHECK(mdb_env_set_mapsize(r->env, map_size));
    /* the flags quiver opens with, plus the durability under test */
    MDB_CHECK(mdb_env_open(r->env, dir, flags | MDB_NOTLS | MDB_NORDAHEAD, 0644));
    MDB_txn *txn;
    MDB_CHECK(mdb_txn_begin(r->env, NULL, 0, &txn));
    /* a named database, as quiver's "calls" table is one */
    MDB_CHECK(mdb_dbi_open(txn, "calls", MDB_CREATE, &r->dbi));
    MDB_CHECK(mdb_txn_commit(txn));
    MDB_CHECK(mdb_txn_begin(r->env, NULL, MDB_RDONLY, &r->rtxn));
    mdb_txn_reset(r->rtxn);
}

/* The names index beside calls, for the format's floor (a hit's floor keeps
 * the one table: every named database costs a renewed transaction). */
static void raw_open_names(raw_env *r) {
    MDB_txn *txn;
    MDB_CHECK(mdb_txn_begin(r->env, NULL, 0, &txn));
    MDB_CHECK(mdb_dbi_open(txn, "names", MDB_CREATE, &r->names));
    MDB_CHECK(mdb_txn_commit(txn));
}

/* Every table of quiver's format opened beside calls, as a cache opens
 * them: LMDB's renew visits each opened database, and a renewed read looks
 * its named database up in the main one, so the floor under quiver's own
 * hit is this environment's (FORMAT.md 5). */
static void raw_open_format_tables(raw_env *r) {
    static const char *const others[] = {"meta", "values", "refs", "names", "atime", "lru", "hits", "funcs"};
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_CHECK(mdb_txn_begin(r->env, NULL, 0, &txn));
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++)
        MDB_CHECK(mdb_dbi_open(txn, others[i], MDB_CREATE, &dbi));
    MDB_CHECK(mdb_txn_commit(txn));
}

static void raw_close(raw_env *r) {
    if (r->rtxn) mdb_txn_abort(r->rtxn);
    mdb_env_close(r->env);
    r->env = NULL;
    r->rtxn = NULL;
}

typedef struct {
    uint8_t key[16];
    int64_t i;
} keyed;

static int cmp_keyed(const void *a, const void *b) {
    return memcmp(a, b, 16);
}

/* The floor's environment: the digests of the same calls, each with a ~10-byte
 * value, written in key order in one transaction. */
static void raw_fill(raw_env *r, size_t n) {
    qv_encoder *enc;
    QV_CHECK(qv_encoder_new(&enc));
    keyed *k = malloc((n ? n : 1) * sizeof *k);
    if (!k) die("out of memory");
    for (size_t i = 0; i < n; i++) {
        QV_CHECK(call_key_floor(enc, (int64_t)i, k[i].key));
        k[i].i = (int64_t)i;
    }
    qsort(k, n, sizeof *k, cmp_keyed);
    MDB_txn *txn;
    MDB_CHECK(mdb_txn_begin(r->env, NULL, 0, &txn));
    for (size_t i = 0; i < n; i++) {
        uint8_t v[RAW_VAL_LEN];
        raw_value(enc, k[i].i, v);
        MDB_val kv = {16, k[i].key}, vv = {RAW_VAL_LEN, v};
        MDB_CHECK(mdb_put(txn, r->dbi, &kv, &vv, MDB_APPEND));
    }
    MDB_CHECK(mdb_txn_commit(txn));
    free(k);
    qv_encoder_free(enc);
}

/* Touch every page of the raw table, as a warm-up. */
static void raw_scan(raw_env *r) {
    MDB_txn *txn;
    MDB_cursor *cur;
    MDB_val k, v;
    uint64_t s = 0;
    MDB_CHECK(mdb_txn_begin(r->env, NULL, MDB_RDONLY, &txn));
    MDB_CHECK(mdb_cursor_open(txn, r->dbi, &cur));
    for (int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT))
        s += ((const uint8_t *)v.mv_data)[0];
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    sink += s;
}

/* The floor's hit: renew, get, copy, reset. */
static inline void raw_hit(raw_env *r, const uint8_t key[16], uint8_t out[RAW_VAL_LEN]) {
    MDB_val k = {16, (void *)key}, v;
    MDB_CHECK(mdb_txn_renew(r->rtxn));
    int rc = mdb_get(r->rtxn, r->dbi, &k, &v);
    if (rc) die("raw LMDB lookup failed: %s", mdb_strerror(rc));
    memcpy(out, v.mv_data, v.mv_size < RAW_VAL_LEN ? v.mv_size : RAW_VAL_LEN);
    mdb_txn_reset(r->rtxn);
}

/* ------------------------------------------------------------------ hits */

typedef struct {
    qv_decoder *dec;
    int64_t out;
} hit_ctx;

static qv_status decode_int(const void *data, size_t len, void *userdata) {
    hit_ctx *h = userdata;
    qv_type t;
    qv_decoder_reset(h->dec, data, len);
    qv_status st = qv_decoder_next(h->dec, &t);
    if (st) return st;
    if (t != QV_TYPE_INT) return QV_ETYPE;
    return qv_decoder_get_int(h->dec, &h->out);
}

typedef struct {
    qv_cache *c;
    raw_env *r;
    qv_encoder *enc;
    hit_ctx h;
} hit_bench;

static double q_hits_hot(hit_bench *b, int64_t arg, size_t ops) {
    qv_digest d;
    uint64_t s = 0, t0 = now_ns();
    for (size_t i = 0; i < ops; i++) {
        QV_CHECK(call_digest(b->enc, arg, &d));
        QV_CHECK(qv_cache_get_with(b->c, &d, decode_int, &b->h));
        s += (uint64_t)b->h.out;
    }
    uint64_t t1 = now_ns();
    if (s != (uint64_t)result_of(arg) * ops) die("quiver returned a wrong result for %lld", (long long)arg);
    sink += s;
    return (double)(t1 - t0) / (double)ops;
}

static double f_hits_hot(hit_bench *b, int64_t arg, size_t ops) {
    uint8_t key[16], v[RAW_VAL_LEN];
    uint64_t s = 0, t0 = now_ns();
    for (size_t i = 0; i < ops; i++) {
        QV_CHECK(call_key_floor(b->enc, arg, key));
        raw_hit(b->r, key, v);
        QV_CHECK(decode_int(v, sizeof v, &b->h));
        s += (uint64_t)b->h.out;
    }
    uint64_t t1 = now_ns();
    sink += s;
    return (double)(t1 - t0) / (double)ops;
}

/* Parts of the hot hit, for reading the difference. */
static double q_digest_only(hit_bench *b, int64_t arg, size_t ops) {
    qv_digest d;
    uint64_t s = 0, t0 = now_ns();
    for (size_t i = 0; i < ops; i++) {
        QV_CHECK(call_digest(b->enc, arg, &d));
        s += d.bytes[0];
    }
    uint64_t t1 = now_ns();
    sink += s;
    return (double)(t1 - t0) / (double)ops;
}

static double f_digest_only(hit_bench *b, int64_t arg, size_t ops) {
    uint8_t key[16];
    uint64_t s = 0, t0 = now_ns();
    for (size_t i = 0; i < ops; i++) {
        QV_CHECK(call_key_floor(b->enc, arg, key));
        s += key[0];
    }
    uint64_t t1 = now_ns();
    sink += s;
    return (double)(t1 - t0) / (double)ops;
}

static double q_get_only(hit_bench *b, int64_t arg, size_t ops) {
    qv_digest d;
    QV_CHECK(call_digest(b->enc, arg, &d));
    uint64_t s = 0, t0 = now_ns();
    for (size_t i = 0; i < ops; i++) {
        QV_CHECK(qv_cache_get_with(b->c, &d, decode_int, &b->h));
        s += (uint64_t)b->h.out;
    }
    uint64_t t1 = now_ns();
    sink += s;
    return (double)(t1 - t0) / (double)ops;
}

static double f_get_only(hit_bench *b, int64_t arg, size_t ops) {
    uint8_t key[16], v[RAW_VAL_LEN];
    QV_CHECK(call_key_floor(b->enc, arg, key));
    uint64_t s = 0, t0 = now_ns();
    for (size_t i = 0; i < ops; i++) {
        raw_hit(b->r, key, v);
        QV_CHECK(decode_int(v, sizeof v, &b->h));
        s += (uint64_t)b->h.out;
    }
    uint64_t t1 = now_ns();
    sink += s;
    return (double)(t1 - t0) / (double)ops;
}

static double q_hits_random(hit_bench *b, size_t n, size_t ops, uint64_t seed) {
    qv_digest d;
    uint64_t s = 0, want = 0, t0 = now_ns();
    for (size_t i = 0; i < ops; i++) {
        int64_t arg = (int64_t)(rnd_next(&seed) % n);
        QV_CHECK(call_digest(b->enc, arg, &d));
        QV_CHECK(qv_cache_get_with(b->c, &d, decode_int, &b->h));
        s += (uint64_t)b->h.out;
        want += (uint64_t)result_of(arg);
    }
    uint64_t t1 = now_ns();
    if (s != want) die("quiver returned wrong results for random keys");
    sink += s;
    return (double)(t1 - t0) / (double)ops;
}

static double f_hits_random(hit_bench *b, size_t n, size_t ops, uint64_t seed) {
    uint8_t key[16], v[RAW_VAL_LEN];
    uint64_t s = 0, t0 = now_ns();
    for (size_t i = 0; i < ops; i++) {
        int64_t arg = (int64_t)(rnd_next(&seed) % n);
        QV_CHECK(call_key_floor(b->enc, arg, key));
        raw_hit(b->r, key, v);
        QV_CHECK(decode_int(v, sizeof v, &b->h));
        s += (uint64_t)b->h.out;
    }
    uint64_t t1 = now_ns();
    sink += s;
    return (double)(t1 - t0) / (double)ops;
}

typedef double (*hot_fn)(hit_bench *, int64_t, size_t);

/* Interleaved repetitions after one warm-up of each; medians out. */
static void run_pair_hot(hit_bench *b, hot_fn q, hot_fn f, int64_t arg, double *qm, double *fm) {
    double qs[64], fs[64];
    int reps = cfg.hit_reps < 64 ? cfg.hit_reps : 64;
    q(b, arg, cfg.hit_ops / 4 + 1);
    f(b, arg, cfg.hit_ops / 4 + 1);
    for (int i = 0; i < reps; i++) {
        qs[i] = q(b, arg, cfg.hit_ops);
        fs[i] = f(b, arg, cfg.hit_ops);
    }
    *qm = median(qs, reps);
    *fm = median(fs, reps);
}

static void hit_bench_init(hit_bench *b, qv_cache *c, raw_env *r) {
    b->c = c;
    b->r = r;
    QV_CHECK(qv_encoder_new(&b->enc));
    QV_CHECK(qv_decoder_new(&b->h.dec));
}

static void hit_bench_free(hit_bench *b) {
    qv_encoder_free(b->enc);
    qv_decoder_free(b->h.dec);
}

/* The hot-key hit from several threads sharing one qv_cache (the floor: the
 * same threads on the raw environment, each with its own reset transaction). */
typedef struct {
    hit_bench b;
    raw_env r;
    int floor;
    int64_t arg;
    size_t ops;
    pthread_barrier_t *go;
    double ns;
} hit_thread_arg;

static void *hit_thread(void *p) {
    hit_thread_arg *a = p;
    pthread_barrier_wait(a->go);
    a->ns = a->floor ? f_hits_hot(&a->b, a->arg, a->ops) : q_hits_hot(&a->b, a->arg, a->ops);
    return NULL;
}

/* Mean ns per hit over the threads of one run. */
static double hits_threaded(qv_cache *c, raw_env *r, int nthreads, int floor, int64_t arg, size_t ops) {
    pthread_t tid[16];
    hit_thread_arg a[16];
    pthread_barrier_t go;
    if (nthreads > 16) nthreads = 16;
    pthread_barrier_init(&go, NULL, (unsigned)nthreads);
    for (int t = 0; t < nthreads; t++) {
        a[t].r = *r;
        MDB_CHECK(mdb_txn_begin(r->env, NULL, MDB_RDONLY, &a[t].r.rtxn));
        mdb_txn_reset(a[t].r.rtxn);
        hit_bench_init(&a[t].b, c, &a[t].r);
        a[t].floor = floor;
        a[t].arg = arg;
        a[t].ops = ops;
        a[t].go = &go;
        if (pthread_create(&tid[t], NULL, hit_thread, &a[t])) die("pthread_create failed");
    }
    double sum = 0;
    for (int t = 0; t < nthreads; t++) {
        pthread_join(tid[t], NULL);
        sum += a[t].ns;
        hit_bench_free(&a[t].b);
        mdb_txn_abort(a[t].r.rtxn);
    }
    pthread_barrier_destroy(&go);
    return sum / nthreads;
}

/* The row "signed hit": row 1's hit on a cache with a secret, against row 1. */
static hit_bench *signed_bench;
static double q_hits_signed(hit_bench *b, int64_t arg, size_t ops) {
    return q_hits_hot(signed_bench, arg, ops);
}

static void bench_signed(hit_bench *plain, raw_env *r, int64_t hot) {
    char dir[PATH_MAX];
    subdir(dir, "hot-signed");
    qv_cache_options o = QV_CACHE_OPTIONS_INIT;
    o.durability = QV_DURABILITY_FAST;
    o.secret = "bench";
    o.secret_len = 5;
    qv_cache *c;
    QV_CHECK(qv_cache_open(&c, dir, &o));
    fill_cache(c, cfg.hot_n, cfg.fill_threads);
    hit_bench b;
    hit_bench_init(&b, c, r);
    signed_bench = &b;
    double q, f;
    run_pair_hot(plain, q_hits_signed, q_hits_hot, hot, &q, &f);
    add_row("   signed hit (HMAC-SHA256), hot key", q, f, G_NONE, 0, "floor: row 1, unsigned");
    hit_bench_free(&b);
    qv_cache_close(c);
    rm_tree(dir);
}

static void bench_hot(void) {
    char qdir[PATH_MAX], rdir[PATH_MAX];
    subdir(qdir, "hot-quiver");
    subdir(rdir, "hot-raw");
    progress("hot key: %zu entries in each store", cfg.hot_n);
    qv_cache *c = open_cache(qdir, QV_DURABILITY_FAST);
    fill_cache(c, cfg.hot_n, cfg.fill_threads);
    raw_env r = {0}, r9 = {0};
    raw_open(&r, rdir, MDB_NOSYNC, (size_t)1 << 30);
    raw_fill(&r, cfg.hot_n);
    char r9dir[PATH_MAX];
    subdir(r9dir, "hot-raw-9-tables");
    raw_open(&r9, r9dir, MDB_NOSYNC, (size_t)1 << 30);
    raw_open_format_tables(&r9);
    raw_fill(&r9, cfg.hot_n);
    /* the fills' pages on disk before any timing: written back meanwhile,
     * they took a CPU of two from whichever pair ran first */
    QV_CHECK(qv_cache_sync(c));
    MDB_CHECK(mdb_env_sync(r.env, 1));
    MDB_CHECK(mdb_env_sync(r9.env, 1));
    hit_bench b, b9;
    hit_bench_init(&b, c, &r);
    hit_bench_init(&b9, c, &r9);
    int64_t hot = (int64_t)(cfg.hot_n / 2);
    double q, f, q9, f9;
    /* one whole pair first, unrecorded: the first second of hits here runs
     * slow for quiver and floor alike (1.3-1.8x), whichever comes first */
    run_pair_hot(&b, q_hits_hot, f_hits_hot, hot, &q, &f);
    run_pair_hot(&b, q_hits_hot, f_hits_hot, hot, &q, &f);
    run_pair_hot(&b9, q_hits_hot, f_hits_hot, hot, &q9, &f9);
    plain_hit_ns = q;
    add_row("1. C hit, hot key", q, f, G_MAX_RATIO, 1.15,
            "%zu entries; floor: encode+XXH3+renew/get/copy/reset+decode; with the format's 9 tables open: %.1f ns "
            "(quiver %.2fx it)",
            cfg.hot_n, f9, q9 / f9);
    hit_bench_free(&b9);
    raw_close(&r9);
    rm_tree(r9dir);
    run_pair_hot(&b, q_digest_only, f_digest_only, hot, &q, &f);
    add_row("   part: encode + digest", q, f, G_NONE, 0, "floor: plain encoder + XXH3_128bits");
    run_pair_hot(&b, q_get_only, f_get_only, hot, &q, &f);
    add_row("   part: get_with + decode, key given", q, f, G_NONE, 0, "floor: renew/get/copy/reset");
    bench_signed(&b, &r, hot);
    hit_bench_free(&b);

    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    int nthreads = ncpu < 2 ? 2 : ncpu > 16 ? 16 : (int)ncpu;
    double qs[64], fs[64];
    int reps = cfg.hit_reps < 64 ? cfg.hit_reps : 64;
    hits_threaded(c, &r, nthreads, 0, hot, cfg.hit_ops / 4 + 1);
    hits_threaded(c, &r, nthreads, 1, hot, cfg.hit_ops / 4 + 1);
    for (int i = 0; i < reps; i++) {
        qs[i] = hits_threaded(c, &r, nthreads, 0, hot, cfg.hit_ops);
        fs[i] = hits_threaded(c, &r, nthreads, 1, hot, cfg.hit_ops);
    }
    char name[64];
    snprintf(name, sizeof name, "   hot key, %d threads sharing the cache", nthreads);
    add_row(name, median(qs, reps), median(fs, reps), G_NONE, 0, "ns per hit in each thread (1 thread: row 1)");
    raw_close(&r);
    qv_cache_close(c);
    rm_tree(qdir);
    rm_tree(rdir);
}

static void bench_random(void) {
    char qdir[PATH_MAX], rdir[PATH_MAX];
    subdir(qdir, "random-quiver");
    subdir(rdir, "random-raw");
    size_t n = cfg.big_n;
    progress("random keys: filling quiver with %zu entries (fast durability, %d thread%s)", n, cfg.fill_threads,
             cfg.fill_threads == 1 ? "" : "s");
    qv_cache *c = open_cache(qdir, QV_DURABILITY_FAST);
    uint64_t t0 = now_ns();
    fill_cache(c, n, cfg.fill_threads);
    double fill_s = (double)(now_ns() - t0) / 1e9;
    uint64_t commits;
    QV_CHECK(qv_cache_stat(c, QV_STAT_COMMITS, &commits));
    progress("filled in %.1f s (%.0f stores/s, %llu commits); filling raw LMDB", fill_s, (double)n / fill_s,
             (unsigned long long)commits);
    raw_env r = {0};
    raw_open(&r, rdir, MDB_NOSYNC, (size_t)16 << 30);
    t0 = now_ns();
    raw_fill(&r, n);
    double raw_fill_s = (double)(now_ns() - t0) / 1e9;

    /* warm-up: every page of both tables mapped in */
    qv_iter *it;
    QV_CHECK(qv_cache_query(&it, c, NULL));
    if (qv_iter_count(it) != n) die("query found %zu calls, not %zu", qv_iter_count(it), n);
    qv_iter_free(it);
    raw_scan(&r);

    hit_bench b;
    hit_bench_init(&b, c, &r);
    size_t ops = cfg.rnd_ops;
    q_hits_random(&b, n, ops / 2 + 1, 99);
    f_hits_random(&b, n, ops / 2 + 1, 99);
    double qs[64], fs[64];
    int reps = cfg.rnd_reps < 64 ? cfg.rnd_reps : 64;
    for (int i = 0; i < reps; i++) {
        uint64_t seed = 0x9E3779B97F4A7C15ull * (uint64_t)(i + 1);
        qs[i] = q_hits_random(&b, n, ops, seed);
        fs[i] = f_hits_random(&b, n, ops, seed);
    }
    char name[64];
    snprintf(name, sizeof name, "2. C hit, %zu random keys", n);
    add_row(name, median(qs, reps), median(fs, reps), G_MAX_NS, 1200,
            "fill: quiver %.1f s (%.0f/s, %llu commits), raw %.2f s", fill_s, (double)n / fill_s,
            (unsigned long long)commits, raw_fill_s);
    hit_bench_free(&b);
    raw_close(&r);
    qv_cache_close(c);
    rm_tree(qdir);
    rm_tree(rdir);
}

/* ---------------------------------------------------------------- stores */

static double raw_commit_one(raw_env *r, uint64_t i) {
    uint8_t key[16] = {0}, val[48];
    memcpy(key, &i, sizeof i);
    key[15] = 0x5a;
    memset(val, (int)(i & 0xff), sizeof val);
    MDB_val k = {16, key}, v = {sizeof val, val};
    MDB_txn *txn;
    uint64_t t0 = now_ns();
    MDB_CHECK(mdb_txn_begin(r->env, NULL, 0, &txn));
    MDB_CHECK(mdb_put(txn, r->dbi, &k, &v, 0));
    MDB_CHECK(mdb_txn_commit(txn));
    return (double)(now_ns() - t0);
}

/* What the format itself asks of a store (FORMAT.md 8.2): the record in
 * calls and its entry in the names index, in one commit. The floor under
 * quiver's store once its own work is gone. */
static double raw_commit_format(raw_env *r, uint64_t i) {
    uint8_t key[16] = {0}, val[48], name_key[24];
    memcpy(key, &i, sizeof i);
    key[15] = 0x5a;
    memset(val, (int)(i & 0xff), sizeof val);
    memset(name_key, 0x33, 8); /* one function: its names entries sit together */
    memcpy(name_key + 8, key, 16);
    MDB_val k = {16, key}, v = {sizeof val, val}, nk = {24, name_key}, nv = {0, ""};
    MDB_txn *txn;
    uint64_t t0 = now_ns();
    MDB_CHECK(mdb_txn_begin(r->env, NULL, 0, &txn));
    MDB_CHECK(mdb_put(txn, r->dbi, &k, &v, 0));
    MDB_CHECK(mdb_put(txn, r->names, &nk, &nv, 0));
    MDB_CHECK(mdb_txn_commit(txn));
    return (double)(now_ns() - t0);
}

static double quiver_store_timed(qv_cache *c, store_encoders *e, int64_t arg) {
    uint64_t t0 = now_ns();
    QV_CHECK(store_one(c, e, arg));
    return (double)(now_ns() - t0);
}

static void bench_stores(void) {
    static const struct {
        uint32_t durability;
        unsigned raw_flags;
        const char *name, *raw_name, *dir;
        int div; /* durable commits are slow: fewer samples */
    } modes[] = {
        {QV_DURABILITY_SAFE, MDB_NOMETASYNC, "3. store, safe", "MDB_NOMETASYNC", "store-safe", 1},
        {QV_DURABILITY_DURABLE, 0, "3. store, durable", "default flags", "store-durable", 3},
        {QV_DURABILITY_FAST, MDB_NOSYNC, "3. store, fast", "MDB_NOSYNC", "store-fast", 1},
    };
    for (size_t m = 0; m < sizeof modes / sizeof modes[0]; m++) {
        char qdir[PATH_MAX], rdir[PATH_MAX], fdir[PATH_MAX], rname[64];
        snprintf(rname, sizeof rname, "%s-raw", modes[m].dir);
        subdir(qdir, modes[m].dir);
        subdir(rdir, rname);
        snprintf(rname, sizeof rname, "%s-format", modes[m].dir);
        subdir(fdir, rname);
        int samples = cfg.store_samples / modes[m].div;
        if (samples < 5) samples = 5;
        progress("stores, %s: %d single stores each", modes[m].dir + 6, samples);
        qv_cache *c = open_cache(qdir, modes[m].durability);
        raw_env r = {0}, fr = {0};
        raw_open(&r, rdir, modes[m].raw_flags, (size_t)1 << 30);
        raw_open(&fr, fdir, modes[m].raw_flags, (size_t)1 << 30);
        raw_open_names(&fr);
        store_encoders e;
        store_encoders_init(&e);
        for (int i = 0; i < 5; i++) { /* warm-up */
            quiver_store_timed(c, &e, 1000000 + i);
            raw_commit_one(&r, 1000000 + (uint64_t)i);
            raw_commit_format(&fr, 1000000 + (uint64_t)i);
        }
        double *qs = malloc((size_t)samples * sizeof *qs), *fs = malloc((size_t)samples * sizeof *fs),
               *gs = malloc((size_t)samples * sizeof *gs);
        if (!qs || !fs || !gs) die("out of memory");
        for (int i = 0; i < samples; i++) {
            qs[i] = quiver_store_timed(c, &e, i);
            fs[i] = raw_commit_one(&r, (uint64_t)i);
            gs[i] = raw_commit_format(&fr, (uint64_t)i);
        }
        uint64_t stores, commits;
        QV_CHECK(qv_cache_stat(c, QV_STAT_STORES, &stores));
        QV_CHECK(qv_cache_stat(c, QV_STAT_COMMITS, &commits));
        double floor = median(fs, samples), format = median(gs, samples);
        add_row(modes[m].name, median(qs, samples), floor, G_MAX_RATIO, 1.3,
                "floor: 1 put+commit, %s; the format's calls+names put+commit %.1f us = %.2fx it; median of %d",
                modes[m].raw_name, format / 1e3, format / floor, samples);
        free(qs);
        free(fs);
        free(gs);
        store_encoders_free(&e);
        raw_close(&r);
        raw_close(&fr);
        qv_cache_close(c);
        rm_tree(qdir);
        rm_tree(rdir);
        rm_tree(fdir);
    }
}

/* ---------------------------------------------------------- group commit */

typedef struct {
    qv_cache *c;
    int64_t base;
    _Atomic int *stop;
    pthread_barrier_t *start;
    uint64_t done;
    qv_status st;
    char msg[256];
} group_arg;

static void *group_thread(void *p) {
    group_arg *a = p;
    store_encoders e;
    store_encoders_init(&e);
    pthread_barrier_wait(a->start);
    while (!atomic_load_explicit(a->stop, memory_order_relaxed)) {
        if ((a->st = store_one(a->c, &e, a->base + (int64_t)a->done))) {
            snprintf(a->msg, sizeof a->msg, "%s", qv_errmsg());
            break;
        }
        a->done++;
    }
    store_encoders_free(&e);
    return NULL;
}

/* Stores per second from n threads storing durably for secs seconds. */
static double group_phase(qv_cache *c, int n, double secs, int64_t base, uint64_t *stores) {
    pthread_t tid[64];
    group_arg args[64];
    _Atomic int stop = 0;
    pthread_barrier_t start;
    if (n > 64) n = 64;
    pthread_barrier_init(&start, NULL, (unsigned)n + 1);
    for (int t = 0; t < n; t++) {
        args[t] = (group_arg){c, base + (int64_t)t * 100000000, &stop, &start, 0, QV_OK, ""};
        if (pthread_create(&tid[t], NULL, group_thread, &args[t])) die("pthread_create failed");
    }
    pthread_barrier_wait(&start);
    uint64_t t0 = now_ns();
    struct timespec ts = {(time_t)secs, (long)((secs - (double)(time_t)secs) * 1e9)};
    nanosleep(&ts, NULL);
    atomic_store(&stop, 1);
    *stores = 0;
    for (int t = 0; t < n; t++) {
        pthread_join(tid[t], NULL);
        if (args[t].st) die("durable store from thread %d: %s (%s)", t, qv_status_name(args[t].st), args[t].msg);
        *stores += args[t].done;
    }
    uint64_t t1 = now_ns();
    pthread_barrier_destroy(&start);
    return (double)*stores / ((double)(t1 - t0) / 1e9);
}

/* Stores per second into raw LMDB, durably, k per commit from one thread,
 * each a put into calls and one into names as the format asks: what
 * batching alone gives on this disk, the floor under group commit. */
static double raw_batched_rate(raw_env *r, int k, double secs, uint64_t base) {
    uint64_t t0 = now_ns(), n = 0, end = t0 + (uint64_t)(secs * 1e9);
    while (now_ns() < end) {
        MDB_txn *txn;
        MDB_CHECK(mdb_txn_begin(r->env, NULL, 0, &txn));
        for (int j = 0; j < k; j++, n++) {
            uint8_t key[16], val[48];
            uint64_t h = (base + n) * 0x9E3779B97F4A7C15ull; /* random keys, as digests are */
            memcpy(key, &h, 8);
            memcpy(key + 8, &n, 8);
            memset(val, (int)(n & 0xff), sizeof val);
            uint8_t name_key[24];
            memset(name_key, 0x33, 8);
            memcpy(name_key + 8, key, 16);
            MDB_val kv = {16, key}, vv = {sizeof val, val}, nk = {24, name_key}, nv = {0, ""};
            MDB_CHECK(mdb_put(txn, r->dbi, &kv, &vv, 0));
            MDB_CHECK(mdb_put(txn, r->names, &nk, &nv, 0));
        }
        MDB_CHECK(mdb_txn_commit(txn));
    }
    return (double)n / ((double)(now_ns() - t0) / 1e9);
}

static void bench_group(void) {
    char dir[PATH_MAX];
    subdir(dir, "group-durable");
    int n = cfg.group_threads;
    progress("group commit: 1 thread, then %d threads, storing durably for %.1f s each", n, cfg.group_secs);
    qv_cache *c = open_cache(dir, QV_DURABILITY_DURABLE);
    store_encoders e;
    store_encoders_init(&e);
    for (int i = 0; i < 5; i++) QV_CHECK(store_one(c, &e, 5000000000ll + i)); /* warm-up */
    store_encoders_free(&e);
    uint64_t s0, c0, s1, c1, s2, c2, serial_n, par_n;
    QV_CHECK(qv_cache_stat(c, QV_STAT_STORES, &s0));
    QV_CHECK(qv_cache_stat(c, QV_STAT_COMMITS, &c0));
    double serial = group_phase(c, 1, cfg.group_secs, 0, &serial_n);
    QV_CHECK(qv_cache_stat(c, QV_STAT_STORES, &s1));
    QV_CHECK(qv_cache_stat(c, QV_STAT_COMMITS, &c1));
    double par = group_phase(c, n, cfg.group_secs, 1000000000ll, &par_n);
    QV_CHECK(qv_cache_stat(c, QV_STAT_STORES, &s2));
    QV_CHECK(qv_cache_stat(c, QV_STAT_COMMITS, &c2));
    char name[64];
    /* raw LMDB batching as many puts per commit as quiver's group commit did */
    char rdir[PATH_MAX];
    subdir(rdir, "group-durable-raw");
    raw_env r = {0};
    raw_open(&r, rdir, 0, (size_t)1 << 30);
    raw_open_names(&r);
    double per_commit = c2 > c1 ? (double)(s2 - s1) / (double)(c2 - c1) : 1;
    double raw1 = raw_batched_rate(&r, 1, cfg.group_secs, 0);
    double rawk = raw_batched_rate(&r, (int)(per_commit + 0.5), cfg.group_secs, 1u << 30);
    snprintf(name, sizeof name, "4. %d threads storing durably", n);
    add_row(name, 1e9 / par, 1e9 / serial, G_MIN_SPEEDUP, 6,
            "%.0f stores/s vs %.0f/s serial = %.1fx; raw LMDB, calls+names, %.0f per commit: %.1fx its serial", par, serial,
            par / serial, (double)(int)(per_commit + 0.5), rawk / raw1);
    add_row("   group commit: stores / commits", NAN, NAN, G_NONE, 0,
            "%d thr: %llu stores in %llu commits (%.2f/commit); 1 thr: %llu in %llu", n,
            (unsigned long long)(s2 - s1), (unsigned long long)(c2 - c1),
            c2 > c1 ? (double)(s2 - s1) / (double)(c2 - c1) : 0.0, (unsigned long long)(s1 - s0),
            (unsigned long long)(c1 - c0));
    /* Each synchronous writer has one store in flight, so a commit serves at
     * most n of them: 64 writers show how far batching goes past that. */
    uint64_t wide_n, s3, c3;
    double wide = group_phase(c, 64, cfg.group_secs, 3000000000ll, &wide_n);
    QV_CHECK(qv_cache_stat(c, QV_STAT_STORES, &s3));
    QV_CHECK(qv_cache_stat(c, QV_STAT_COMMITS, &c3));
    double wide_per_commit = c3 > c2 ? (double)(s3 - s2) / (double)(c3 - c2) : 1;
    double raw_wide = raw_batched_rate(&r, (int)(wide_per_commit + 0.5), cfg.group_secs, 2u << 30);
    add_row("   64 threads storing durably", 1e9 / wide, 1e9 / serial, G_MIN_SPEEDUP, 25,
            "%.0f stores/s = %.1fx serial; %.1f stores/commit; raw LMDB, calls+names, as many per commit: %.1fx its serial", wide,
            wide / serial, wide_per_commit, raw_wide / raw1);
    raw_close(&r);
    rm_tree(rdir);
    qv_cache_close(c);
    rm_tree(dir);
}

/* ------------------------------------------------------ pool and wrapping */

static _Atomic uint64_t jobs_done;

static void empty_job(void *job, int cancelled) {
    atomic_fetch_add_explicit(&jobs_done, 1, memory_order_relaxed);
}

static qv_status empty_task(qv_future *f, void *userdata) {
    return qv_future_set_result(f, "\xf6", 1);
}

/* Python's ThreadPoolExecutor, measured by bench/tpe.py just before. */
static double env_ns(const char *name) {
    const char *v = getenv(name);
    return v && *v ? strtod(v, NULL) : NAN;
}

static void bench_pool(void) {
    progress("pool: round trips, then %zu tasks on 2 workers", cfg.pool_tasks);
    qv_pool_options o = QV_POOL_OPTIONS_INIT;
    o.workers = 2;
    qv_pool *p;
    QV_CHECK(qv_pool_new(&p, &o));
    qv_executor *ex = qv_pool_executor(p);
    double rt[64];
    int reps = cfg.hit_reps < 64 ? cfg.hit_reps : 64;
    for (int r = 0; r < reps; r++) {
        uint64_t t0 = now_ns();
        for (int i = 0; i < 2000; i++) {
            qv_future *f;
            QV_CHECK(qv_executor_submit(&f, ex, empty_task, NULL, NULL));
            QV_CHECK(qv_future_wait(f, -1));
            qv_future_free(f);
        }
        rt[r] = (double)(now_ns() - t0) / 2000;
    }
    double tpe_rt = env_ns("QV_TPE_ROUNDTRIP_NS"), tpe_task = env_ns("QV_TPE_TASK_NS");
    add_row("6. pool round trip, empty task", median(rt, reps), tpe_rt, G_NONE, 0,
            "submit + wait one future; floor: ThreadPoolExecutor%s", isnan(tpe_rt) ? " (not measured)" : "");
    /* throughput with futures, as ThreadPoolExecutor gives them */
    size_t n = cfg.pool_tasks;
    qv_future **fs = malloc(n * sizeof *fs);
    if (!fs) die("out of memory");
    uint64_t t0 = now_ns();
    for (size_t i = 0; i < n; i++) QV_CHECK(qv_executor_submit(&fs[i], ex, empty_task, NULL, NULL));
    for (size_t i = 0; i < n; i++) {
        QV_CHECK(qv_future_wait(fs[i], -1));
        qv_future_free(fs[i]);
    }
    double with_futures = (double)(now_ns() - t0) / (double)n;
    free(fs);
    add_row("6. pool throughput, futures", with_futures, tpe_task, G_MIN_SPEEDUP, 20,
            "%zu tasks, 2 workers; floor: ThreadPoolExecutor per task%s", n, isnan(tpe_task) ? " (not measured)" : "");
    atomic_store(&jobs_done, 0);
    t0 = now_ns();
    for (size_t i = 0; i < n; i++) QV_CHECK(qv_executor_post(ex, empty_job, NULL));
    while (atomic_load(&jobs_done) < n) sched_yield();
    add_row("   pool throughput, posted jobs", (double)(now_ns() - t0) / (double)n, tpe_task, G_NONE, 0,
            "no futures (qv_executor_post)");
    qv_pool_free(p);
}

static qv_status square_body(qv_value **result, const qv_value *args, const qv_value *kwargs, void *userdata) {
    int64_t x;
    qv_status st = qv_value_get_int(qv_value_list_get(args, 0), &x);
    return st ? st : qv_value_new_int(result, x * x);
}

static void bench_wrap(void) {
    char dir[PATH_MAX];
    subdir(dir, "wrap");
    progress("wrapped executor: submitting a hit");
    qv_cache *c = open_cache(dir, QV_DURABILITY_FAST);
    qv_fn *fn;
    QV_CHECK(qv_fn_new(&fn, "bench.square", "1", square_body, NULL, NULL));
    qv_value *args, *x, *r;
    QV_CHECK(qv_value_new_list(&args));
    QV_CHECK(qv_value_new_int(&x, 12));
    QV_CHECK(qv_value_list_append(args, x));
    QV_CHECK(qv_ctx_push(c, NULL));
    QV_CHECK(qv_fn_call(fn, args, &r)); /* stores it */
    qv_value_free(r);
    qv_pool *p;
    QV_CHECK(qv_pool_shared(&p, 2, 0));
    qv_executor *w;
    QV_CHECK(qv_executor_wrap(&w, qv_pool_executor(p)));
    double ws[64], hs[64];
    int reps = cfg.hit_reps < 64 ? cfg.hit_reps : 64;
    size_t ops = cfg.hit_ops / 4 + 1;
    for (int rep = 0; rep < reps; rep++) {
        uint64_t t0 = now_ns();
        for (size_t i = 0; i < ops; i++) {
            qv_future *f;
            QV_CHECK(qv_executor_submit_call(&f, w, fn, args, NULL));
            qv_future_free(f);
        }
        ws[rep] = (double)(now_ns() - t0) / (double)ops;
        t0 = now_ns();
        for (size_t i = 0; i < ops; i++) {
            QV_CHECK(qv_fn_call(fn, args, &r));
            qv_value_free(r);
        }
        hs[rep] = (double)(now_ns() - t0) / (double)ops;
    }
    uint64_t completed;
    QV_CHECK(qv_pool_stat(p, QV_POOL_STAT_COMPLETED, &completed));
    add_row("7. wrapped submit of a hit", median(ws, reps), plain_hit_ns, G_MAX_RATIO, 2.0,
            "floor: row 1; a qv_fn_call hit (same tree API) %.1f ns; tasks reaching the pool: %llu", median(hs, reps),
            (unsigned long long)completed);
    QV_CHECK(qv_ctx_pop());
    qv_executor_free(w);
    qv_pool_free(p);
    qv_value_free(args);
    qv_fn_free(fn);
    qv_cache_close(c);
    rm_tree(dir);
}

/* --------------------------------------------------------------- libffi */

static double trivial_f64(double x, int64_t y) {
    return x * (double)y;
}

static void bench_pointer(void) {
    char dir[PATH_MAX];
    subdir(dir, "pointer");
    progress("memoized function pointer: a hit on a hot key");
    qv_cache *c = open_cache(dir, QV_DURABILITY_FAST);
    qv_fn *fn;
    QV_CHECK(qv_fn_new_c(&fn, "bench.trivial", "1", (void (*)(void))trivial_f64, "f64(f64,i64)"));
    double (*memo)(double, int64_t) = (double (*)(double, int64_t))qv_fn_pointer(fn);
    double (*volatile direct)(double, int64_t) = trivial_f64; /* volatile: a real indirect call */
    QV_CHECK(qv_ctx_push(c, NULL));
    double want = memo(1.5, 7); /* stores it */
    double ms[64], ds[64];
    int reps = cfg.hit_reps < 64 ? cfg.hit_reps : 64;
    size_t ops = cfg.hit_ops;
    for (int rep = -1; rep < reps; rep++) {
        double s = 0;
        uint64_t t0 = now_ns();
        for (size_t i = 0; i < ops; i++) s += memo(1.5, 7);
        uint64_t t1 = now_ns();
        for (size_t i = 0; i < ops; i++) s += direct(1.5, 7);
        uint64_t t2 = now_ns();
        if (s != 2 * want * (double)ops) die("the memoized pointer returned a wrong result");
        sink += (uint64_t)s;
        if (rep < 0) continue;
        ms[rep] = (double)(t1 - t0) / (double)ops;
        ds[rep] = (double)(t2 - t1) / (double)ops;
    }
    uint64_t misses;
    QV_CHECK(qv_fn_stat(fn, QV_FN_STAT_MISSES, &misses));
    double m = median(ms, reps);
    add_row("8. memoized fn pointer, hot hit", m, plain_hit_ns, G_MAX_RATIO, 1.2,
            "floor: row 1; goal also <= 350 ns; a direct call %.1f ns; misses %llu", median(ds, reps),
            (unsigned long long)misses);
    QV_CHECK(qv_ctx_pop());
    qv_fn_free(fn);
    qv_cache_close(c);
    rm_tree(dir);
}

/* ---------------------------------------------------------------- digest */

#define BIG (1u << 20)

static void bench_digest(void) {
    progress("encode+digest of a 1 MiB byte string");
    uint8_t *buf = aligned_alloc(64, BIG);
    if (!buf) die("out of memory");
    uint64_t seed = 12345;
    for (size_t i = 0; i < BIG; i += 8) {
        uint64_t x = rnd_next(&seed);
        memcpy(buf + i, &x, 8);
    }
    qv_encoder *enc;
    QV_CHECK(qv_encoder_new(&enc));
    int reps = cfg.dig_reps < 64 ? cfg.dig_reps : 64, iters = cfg.dig_iters;
    double qs[64], ds[64], is[64];
    for (int r = -1; r < reps; r++) { /* r == -1: warm-up */
        qv_digest d;
        uint64_t s = 0, t0 = now_ns();
        for (int i = 0; i < iters; i++) {
            qv_encoder_reset_for_digest(enc);
            QV_CHECK(qv_encoder_bytes(enc, buf, BIG));
            QV_CHECK(qv_encoder_digest(enc, &d));
            s += d.bytes[0];
        }
        uint64_t t1 = now_ns();
        for (int i = 0; i < iters; i++) s += XXH3_128bits_dispatch(buf, BIG).low64;
        uint64_t t2 = now_ns();
        for (int i = 0; i < iters; i++) s += XXH3_128bits(buf, BIG).low64;
        uint64_t t3 = now_ns();
        sink += s;
        if (r < 0) continue;
        qs[r] = (double)(t1 - t0) / iters;
        ds[r] = (double)(t2 - t1) / iters;
        is[r] = (double)(t3 - t2) / iters;
    }
    /* check that quiver's digest is XXH3-128 of the whole encoding */
    uint8_t *enc_buf = malloc(BIG + 5);
    if (!enc_buf) die("out of memory");
    enc_buf[0] = 0x5a; /* bytes, 4-byte length */
    enc_buf[1] = (uint8_t)(BIG >> 24), enc_buf[2] = (uint8_t)(BIG >> 16), enc_buf[3] = (uint8_t)(BIG >> 8),
    enc_buf[4] = (uint8_t)BIG;
    memcpy(enc_buf + 5, buf, BIG);
    XXH128_canonical_t want;
    XXH128_canonicalFromHash(&want, XXH3_128bits(enc_buf, BIG + 5));
    qv_digest got;
    qv_encoder_reset_for_digest(enc);
    QV_CHECK(qv_encoder_bytes(enc, buf, BIG));
    QV_CHECK(qv_encoder_digest(enc, &got));
    if (memcmp(got.bytes, want.digest, 16)) die("quiver's digest of 1 MiB of bytes is not XXH3-128 of its encoding");
    free(enc_buf);
    double q = median(qs, reps), dq = median(ds, reps), iq = median(is, reps);
    add_row("5. encode+digest, 1 MiB bytes", q, dq, G_MIN_GBPS, 25,
            "%.1f GB/s; floor XXH3_128bits_dispatch %.1f GB/s", BIG / q, BIG / dq);
    add_row("   floor: XXH3_128bits (inline, default)", NAN, iq, G_NONE, 0, "%.1f GB/s", BIG / iq);
    qv_encoder_free(enc);
    free(buf);
}

/* ------------------------------------------------------------------ main */

static void default_tmp(void) {
    char base[PATH_MAX];
    if (build_dir(base)) die("cannot find the build directory; pass --tmp DIR");
    if (snprintf(cfg.tmp, sizeof cfg.tmp, "%s/bench-tmp", base) >= (int)sizeof cfg.tmp) die("path too long");
}

static void usage(FILE *f) {
    fprintf(f, "usage: bench_core [--quick] [--entries N] [--fill-threads N] [--tmp DIR]\n"
               "  --quick      a smoke run of a few seconds (small sizes, few repetitions)\n"
               "  --entries N  entries for the random-key hit (default 1000000)\n"
               "  --fill-threads N  threads storing the entries (default 1)\n"
               "  --tmp DIR    where the temporary stores go (default $QUIVER_BUILD/bench-tmp)\n");
}

static void cpu_model(char *out, size_t n) {
    snprintf(out, n, "unknown CPU");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) == 0) {
            char *p = strchr(line, ':');
            if (p) {
                p++;
                while (*p == ' ' || *p == '\t') p++;
                p[strcspn(p, "\n")] = 0;
                snprintf(out, n, "%s", p);
            }
            break;
        }
    }
    fclose(f);
}

int main(int argc, char **argv) {
    size_t entries = 0;
    int quick = 0, fill_threads = 0;
    const char *tmp = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) {
            quick = 1;
        } else if (strcmp(argv[i], "--entries") == 0 && i + 1 < argc) {
            char *end;
            entries = strtoull(argv[++i], &end, 10);
            if (*end || entries == 0) {
                usage(stderr);
                return 2;
            }
        } else if (strcmp(argv[i], "--fill-threads") == 0 && i + 1 < argc) {
            fill_threads = atoi(argv[++i]);
            if (fill_threads < 1 || fill_threads > 64) {
                usage(stderr);
                return 2;
            }
        } else if (strcmp(argv[i], "--tmp") == 0 && i + 1 < argc) {
            tmp = argv[++i];
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (quick) {
        cfg = (config){1, 1000, 20000, 3, 20000, 3, 20000, 20, 0.25, 8, 1, 3, 5, 20000, ""};
    } else {
        cfg = (config){0, 1000, 1000000, 9, 200000, 5, 300000, 300, 2.0, 8, 1, 11, 40, 1000000, ""};
    }
    if (entries) cfg.big_n = entries;
    if (fill_threads) cfg.fill_threads = fill_threads;
    if (!tmp) default_tmp();
    else if (snprintf(cfg.tmp, sizeof cfg.tmp, "%s", tmp) >= (int)sizeof cfg.tmp) die("path too long");
    rm_tree(cfg.tmp);
    if (mkdir(cfg.tmp, 0755) != 0) die("cannot create %s: %s", cfg.tmp, strerror(errno));
    tmp_made = 1;
    setvbuf(stdout, NULL, _IOLBF, 0);

    char cpu[256];
    cpu_model(cpu, sizeof cpu);
    struct utsname un;
    uname(&un);
    int maj, min, pat;
    const char *lmdb = mdb_version(&maj, &min, &pat);
    unsigned xv = XXH_versionNumber();
    printf("quiver bench_core: the C core against raw LMDB / xxHash floors measured in the same run\n");
    printf("  machine : %ld CPUs online (nproc), %s, Linux %s\n", sysconf(_SC_NPROCESSORS_ONLN), cpu, un.release);
    printf("  versions: quiver %s, %s, xxHash %u.%u.%u (inline; libxxhash for _dispatch)\n", qv_version(), lmdb,
           xv / 10000, xv / 100 % 100, xv % 100);
    printf("  run     : %s; medians of interleaved repetitions after a warm-up; stores in %s\n",
           cfg.quick ? "--quick (smoke sizes)" : "full", cfg.tmp);
    fflush(stdout);

    uint64_t t0 = now_ns();
    bench_hot();
    bench_random();
    bench_stores();
    bench_group();
    bench_digest();
    bench_pool();
    bench_wrap();
    bench_pointer();
    double total = (double)(now_ns() - t0) / 1e9;

    printf("\n");
    print_table();
    printf("\nratio = quiver / floor, time per op (lower is better); a MISS is reported, not an error.\n");
    printf("total %.1f s\n", total);
    cleanup();
    return 0;
}
