/* The C part of the tour: swap a memoized function pointer in for a slow
 * function and call it over a range of arguments. The function is the
 * tour's shared "shared.score" (examples/tour.py and tour.lua compute the
 * same one under the same name), so whatever Python or Lua stored already
 * comes back as a hit here, and what C computes is there for them.
 *
 *   quiver_demo [FIRST [LAST]]     (the default cache: QUIVER_CACHE, else ~/.cache/quiver)
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "quiver.h"

/* The "expensive" function; the same integer arithmetic in every language
 * of the tour, so every language gets the same result. */
static int64_t score(int64_t n) {
    int64_t s = 0;
    for (int64_t i = 0; i < 300000; i++) s += (i * n) % 7;
    return s;
}

static void check(qv_status st, const char *what) {
    if (st) {
        fprintf(stderr, "quiver_demo: %s: %s\n", what, qv_errmsg());
        exit(1);
    }
}

int main(int argc, char **argv) {
    int64_t first = argc > 1 ? strtoll(argv[1], NULL, 10) : 0;
    int64_t last = argc > 2 ? strtoll(argv[2], NULL, 10) : 79;
    qv_cache *cache;
    check(qv_cache_default(&cache), "the default cache");

    qv_fn *fn;
    check(qv_fn_new_c(&fn, "shared.score", "1", (void (*)(void))score, "i64(i64)"), "qv_fn_new_c");
    /* From here on the program calls score through the memoized pointer,
     * exactly as it called the original. */
    int64_t (*memo_score)(int64_t) = (int64_t(*)(int64_t))qv_fn_pointer(fn);

    int64_t total = 0;
    for (int64_t n = first; n <= last; n++) total += memo_score(n);

    uint64_t hits, misses, saved;
    check(qv_fn_stat(fn, QV_FN_STAT_HITS, &hits), "stat");
    check(qv_fn_stat(fn, QV_FN_STAT_MISSES, &misses), "stat");
    check(qv_fn_stat(fn, QV_FN_STAT_SAVED_NS, &saved), "stat");
    printf("c       score(%" PRId64 "..%" PRId64 ") through a memoized function pointer: sum %" PRId64 "\n", first,
           last, total);
    printf("c       %3" PRIu64 " calls, %3" PRIu64 " hits, %3" PRIu64 " misses, %.3f s saved (cache %s)\n",
           hits + misses, hits, misses, (double)saved / 1e9, qv_cache_path(cache));
    qv_fn_free(fn);
    return 0;
}
