/* The C writer of the kill loops (kill_loops.py): stores soak.kill(W, i)
 * for i = 0, 1, 2, ... into one cache through a libffi function pointer, as
 * a C program adopting quiver would, until it is killed.
 *
 *   soak_writer CACHE DURABILITY W LOG
 *
 * After each store it calls again, and the body must not run: the call is
 * a hit, so the store is committed and readable. Only then does it append
 * "W i" to LOG and fsync it: a line in LOG is a store this writer saw
 * succeed, which kill_loops.py requires to survive the kill. The Python and
 * Lua writers (writer.py, writer.lua) do the same with the same values. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "quiver.h"

#define VALUE_MAX 1600 /* results of up to 1540 bytes: past the inline limit, into the values table */
#define RUN_SECONDS 60 /* a writer nobody kills stops by itself */

static int hits_only;

/* The stored result of soak.kill(w, i), identical in the three writers and
 * in kill_loops.py's check: "w:i:" and then 1 to 1500 letters. */
static void make_value(char out[VALUE_MAX], int64_t w, int64_t i) {
    int n = snprintf(out, VALUE_MAX, "%" PRId64 ":%" PRId64 ":", w, i);
    int64_t len = 1 + (w * 31 + i * 7919) % 1500;
    for (int64_t k = 0; k < len; k++) out[n + k] = (char)('a' + (w + i + k) % 26);
    out[n + len] = '\0';
}

static const char *kill_value(int64_t w, int64_t i) {
    static char value[VALUE_MAX];
    if (hits_only) {
        fprintf(stderr, "soak_writer: soak.kill(%" PRId64 ", %" PRId64 ") was stored, yet ran again\n", w, i);
        exit(4);
    }
    make_value(value, w, i);
    return value;
}

static void check(qv_status st, const char *what) {
    if (st) {
        fprintf(stderr, "soak_writer: %s: %s\n", what, qv_errmsg());
        exit(2);
    }
}

int main(int argc, char **argv) {
    static const struct {
        const char *name;
        uint32_t durability;
    } modes[] = {{"safe", QV_DURABILITY_SAFE}, {"durable", QV_DURABILITY_DURABLE}, {"fast", QV_DURABILITY_FAST}};
    if (argc != 5) {
        fprintf(stderr, "usage: soak_writer CACHE safe|durable|fast W LOG\n");
        return 2;
    }
    qv_cache_options opts = QV_CACHE_OPTIONS_INIT;
    size_t m = 0;
    while (m < 3 && strcmp(argv[2], modes[m].name)) m++;
    if (m == 3) {
        fprintf(stderr, "soak_writer: unknown durability %s\n", argv[2]);
        return 2;
    }
    opts.durability = modes[m].durability;
    int64_t w = strtoll(argv[3], NULL, 10);
    int log = open(argv[4], O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (log < 0) {
        fprintf(stderr, "soak_writer: %s: %s\n", argv[4], strerror(errno));
        return 2;
    }
    qv_cache *c;
    check(qv_cache_open(&c, argv[1], &opts), argv[1]);
    check(qv_ctx_push(c, NULL), "qv_ctx_push");
    qv_fn *fn;
    check(qv_fn_new_c(&fn, "soak.kill", "1", (void (*)(void))kill_value, "str(i64,i64)"), "qv_fn_new_c");
    const char *(*memo)(int64_t, int64_t) = (const char *(*)(int64_t, int64_t))qv_fn_pointer(fn);
    if (!memo) check(QV_EFAILED, "qv_fn_pointer");

    time_t stop = time(NULL) + RUN_SECONDS;
    char line[64], expect[VALUE_MAX];
    for (int64_t i = 0; time(NULL) < stop; i++) {
        const char *got = memo(w, i);
        if (!got) check(QV_EFAILED, "soak.kill");
        hits_only = 1;
        got = memo(w, i);
        hits_only = 0;
        make_value(expect, w, i);
        if (!got || strcmp(got, expect)) {
            fprintf(stderr, "soak_writer: soak.kill(%" PRId64 ", %" PRId64 ") hit with a wrong value\n", w, i);
            return 3;
        }
        int n = snprintf(line, sizeof line, "%" PRId64 " %" PRId64 "\n", w, i);
        if (write(log, line, (size_t)n) != n || fsync(log)) {
            fprintf(stderr, "soak_writer: %s: %s\n", argv[4], strerror(errno));
            return 2;
        }
    }
    qv_ctx_pop();
    qv_fn_free(fn);
    qv_cache_close(c);
    return 0;
}
