/* A program built against an installed quiver: a memoized C function pointer
 * over a memory cache, called twice (one miss, one hit). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "quiver.h"

static int64_t square(int64_t n) { return n * n; }

static void check(qv_status st) {
    if (st) {
        fprintf(stderr, "hello: %s\n", qv_errmsg());
        exit(1);
    }
}

int main(void) {
    qv_cache *cache;
    qv_fn *fn;
    check(qv_cache_open_memory(&cache));
    check(qv_ctx_push(cache, NULL));
    check(qv_fn_new_c(&fn, "install.square", "1", (void (*)(void))square, "i64(i64)"));
    int64_t (*memo_square)(int64_t) = (int64_t(*)(int64_t))qv_fn_pointer(fn);
    int64_t sum = memo_square(7) + memo_square(7);
    uint64_t hits;
    check(qv_fn_stat(fn, QV_FN_STAT_HITS, &hits));
    printf("quiver %s: %" PRId64 ", %" PRIu64 " hit\n", qv_version(), sum, hits);
    qv_fn_free(fn);
    check(qv_ctx_pop());
    qv_cache_close(cache);
    return sum == 98 && hits == 1 ? 0 : 1;
}
