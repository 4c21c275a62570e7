/* The C worker of the interop tests: memoizes interop.square(n, tag) through
 * a libffi function pointer, the way a C program would adopt quiver.
 *
 *   worker_c MODE FIRST LAST      (the cache is QUIVER_CACHE's)
 *
 * MODE "compute" runs the body on misses; "hits" makes every run of the body
 * a failure, so the calls must all be answered from what others stored.
 * Prints one JSON line: lang, runs, sum, and the digest of (FIRST, "alpha").
 * With QV_INTEROP_LOG each run of the body appends "c N" to that file;
 * QV_INTEROP_SLEEP_MS makes it slow. */
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "quiver.h"

static _Atomic int64_t runs;
static int hits_only;

static int64_t square(int64_t n, const char *tag) {
    atomic_fetch_add(&runs, 1);
    if (hits_only) {
        fprintf(stderr, "worker_c: the body ran for (%" PRId64 ", \"%s\") in hits mode\n", n, tag);
        exit(3);
    }
    const char *ms = getenv("QV_INTEROP_SLEEP_MS"), *log = getenv("QV_INTEROP_LOG");
    if (ms) {
        long v = atol(ms);
        struct timespec ts = {v / 1000, (v % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    FILE *f = log ? fopen(log, "a") : NULL;
    if (f) {
        fprintf(f, "c %" PRId64 "\n", n);
        fclose(f);
    }
    return n * n + (int64_t)strlen(tag);
}

static void check(qv_status st, const char *what) {
    if (st) {
        fprintf(stderr, "worker_c: %s: %s\n", what, qv_errmsg());
        exit(2);
    }
}

int main(int argc, char **argv) {
    if (argc != 4 || (strcmp(argv[1], "compute") && strcmp(argv[1], "hits"))) {
        fprintf(stderr, "usage: worker_c compute|hits FIRST LAST\n");
        return 2;
    }
    hits_only = !strcmp(argv[1], "hits");
    int64_t first = strtoll(argv[2], NULL, 10), last = strtoll(argv[3], NULL, 10);

    qv_fn *fn;
    check(qv_fn_new_c(&fn, "interop.square", "1", (void (*)(void))square, "i64(i64,str)"), "qv_fn_new_c");
    int64_t (*memo)(int64_t, const char *) = (int64_t(*)(int64_t, const char *))qv_fn_pointer(fn);
    int64_t sum = 0;
    for (int64_t n = first; n <= last; n++) sum += memo(n, "alpha");

    qv_value *args, *item;
    check(qv_value_new_list(&args), "list");
    check(qv_value_new_int(&item, first), "int");
    check(qv_value_list_append(args, item), "append");
    check(qv_value_new_text(&item, "alpha", 5), "text");
    check(qv_value_list_append(args, item), "append");
    qv_digest d;
    check(qv_fn_digest(&d, fn, args, NULL), "digest");
    char hex[33];
    qv_digest_hex(&d, hex);
    qv_value_free(args);
    printf("{\"lang\": \"c\", \"runs\": %" PRId64 ", \"sum\": %" PRId64 ", \"digest\": \"%s\"}\n",
           (int64_t)atomic_load(&runs), sum, hex);
    qv_fn_free(fn);
    return 0;
}
