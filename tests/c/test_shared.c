/* Shared counters and dicts (qv_counter_*, qv_dict_*): named entries in a
 * cache's store that threads and processes change atomically. Totals must be
 * exact: an increment lost to a race is the bug these tests look for. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"

static int small(void) {
    return getenv("QV_SMALL") != NULL;
}

static int64_t get(qv_cache *c, const char *name, const char *key) {
    int64_t v = -999;
    QVT_OK(qv_counter_get(&v, c, name, key, strlen(key)));
    return v;
}

static void counters_add_and_read(void **state) {
    char *dir = qvt_tempdir("shared-basic");
    qv_cache *c;
    QVT_OK(qv_cache_open(&c, dir, NULL));
    int64_t v;
    assert_int_equal(get(c, "n", "a"), 0);
    QVT_OK(qv_counter_add(&v, c, "n", "a", 1, 5));
    assert_int_equal(v, 5);
    QVT_OK(qv_counter_add(&v, c, "n", "a", 1, -7));
    assert_int_equal(v, -2);
    QVT_OK(qv_counter_add(NULL, c, "n", "b", 1, 1));
    QVT_OK(qv_counter_add(NULL, c, "m", "a", 1, 100)); /* another counter */
    QVT_OK(qv_counter_add(NULL, c, "n", "", 0, 3));    /* the empty key is a key */
    assert_int_equal(get(c, "n", "a"), -2);
    assert_int_equal(get(c, "n", "b"), 1);
    assert_int_equal(get(c, "n", ""), 3);
    assert_int_equal(get(c, "m", "a"), 100);

    /* an overflow writes nothing */
    QVT_OK(qv_counter_add(&v, c, "big", "k", 1, INT64_MAX));
    assert_int_equal(qv_counter_add(&v, c, "big", "k", 1, 1), QV_ERANGE);
    assert_non_null(strstr(qv_errmsg(), "int64"));
    assert_true(get(c, "big", "k") == INT64_MAX);
    QVT_OK(qv_counter_add(&v, c, "big", "j", 1, INT64_MIN));
    assert_true(get(c, "big", "j") == INT64_MIN);

    /* a restart keeps them */
    qv_cache_close(c);
    QVT_OK(qv_cache_open(&c, dir, NULL));
    assert_int_equal(get(c, "n", "a"), -2);

    /* [key, count] pairs in key order: "", "a", "b" */
    qv_value *items;
    QVT_OK(qv_counter_items(&items, c, "n"));
    assert_int_equal(qv_value_count(items), 3);
    const qv_value *pair = qv_value_list_get(items, 1), *k = qv_value_list_get(pair, 0);
    const uint8_t *kb;
    size_t kn;
    int64_t n;
    QVT_OK(qv_value_get_bytes(k, &kb, &kn));
    assert_int_equal(kn, 1);
    assert_memory_equal(kb, "a", 1);
    QVT_OK(qv_value_get_int(qv_value_list_get(pair, 1), &n));
    assert_int_equal(n, -2);
    qv_value_free(items);

    uint64_t removed = 0;
    QVT_OK(qv_counter_clear(&removed, c, "n"));
    assert_int_equal(removed, 3);
    QVT_OK(qv_counter_items(&items, c, "n"));
    assert_int_equal(qv_value_count(items), 0);
    qv_value_free(items);
    assert_int_equal(get(c, "n", "a"), 0);
    assert_int_equal(get(c, "m", "a"), 100); /* "m" is not a prefix match of "n" */
    QVT_OK(qv_counter_clear(&removed, c, "n"));
    assert_int_equal(removed, 0);
    qv_cache_close(c);
    qvt_rmtree(dir);
    free(dir);
}

