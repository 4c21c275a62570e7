/* fork() while other threads hit and store: the child inherits every lock of
 * the cache and the store in whatever state those threads left it, and has
 * none of the threads. Every handle must still work in the child; nothing
 * may hang (a child that does is killed by its alarm and the test fails).
 *
 * Built without sanitizers: clang 14's AddressSanitizer and ThreadSanitizer
 * allocators take no lock across fork(), so a child of a process whose other
 * threads allocate can hang inside malloc, whatever the library does. glibc's
 * malloc is fork-safe. Children report by exit code; only the parent calls
 * cmocka. */
#define _GNU_SOURCE
#include "helpers.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char FN[] = "fork_fn";

static qv_value *args_of(int64_t k) {
    qv_value *args, *v;
    if (qv_value_new_list(&args)) return NULL;
    if (qv_value_new_int(&v, k) || qv_value_list_append(args, v)) {
        qv_value_free(args);
        return NULL;
    }
    return args;
}

static qv_status store_int(qv_cache *c, int64_t k) {
    qv_value *args = args_of(k), *res = NULL;
    qv_status st = args ? qv_value_new_int(&res, k * 7 + 1) : QV_ENOMEM;
    if (!st) st = qv_cache_store_value(c, FN, NULL, args, NULL, res, NULL);
    qv_value_free(args);
    qv_value_free(res);
    return st;
}

/* 0 when k's result reads back right. */
static int check_int(qv_cache *c, int64_t k) {
    qv_value *args = args_of(k), *res = NULL;
    qv_digest d;
    int64_t v = 0;
    int bad = !args || qv_call_digest(&d, FN, NULL, args, NULL) || qv_cache_get_value(c, &d, &res) ||
              qv_value_get_int(res, &v) || v != k * 7 + 1;
    qv_value_free(args);
    qv_value_free(res);
    return bad;
}

typedef struct {
    qv_cache *c;
    int64_t base;
    int stores; /* 1: store new keys; 0: hit key 0 */
    _Atomic int stop;
    long errors;
} hammer;

static void *hammer_cache(void *p) {
    hammer *h = p;
    /* the same few thousand keys again and again: reruns keep the cache small */
    for (int64_t i = 0; !atomic_load(&h->stop); i++)
        if (h->stores ? store_int(h->c, h->base + i % 4000) != QV_OK : check_int(h->c, 0)) h->errors++;
    return NULL;
}

static int child_uses(qv_cache *c, int64_t k) {
    alarm(20); /* a hang is a failure: the parent sees SIGALRM */
    if (check_int(c, 0)) return 1;
    if (store_int(c, k) != QV_OK) return 2;
    if (check_int(c, k)) return 3;
    uint64_t bad = 1;
    if (qv_cache_verify(c, 0, &bad) != QV_OK || bad) return 4;
    qv_cache_close(c);
    return 0;
}

static void fork_while_threads_use(qv_cache *c, const char *what) {
    QVT_OK(store_int(c, 0));
    hammer h[2] = {{c, 1000000, 0, 0, 0}, {c, 2000000, 1, 0, 0}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++) pthread_create(&th[i], NULL, hammer_cache, &h[i]);
    char failed[256] = "";
    for (int i = 0; i < 100 && !failed[0]; i++) {
        struct timespec ts = {0, 1000 * 1000};
        nanosleep(&ts, NULL);
        fflush(stdout);
        pid_t pid = fork();
        if (pid < 0) fail_msg("fork: %s", strerror(errno));
        if (pid == 0) _exit(child_uses(c, 3000000 + i));
        int ws;
        while (waitpid(pid, &ws, 0) < 0 && errno == EINTR) {
        }
        if (!WIFEXITED(ws) || WEXITSTATUS(ws))
            snprintf(failed, sizeof failed, "%s: child after fork %d: %s %d", what, i,
                     WIFEXITED(ws) ? "exit" : "signal", WIFEXITED(ws) ? WEXITSTATUS(ws) : WTERMSIG(ws));
    }
    for (int i = 0; i < 2; i++) { /* stopped before failing: they use this frame */
        atomic_store(&h[i].stop, 1);
        pthread_join(th[i], NULL);
    }
    if (failed[0]) fail_msg("%s", failed);
    assert_int_equal(h[0].errors, 0);
    assert_int_equal(h[1].errors, 0);
}

static void fork_while_threads_use_a_memory_cache(void **state) {
    qv_cache *c;
    QVT_OK(qv_cache_open_memory(&c)); /* with its default size limit, so hits note their keys */
    fork_while_threads_use(c, "memory");
    qv_cache_close(c);
}

static void fork_while_threads_use_an_lmdb_cache(void **state) {
    char *dir = qvt_tempdir("fork");
    qv_cache_options o = QV_CACHE_OPTIONS_INIT;
    o.durability = QV_DURABILITY_FAST;
    o.max_bytes = (uint64_t)1 << 30; /* hits note their keys */
    qv_cache *c;
    QVT_OK(qv_cache_open(&c, dir, &o));
    fork_while_threads_use(c, "lmdb");
    qv_cache_close(c);
    qvt_rmtree(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fork_while_threads_use_a_memory_cache),
        cmocka_unit_test(fork_while_threads_use_an_lmdb_cache),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
