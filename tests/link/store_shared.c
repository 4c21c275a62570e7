/* The ctest fixture for the link tests: stores one call the way a C program
 * would, so that the Rust and Go tests can find it by a digest they compute
 * from their own values. Usage: store_shared CACHE_DIR */
#include <stdio.h>

#include "quiver.h"

static int fail(const char *what, qv_status st) {
    fprintf(stderr, "store_shared: %s: %s: %s\n", what, qv_status_name(st), qv_errmsg());
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fputs("usage: store_shared CACHE_DIR\n", stderr);
        return 2;
    }
    qv_cache *cache;
    qv_status st = qv_cache_open(&cache, argv[1], NULL);
    if (st) return fail(argv[1], st);

    /* link.shared version "1", args [7, "alpha"], kwargs {}, result 42.5 */
    qv_value *args = NULL, *item = NULL, *result = NULL;
    int rc = 1;
    if ((st = qv_value_new_list(&args)) || (st = qv_value_new_int(&item, 7)) ||
        (st = qv_value_list_append(args, item)) || (st = qv_value_new_text(&item, "alpha", 5)) ||
        (st = qv_value_list_append(args, item)) || (st = qv_value_new_float(&result, 42.5))) {
        rc = fail("building the call", st);
        goto out;
    }
    qv_store_info info = QV_STORE_INFO_INIT;
    info.lang = "c";
    if ((st = qv_cache_store_value(cache, "link.shared", "1", args, NULL, result, &info))) {
        rc = fail("store", st);
        goto out;
    }
    qv_digest key;
    char hex[33];
    if ((st = qv_call_digest(&key, "link.shared", "1", args, NULL))) {
        rc = fail("digest", st);
        goto out;
    }
    qv_digest_hex(&key, hex);
    printf("stored link.shared(7, \"alpha\") = 42.5 under %s in %s\n", hex, qv_cache_path(cache));
    rc = 0;
out:
    qv_value_free(result);
    qv_value_free(args);
    qv_cache_close(cache);
    return rc;
}