static void dicts_set_get_del(void **state) {
    char *dir = qvt_tempdir("shared-dict");
    qv_cache *c;
    QVT_OK(qv_cache_open(&c, dir, NULL));
    static const uint8_t list[] = {0x82, 0x01, 0x63, 'a', 'b', 'c'}; /* [1, "abc"] */
    void *data;
    size_t len;
    assert_int_equal(qv_dict_get(&data, &len, c, "d", "k", 1), QV_NOTFOUND);
    assert_null(data);
    QVT_OK(qv_dict_set(c, "d", "k", 1, list, sizeof list));
    QVT_OK(qv_dict_get(&data, &len, c, "d", "k", 1));
    assert_int_equal(len, sizeof list);
    assert_memory_equal(data, list, len);
    qv_free(data);
    static const uint8_t one[] = {0x01};
    QVT_OK(qv_dict_set(c, "d", "k", 1, one, 1)); /* replaces */
    QVT_OK(qv_dict_get(&data, &len, c, "d", "k", 1));
    assert_int_equal(len, 1);
    qv_free(data);

    /* a counter and a dict of one name are two things */
    QVT_OK(qv_counter_add(NULL, c, "d", "k", 1, 9));
    QVT_OK(qv_dict_get(&data, &len, c, "d", "k", 1));
    assert_int_equal(((uint8_t *)data)[0], 0x01);
    qv_free(data);

    /* not one canonical item */
    static const uint8_t bad[] = {0x18, 0x01}; /* 1 in two bytes */
    assert_int_equal(qv_dict_set(c, "d", "x", 1, bad, sizeof bad), QV_EDECODE);
    assert_int_equal(qv_dict_set(c, "d", "x", 1, list, sizeof list - 1), QV_EDECODE);
    assert_int_equal(qv_dict_get(&data, &len, c, "d", "x", 1), QV_NOTFOUND);

    QVT_OK(qv_dict_del(c, "d", "k", 1));
    assert_int_equal(qv_dict_del(c, "d", "k", 1), QV_NOTFOUND);
    assert_int_equal(qv_dict_get(&data, &len, c, "d", "k", 1), QV_NOTFOUND);
    assert_int_equal(get(c, "d", "k"), 9);

    for (int i = 0; i < 10; i++) QVT_OK(qv_dict_set(c, "e", &i, sizeof i, one, 1));
    qv_value *items;
    QVT_OK(qv_dict_items(&items, c, "e"));
    assert_int_equal(qv_value_count(items), 10);
    const uint8_t *vb;
    size_t vn;
    QVT_OK(qv_value_get_bytes(qv_value_list_get(qv_value_list_get(items, 0), 1), &vb, &vn));
    assert_int_equal(vn, 1);
    assert_memory_equal(vb, one, 1);
    qv_value_free(items);
    uint64_t removed;
    QVT_OK(qv_dict_clear(&removed, c, "e"));
    assert_int_equal(removed, 10);
    assert_int_equal(get(c, "d", "k"), 9);
    qv_cache_close(c);
    qvt_rmtree(dir);
    free(dir);
}

