/* A cache for the CLI tests: two stored calls, one with a result large
 * enough to live in the values store and one with a start time, duration,
 * language and metadata of its own, and N more small ones (cli.many) to
 * make a pass long enough to report progress. Prints the large call's digest.
 * Usage: make_cache CACHE_DIR [N] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quiver.h"

static int fail(const char *what, qv_status st) {
    fprintf(stderr, "make_cache: %s: %s: %s\n", what, qv_status_name(st), qv_errmsg());
    return 1;
}

/* Store name(x) = result; the caller's result is consumed. */
static qv_status store(qv_cache *cache, const char *name, int64_t x, qv_value *result, const qv_store_info *info,
                       qv_digest *key) {
    qv_value *args = NULL, *item = NULL;
    qv_status st;
    if (!(st = qv_value_new_list(&args)) && !(st = qv_value_new_int(&item, x)) &&
        !(st = qv_value_list_append(args, item)) &&
        !(st = qv_cache_store_value(cache, name, "1", args, NULL, result, info)))
        st = qv_call_digest(key, name, "1", args, NULL);
    qv_value_free(args);
    qv_value_free(result);
    return st;
}

int main(int argc, char **argv) {
    if (argc != 2 && argc != 3) {
        fputs("usage: make_cache CACHE_DIR [N]\n", stderr);
        return 2;
    }
    qv_cache *cache;
    qv_status st = qv_cache_open(&cache, argv[1], NULL);
    if (st) return fail(argv[1], st);
    static uint8_t big[4096];
    memset(big, 0xab, sizeof big);
    /* {"project": "p1"} */
    static const uint8_t meta[] = {0xa1, 0x67, 'p', 'r', 'o', 'j', 'e', 'c', 't', 0x62, 'p', '1'};
    qv_store_info info = QV_STORE_INFO_INIT;
    info.start_ns = 1700000000123456789;
    info.duration_ns = 1500;
    info.lang = "python";
    info.meta = meta;
    info.meta_len = sizeof meta;
    qv_value *small_result, *big_result;
    qv_digest small_key, big_key;
    if ((st = qv_value_new_int(&small_result, 2)) ||
        (st = store(cache, "cli.small", 1, small_result, &info, &small_key)) ||
        (st = qv_value_new_bytes(&big_result, big, sizeof big)) ||
        (st = store(cache, "cli.big", 7, big_result, NULL, &big_key))) {
        qv_cache_close(cache);
        return fail("store", st);
    }
    long many = argc == 3 ? strtol(argv[2], NULL, 10) : 0;
    qv_digest key;
    for (long i = 0; i < many && !st; i++) {
        qv_value *r;
        if (!(st = qv_value_new_int(&r, i))) st = store(cache, "cli.many", i, r, NULL, &key);
    }
    if (st) {
        qv_cache_close(cache);
        return fail("store many", st);
    }
    char hex[33];
    qv_digest_hex(&big_key, hex);
    puts(hex);
    qv_cache_close(cache);
    return 0;
}
