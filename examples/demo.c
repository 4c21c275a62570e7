/* The C part of the tour: memoize a slow function into a shared cache,
 * call it twice over, and show what the cache holds. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "quiver.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The "expensive" function: a slow Fibonacci. */
static int64_t slow_fib(int64_t n) {
    return n < 2 ? n : slow_fib(n - 1) + slow_fib(n - 2);
}

static int check(qv_status st, const char *what) {
    if (st && st != QV_NOTFOUND) {
        fprintf(stderr, "demo: %s: %s\n", what, qv_errmsg());
        exit(1);
    }
    return st;
}

/* Look the call up; on a miss compute and store it. */
static int64_t fib(qv_cache *c, int64_t n, int *hit) {
    qv_value *args, *arg, *result;
    qv_digest key;
    check(qv_value_new_list(&args), "list");
    check(qv_value_new_int(&arg, n), "int");
    check(qv_value_list_append(args, arg), "append");
    check(qv_call_digest(&key, "demo.fib", "1", args, NULL), "digest");
    int64_t r;
    *hit = check(qv_cache_get_value(c, &key, &result), "lookup") == QV_OK;
    if (*hit) {
        check(qv_value_get_int(result, &r), "result");
    } else {
        double t0 = now();
        r = slow_fib(n);
        qv_store_info info = QV_STORE_INFO_INIT;
        info.duration_ns = (int64_t)((now() - t0) * 1e9);
        check(qv_value_new_int(&result, r), "int");
        check(qv_cache_store_value(c, "demo.fib", "1", args, NULL, result, &info), "store");
    }
    qv_value_free(result);
    qv_value_free(args);
    return r;
}

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : getenv("QUIVER_CACHE");
    if (!path) path = "build/demo-cache";
    qv_cache *c;
    check(qv_cache_open(&c, path, NULL), path);
    printf("quiver %s, cache %s\n\n", qv_version(), qv_cache_path(c));
    for (int round = 1; round <= 2; round++) {
        printf("round %d\n", round);
        for (int64_t n = 26; n <= 30; n++) {
            int hit;
            double t0 = now();
            int64_t r = fib(c, n, &hit);
            printf("  fib(%" PRId64 ") = %-8" PRId64 " %-4s %10.1f us\n", n, r, hit ? "hit" : "miss", (now() - t0) * 1e6);
        }
    }
    printf("\ncache stats\n");
    for (int i = 0; i < QV_STAT_COUNT; i++) {
        uint64_t v;
        if (qv_cache_stat(c, i, &v) == QV_OK) printf("  %-10s %" PRIu64 "\n", qv_stat_name(i), v);
    }
    qv_cache_close(c);
    return 0;
}