static void bad_arguments(void **state) {
    char *dir = qvt_tempdir("shared-bad");
    qv_cache *c;
    QVT_OK(qv_cache_open(&c, dir, NULL));
    char name[300], key[600];
    memset(name, 'n', sizeof name);
    memset(key, 'k', sizeof key);
    name[256] = 0;
    assert_int_equal(qv_counter_add(NULL, c, name, "k", 1, 1), QV_EINVAL);
    assert_int_equal(qv_counter_add(NULL, c, "", "k", 1, 1), QV_EINVAL);
    assert_int_equal(qv_counter_add(NULL, NULL, "n", "k", 1, 1), QV_EINVAL);
    assert_int_equal(qv_counter_add(NULL, c, NULL, "k", 1, 1), QV_EINVAL);
    assert_int_equal(qv_counter_add(NULL, c, "n", NULL, 1, 1), QV_EINVAL);
    assert_int_equal(qv_counter_get(NULL, c, "n", "k", 1), QV_EINVAL);
    /* the longest key fits LMDB; one byte more is refused before LMDB sees it */
    name[255] = 0;
    QVT_OK(qv_counter_add(NULL, c, name, key, QV_SHARED_KEY_MAX - 255, 1));
    assert_int_equal(qv_counter_add(NULL, c, name, key, QV_SHARED_KEY_MAX - 254, 1), QV_EINVAL);
    assert_non_null(strstr(qv_errmsg(), "509"));
    qv_cache_close(c);

    /* read-only: reads, no changes */
    qv_cache_options o = QV_CACHE_OPTIONS_INIT;
    o.flags = QV_CACHE_READONLY;
    QVT_OK(qv_cache_open(&c, dir, &o));
    assert_int_equal(get(c, name, "kkk") + 1, 1);
    assert_int_equal(qv_counter_add(NULL, c, "n", "k", 1, 1), QV_EREADONLY);
    assert_int_equal(qv_dict_set(c, "n", "k", 1, "\x01", 1), QV_EREADONLY);
    assert_int_equal(qv_dict_del(c, "n", "k", 1), QV_EREADONLY);
    assert_int_equal(qv_counter_clear(NULL, c, "n"), QV_EREADONLY);
    qv_cache_close(c);

    /* a stack refuses them with the reason */
    qv_cache *local, *other, *stack;
    char *dir2 = qvt_tempdir("shared-bad2");
    QVT_OK(qv_cache_open(&local, dir, NULL));
    QVT_OK(qv_cache_open(&other, dir2, NULL));
    QVT_OK(qv_cache_stack(&stack, local, other, NULL));
    assert_int_equal(qv_counter_add(NULL, stack, "n", "k", 1, 1), QV_EINVAL);
    assert_non_null(strstr(qv_errmsg(), "stack"));
    void *data;
    size_t len;
    assert_int_equal(qv_dict_get(&data, &len, stack, "n", "k", 1), QV_EINVAL);
    qv_cache_close(stack);
    qv_cache_close(other);
    qv_cache_close(local);
    qvt_rmtree(dir2);
    free(dir2);
    qvt_rmtree(dir);
    free(dir);
}

static void memory_cache(void **state) {
    qv_cache *c;
    QVT_OK(qv_cache_open_memory(&c));
    int64_t v;
    QVT_OK(qv_counter_add(&v, c, "n", "a", 1, 2));
    QVT_OK(qv_counter_add(&v, c, "n", "a", 1, 2));
    assert_int_equal(v, 4);
    QVT_OK(qv_dict_set(c, "d", "a", 1, "\x01", 1));
    uint64_t removed;
    QVT_OK(qv_counter_clear(&removed, c, "n"));
    assert_int_equal(removed, 1);
    qv_cache_close(c);
}

/* A cache made before shared entries existed (or that never had one) has
 * no "shared" directory: read-only it reads every entry as absent, and the
 * first change makes the directory. */
static void cache_without_shared_entries(void **state) {
    char *dir = qvt_tempdir("shared-old");
    qv_cache *c;
    QVT_OK(qv_cache_open(&c, dir, NULL));
    assert_int_equal(get(c, "n", "a"), 0); /* reading makes it: this handle may write */
    qv_cache_close(c);
    char sub[4096];
    snprintf(sub, sizeof sub, "%s/shared", dir);
    qvt_rmtree(sub);

    qv_cache_options o = QV_CACHE_OPTIONS_INIT;
    o.flags = QV_CACHE_READONLY;
    QVT_OK(qv_cache_open(&c, dir, &o));
    assert_int_equal(get(c, "n", "a"), 0);
    void *data;
    size_t len;
    assert_int_equal(qv_dict_get(&data, &len, c, "d", "a", 1), QV_NOTFOUND);
    assert_int_equal(access(sub, F_OK), -1);
    qv_cache_close(c);
    QVT_OK(qv_cache_open(&c, dir, NULL));
    QVT_OK(qv_counter_add(NULL, c, "n", "a", 1, 1));
    assert_int_equal(access(sub, F_OK), 0);
    qv_cache_close(c);
    QVT_OK(qv_cache_open(&c, dir, &o));
    assert_int_equal(get(c, "n", "a"), 1);
    qv_cache_close(c);
    qvt_rmtree(dir);
    free(dir);
}

/* The canonical encoding of v, in a static buffer. */
static const uint8_t *encode_int(int64_t v, size_t *len) {
    static uint8_t buf[9];
    qv_encoder *enc;
    const void *data;
    if (qv_encoder_new(&enc) || qv_encoder_int(enc, v) || qv_encoder_finish(enc, &data, len)) abort();
    memcpy(buf, data, *len);
    qv_encoder_free(enc);
    return buf;
}

typedef struct {
    qv_cache *c;
    int n, id;
} worker;

static void *bump(void *arg) {
    worker *w = arg;
    char key[8];
    snprintf(key, sizeof key, "t%d", w->id % 2);
    for (int i = 0; i < w->n; i++) {
        if (qv_counter_add(NULL, w->c, "hits", "all", 3, 1) || qv_counter_add(NULL, w->c, "hits", key, 2, 2)) return arg;
        if (i % 16 == 0 && qv_dict_set(w->c, "last", &w->id, sizeof w->id, "\x01", 1)) return arg;
    }
    return NULL;
}

static void threads_lose_no_increment(void **state) {
    char *dir = qvt_tempdir("shared-threads");
    qv_cache *c;
    QVT_OK(qv_cache_open(&c, dir, NULL));
    enum { T = 4 };
    int n = small() ? 100 : 1000;
    pthread_t th[T];
    worker w[T];
    for (int i = 0; i < T; i++) {
        w[i] = (worker){c, n, i};
        assert_int_equal(pthread_create(&th[i], NULL, bump, &w[i]), 0);
    }
    for (int i = 0; i < T; i++) {
        void *failed;
        pthread_join(th[i], &failed);
        if (failed) fail_msg("worker %d: %s", i, qv_errmsg());
    }
    assert_int_equal(get(c, "hits", "all"), T * n);
    assert_int_equal(get(c, "hits", "t0"), T / 2 * n * 2);
    assert_int_equal(get(c, "hits", "t1"), T / 2 * n * 2);
    qv_cache_close(c);
    qvt_rmtree(dir);
    free(dir);
}

/* Children forked before any thread starts, each with its own handle, as
 * process-pool workers have: one LMDB writer lock orders their increments. */
static void processes_lose_no_increment(void **state) {
    char *dir = qvt_tempdir("shared-procs");
    qv_cache *c;
    QVT_OK(qv_cache_open(&c, dir, NULL));
    QVT_OK(qv_counter_add(NULL, c, "hits", "all", 3, 1000)); /* the parent's handle stays open across fork */
    enum { P = 4 };
    int n = small() ? 200 : 2000;
    pid_t pids[P];
    for (int i = 0; i < P; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            int ok = 1;
            qv_cache *mine;
            /* even numbered children reuse the inherited handle, odd ones open their own */
            if (i % 2) ok = qv_cache_open(&mine, dir, NULL) == QV_OK;
            else mine = c;
            for (int k = 0; ok && k < n; k++) ok = qv_counter_add(NULL, mine, "hits", "all", 3, 1) == QV_OK;
            size_t len;
            const uint8_t *v = encode_int(getpid(), &len);
            if (ok) ok = qv_dict_set(mine, "pids", &i, sizeof i, v, len) == QV_OK;
            if (!ok) fprintf(stderr, "child %d: %s\n", i, qv_errmsg());
            if (i % 2) qv_cache_close(mine);
            _exit(ok ? 0 : 1);
        }
    }
    for (int i = 0; i < P; i++) {
        int status;
        assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    assert_int_equal(get(c, "hits", "all"), 1000 + P * n);
    for (int i = 0; i < P; i++) {
        void *data;
        size_t len;
        QVT_OK(qv_dict_get(&data, &len, c, "pids", &i, sizeof i));
        size_t want_len;
        const uint8_t *want = encode_int(pids[i], &want_len);
        assert_int_equal(len, want_len);
        assert_memory_equal(data, want, len);
        qv_free(data);
    }
    qv_cache_close(c);
    qvt_rmtree(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(counters_add_and_read),
        cmocka_unit_test(dicts_set_get_del),
        cmocka_unit_test(bad_arguments),
        cmocka_unit_test(memory_cache),
        cmocka_unit_test(cache_without_shared_entries),
        cmocka_unit_test(threads_lose_no_increment),
        cmocka_unit_test(processes_lose_no_increment),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
