/* Storage faults (issue 15): a full disk, a full map at the size limit, a
 * read-only filesystem, a directory shared by a group, network filesystems,
 * and the reader slots of killed processes.
 *
 * Scenarios that mount, change user or get killed run in a forked child:
 * unshare(CLONE_NEWNS) gives the child mounts that vanish with it, so a
 * failing check never leaves a mount behind. A child reports through its
 * exit status (77: skipped, and why on stderr). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <grp.h>
#include <lmdb.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"

#define SKIP 77
#define CHECK(cond, ...)                                                                                   \
    do {                                                                                                   \
        if (!(cond)) {                                                                                     \
            fprintf(stderr, "%s:%d: %s: ", __FILE__, __LINE__, #cond);                                     \
            fprintf(stderr, __VA_ARGS__);                                                                  \
            fprintf(stderr, " (last error: %s)\n", qv_errmsg());                                          \
            _exit(1);                                                                                      \
        }                                                                                                  \
    } while (0)
#define CHECK_OK(expr)                                                                                     \
    do {                                                                                                   \
        qv_status st_ = (expr);                                                                            \
        CHECK(st_ == QV_OK, "%s", qv_status_name(st_));                                                    \
    } while (0)

/* QVT_FAULT_ROUNDS: how many times the long forms (tests/soak/faults.sh)
 * repeat the full disk and the killed readers; 1 in `make check`. */
static int rounds(void) {
    const char *r = getenv("QVT_FAULT_ROUNDS");
    return r && atoi(r) > 0 ? atoi(r) : 1;
}

/* Run fn(arg) in a child; fail unless it exits 0, skip on SKIP. */
static void in_child(void (*fn)(void *), void *arg) {
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        fn(arg);
        _exit(0);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (WIFEXITED(status) && WEXITSTATUS(status) == SKIP) skip();
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_msg("the scenario's process failed (status 0x%x); its checks are on stderr", status);
}

/* A private mount namespace in which a tmpfs of size bytes sits on dir. */
static int mount_tmpfs(const char *dir, const char *size) {
    if (unshare(CLONE_NEWNS) != 0) return -1;
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) return -1;
    char opts[64];
    snprintf(opts, sizeof opts, "size=%s,mode=0755", size);
    return mount("tmpfs", dir, "tmpfs", 0, opts);
}

static int warnings;
static char last_warning[1024];
static void count_warning(const char *message, void *userdata) {
    (void)userdata;
    warnings++;
    snprintf(last_warning, sizeof last_warning, "%s", message);
}

/* blob(i) = n bytes: i, then a pattern of i (every value distinct, so none
 * is shared and every store takes room). */
static qv_status store_blob(qv_cache *c, int64_t i, size_t n) {
    qvt_call call = qvt_make_call("blob", i);
    uint8_t *r = malloc(n + 3); /* 256 <= n < 65536: a two-byte length */
    r[0] = 0x59;
    r[1] = (uint8_t)(n >> 8);
    r[2] = (uint8_t)n;
    for (size_t j = 0; j < n; j++) r[3 + j] = j < 8 ? (uint8_t)(i >> (8 * j)) : (uint8_t)(i * 7 + j);
    qv_status st = qv_cache_store(c, &call.key, call.bytes, call.len, r, n + 3, NULL);
    free(r);
    return st;
}

static int blob_ok(qv_cache *c, int64_t i, size_t n) {
    qvt_call call = qvt_make_call("blob", i);
    void *data;
    size_t len;
    if (qv_cache_get(c, &call.key, &data, &len) != QV_OK) return 0;
    int ok = len == n + 3;
    for (size_t j = 0; ok && j < n; j++)
        ok = ((uint8_t *)data)[3 + j] == (j < 8 ? (uint8_t)(i >> (8 * j)) : (uint8_t)(i * 7 + j));
    qv_free(data);
    return ok;
}

static void verify_clean(qv_cache *c, const char *stage) {
    uint64_t bad = 99;
    CHECK_OK(qv_cache_verify(c, 0, &bad));
    CHECK(bad == 0, "verify found %llu bad entries after %s", (unsigned long long)bad, stage);
}

/* ------------------------------------------------------------ full disk */

#define BLOB 4000

/* Write a file until the filesystem (or RLIMIT_FSIZE) says no. */
static void fill(const char *path) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CHECK(fd >= 0, "open %s: %s", path, strerror(errno));
    static char chunk[64 << 10];
    memset(chunk, 'x', sizeof chunk);
    for (size_t n = sizeof chunk; n >= 512;) {
        if (write(fd, chunk, n) < 0) n /= 2;
    }
    close(fd);
}

typedef struct {
    const char *dir;
    int no_mount; /* test the fallback even where mount works */
} disk_arg;

static void full_disk_scenario(void *arg) {
    const char *dir = ((disk_arg *)arg)->dir;
    int mounted = !((disk_arg *)arg)->no_mount && mount_tmpfs(dir, "8m") == 0;
    if (!mounted) {
        /* no mount here: a file size limit plays the full disk */
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl;
        getrlimit(RLIMIT_FSIZE, &rl);
        if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < (4u << 20)) {
            fprintf(stderr, "neither a tmpfs mount nor RLIMIT_FSIZE is available\n");
            _exit(SKIP);
        }
    }
    char cache_dir[4096], filler[4096];
    snprintf(cache_dir, sizeof cache_dir, "%s/cache", dir);
    snprintf(filler, sizeof filler, "%s/filler", dir);
    qv_cache *c;
    CHECK_OK(qv_cache_open(&c, cache_dir, NULL));
    /* every entry a store reported done: none may go missing */
    int64_t *good = malloc(sizeof *good * 100000), next = 0;
    int ngood = 0, stored = 0, full = 0, nrounds = rounds();
    for (; next < 50; next++) {
        CHECK_OK(store_blob(c, next, BLOB));
        good[ngood++] = next;
    }
    for (int round = 0; round < nrounds; round++) {
        if (mounted) fill(filler);
        else {
            /* data.mdb may grow no further than it is now */
            struct stat sb;
            char data[4200];
            snprintf(data, sizeof data, "%s/data.mdb", cache_dir);
            CHECK(stat(data, &sb) == 0, "stat %s", data);
            struct rlimit rl;
            getrlimit(RLIMIT_FSIZE, &rl);
            rl.rlim_cur = (rlim_t)sb.st_size;
            CHECK(setrlimit(RLIMIT_FSIZE, &rl) == 0, "setrlimit: %s", strerror(errno));
        }
        /* Full: stores fail softly with QV_EFULL, and nothing else happens. */
        int64_t first_full = -1;
        int full_now = 0;
        for (int k = 0; k < 400 && full_now < 20; k++, next++) {
            qv_status st = store_blob(c, next, BLOB);
            CHECK(st == QV_OK || st == QV_EFULL, "round %d: a store on a full disk gave %s", round, qv_status_name(st));
            if (st == QV_EFULL && first_full < 0) first_full = next;
            full_now += st == QV_EFULL;
            if (st == QV_OK) good[ngood++] = next, stored++;
        }
        full += full_now;
        CHECK(full_now > 0, "round %d: every store on a full disk succeeded", round);
        CHECK(strstr(qv_errmsg(), "disk is full"), "the message says why");
        for (int i = 0; i < ngood; i++)
            CHECK(blob_ok(c, good[i], BLOB), "entry %lld on the full disk", (long long)good[i]);
        verify_clean(c, "filling the disk");
        CHECK_OK(qv_cache_sync(c));
        /* Room again, same handle: stores work. */
        if (mounted) CHECK(unlink(filler) == 0, "unlink: %s", strerror(errno));
        else {
            struct rlimit rl;
            getrlimit(RLIMIT_FSIZE, &rl);
            rl.rlim_cur = rl.rlim_max;
            setrlimit(RLIMIT_FSIZE, &rl);
        }
        CHECK_OK(store_blob(c, first_full, BLOB));
        good[ngood++] = first_full;
        for (int k = 0; k < 20; k++, next++) {
            CHECK_OK(store_blob(c, next, BLOB));
            good[ngood++] = next;
        }
        verify_clean(c, "freeing space");
    }
    qv_cache_close(c);
    CHECK_OK(qv_cache_open(&c, cache_dir, NULL));
    for (int i = 0; i < ngood; i++) CHECK(blob_ok(c, good[i], BLOB), "entry %lld after reopening", (long long)good[i]);
    verify_clean(c, "reopening");
    qv_cache_close(c);
    free(good);
    fprintf(stderr, "full disk (%s): %d rounds, %d stores fit on a full disk, %d failed softly, %d entries kept\n",
            mounted ? "tmpfs 8m" : "RLIMIT_FSIZE", nrounds, stored, full, ngood);
}

static void test_full_disk(void **state) {
    char *dir = qvt_tempdir("full");
    disk_arg a = {dir, 0};
    in_child(full_disk_scenario, &a);
    qvt_rmtree(dir);
    free(dir);
}

/* The fallback, a file size limit, whatever mount can do. */
static void test_full_disk_rlimit(void **state) {
    char *dir = qvt_tempdir("fsize");
    disk_arg a = {dir, 1};
    in_child(full_disk_scenario, &a);
    qvt_rmtree(dir);
    free(dir);
}

/* ------------------------------------------- a meta page write that fails */

/* LMDB writes its meta page with pwrite, at an offset below two pages and
 * shorter than one; data pages go out whole, after them. This pwrite
 * stands in for libc's (LMDB's calls come here) and fails those writes
 * with ENOSPC on demand, as a full copy-on-write disk could. */
static _Atomic int fail_meta_writes;

__attribute__((visibility("default"))) ssize_t meta_pwrite(int fd, const void *buf, size_t n, off_t off)
    __asm__("pwrite"); /* not pwrite64 */
ssize_t meta_pwrite(int fd, const void *buf, size_t n, off_t off) {
    static ssize_t (*real)(int, const void *, size_t, off_t);
    if (!real) real = (ssize_t(*)(int, const void *, size_t, off_t))dlsym(RTLD_NEXT, "pwrite");
    if (atomic_load(&fail_meta_writes) && off < 8192 && n < 4096) {
        errno = ENOSPC;
        return -1;
    }
    return real(fd, buf, n, off);
}

static void test_meta_write_fails(void **state) {
    char *dir = qvt_tempdir("panic");
    qv_cache *c;
    QVT_OK(qv_cache_open(&c, dir, NULL));
    for (int i = 0; i < 20; i++) QVT_OK(store_blob(c, i, BLOB));
    /* the commit fails, and LMDB stops the environment (MDB_PANIC)... */
    atomic_store(&fail_meta_writes, 1);
    qv_status st = store_blob(c, 20, BLOB);
    atomic_store(&fail_meta_writes, 0);
    assert_int_equal(st, QV_EFULL);
    /* ...which the next transaction opens again: hits and stores go on */
    for (int i = 0; i < 20; i++) assert_true(blob_ok(c, i, BLOB));
    QVT_OK(store_blob(c, 20, BLOB));
    assert_true(blob_ok(c, 20, BLOB));
    uint64_t bad = 1;
    QVT_OK(qv_cache_verify(c, 0, &bad));
    assert_int_equal(bad, 0);
    qv_cache_close(c);
    QVT_OK(qv_cache_open(&c, dir, NULL));
    for (int i = 0; i <= 20; i++) assert_true(blob_ok(c, i, BLOB));
    qv_cache_close(c);
    qvt_rmtree(dir);
    free(dir);
}

/* ----------------------------------------------- map full at the limit */

/* A 1 MiB map under a limit above it (the map grows) and below it (eviction
 * makes room in the map it has). */
static void test_map_full_at_limit(void **state) {
    const uint64_t limits[] = {3 << 20, 600 << 10};
    for (int l = 0; l < 2; l++) {
        char *dir = qvt_tempdir("mapfull");
        qv_cache_options o = QV_CACHE_OPTIONS_INIT;
        o.map_size = 1 << 20;
        o.max_bytes = limits[l];
        qv_cache *c;
        QVT_OK(qv_cache_open(&c, dir, &o));
        int ok = 0, full = 0;
        for (int i = 0; i < 1500; i++) {
            qv_status st = store_blob(c, i, BLOB);
            if (st != QV_OK && st != QV_EFULL) fail_msg("store %d: %s: %s", i, qv_status_name(st), qv_errmsg());
            ok += st == QV_OK;
            full += st == QV_EFULL;
            /* what was just stored is there: eviction takes the oldest */
            if (st == QV_OK && !blob_ok(c, i, BLOB)) fail_msg("store %d reported done, but does not hit", i);
        }
        assert_true(ok > 1000);
        uint64_t bad = 1;
        QVT_OK(qv_cache_verify(c, 0, &bad));
        assert_int_equal(bad, 0);
        uint64_t map = 0;
        QVT_OK(qv_cache_stat(c, QV_STAT_MAP_SIZE, &map));
        print_message("map of 1 MiB, limit %llu KiB: %d stored, %d failed softly, map now %llu KiB\n",
                      (unsigned long long)limits[l] >> 10, ok, full,
                      (unsigned long long)map >> 10);
        qv_cache_close(c);
        qvt_rmtree(dir);
        free(dir);
    }
}

/* ---------------------------------------------- read-only filesystem */

static void readonly_fs_scenario(void *arg) {
    const char *dir = arg;
    if (mount_tmpfs(dir, "16m") != 0) {
        fprintf(stderr, "cannot mount a tmpfs here (%s): no read-only filesystem to test on\n", strerror(errno));
        _exit(SKIP);
    }
    char cache_dir[4096];
    snprintf(cache_dir, sizeof cache_dir, "%s/cache", dir);
    qv_cache *c;
    CHECK_OK(qv_cache_open(&c, cache_dir, NULL));
    qv_digest d = qvt_store_int(c, "f", 7);
    int64_t n;
    CHECK_OK(qv_counter_add(&n, c, "runs", NULL, 0, 1));
    qv_cache_close(c);
    CHECK(mount(NULL, dir, NULL, MS_REMOUNT | MS_RDONLY, NULL) == 0, "remount read-only: %s", strerror(errno));
    qv_set_warning_handler(count_warning, NULL, NULL);
    CHECK_OK(qv_cache_open(&c, cache_dir, NULL));
    CHECK(warnings == 1, "%d warnings at open", warnings);
    CHECK(strstr(last_warning, "read-only"), "the warning says read-only: %s", last_warning);
    qvt_hit(c, &d, 3);
    qv_value *args = qvt_int_args(8), *r;
    qv_value_new_int(&r, 80);
    CHECK(qv_cache_store_value(c, "f", "1", args, NULL, r, NULL) == QV_EREADONLY, "a store is refused");
    qv_value_free(args);
    qv_value_free(r);
    CHECK_OK(qv_counter_get(&n, c, "runs", NULL, 0));
    CHECK(n == 1, "the counter reads %lld", (long long)n);
    CHECK(qv_counter_add(&n, c, "runs", NULL, 0, 1) == QV_EREADONLY, "a counter refuses");
    verify_clean(c, "opening read-only");
    CHECK(warnings == 1, "%d warnings in all", warnings);
    qv_cache_close(c);
}

static void test_readonly_fs(void **state) {
    char *dir = qvt_tempdir("rofs");
    in_child(readonly_fs_scenario, dir);
    qvt_rmtree(dir);
    free(dir);
}

/* ------------------------------------------------------ shared machines */

#define TEAM 61000  /* a group of two users */
#define ALICE 61001
#define BOB 61002
#define CAROL 61003 /* in another group: may read, not write */
#define OTHERS 61009

static void become(uid_t uid, gid_t gid) {
    gid_t groups[1] = {gid};
    CHECK(setgroups(1, groups) == 0 && setgid(gid) == 0 && setuid(uid) == 0, "cannot become %u: %s", uid,
          strerror(errno));
    umask(022); /* a typical one: what quiver shares, it shares despite it */
}

static void check_shared(const char *path, int dir) {
    struct stat sb;
    CHECK(stat(path, &sb) == 0, "stat %s: %s", path, strerror(errno));
    CHECK(sb.st_gid == TEAM, "%s has group %u, not the directory's", path, sb.st_gid);
    CHECK((sb.st_mode & S_IWGRP) && (sb.st_mode & S_IRGRP), "%s is not group-writable (%o)", path, sb.st_mode);
    if (dir) CHECK(sb.st_mode & S_ISGID, "directory %s lost the setgid bit (%o)", path, sb.st_mode);
}

typedef struct {
    const char *cache;
    uid_t uid;
    gid_t gid;
} as_user;

static void alice_scenario(void *arg) {
    as_user *u = arg;
    become(u->uid, u->gid);
    qv_cache *c;
    CHECK_OK(qv_cache_open(&c, u->cache, NULL));
    qvt_store_int(c, "team", 1);
    int64_t n;
    CHECK_OK(qv_counter_add(&n, c, "runs", NULL, 0, 1));
    qv_cache_close(c);
    char p[4200];
    check_shared(u->cache, 1);
    const char *files[] = {"data.mdb", "lock.mdb", "shared", "shared/data.mdb", "shared/lock.mdb"};
    for (int i = 0; i < 5; i++) {
        snprintf(p, sizeof p, "%s/%s", u->cache, files[i]);
        check_shared(p, i == 2);
    }
}

static void bob_scenario(void *arg) {
    as_user *u = arg;
    become(u->uid, u->gid);
    qv_set_warning_handler(count_warning, NULL, NULL);
    qv_cache *c;
    CHECK_OK(qv_cache_open(&c, u->cache, NULL));
    CHECK(warnings == 0, "a group member was warned: %s", last_warning);
    qv_digest d = qvt_store_int(c, "team", 1);
    qvt_hit(c, &d, 1);
    qvt_store_int(c, "team", 2);
    int64_t n;
    CHECK_OK(qv_counter_add(&n, c, "runs", NULL, 0, 1));
    CHECK(n == 2, "bob counts %lld", (long long)n);
    verify_clean(c, "a second user's stores");
    qv_cache_close(c);
}

static void carol_scenario(void *arg) {
    as_user *u = arg;
    become(u->uid, u->gid);
    qv_set_warning_handler(count_warning, NULL, NULL);
    qv_cache *c;
    CHECK_OK(qv_cache_open(&c, u->cache, NULL));
    CHECK(warnings == 1, "%d warnings for a user who may not write", warnings);
    CHECK(strstr(last_warning, "read-only") && strstr(last_warning, "Shared machines"), "warning: %s", last_warning);
    qv_value *args = qvt_int_args(2);
    qv_digest k;
    CHECK_OK(qv_call_digest(&k, "team", "1", args, NULL));
    qvt_hit(c, &k, 2);
    qv_value *r;
    qv_value_new_int(&r, 30);
    qv_value_free(args);
    args = qvt_int_args(3);
    CHECK(qv_cache_store_value(c, "team", "1", args, NULL, r, NULL) == QV_EREADONLY, "carol stores");
    qv_value_free(args);
    qv_value_free(r);
    int64_t n;
    CHECK_OK(qv_counter_get(&n, c, "runs", NULL, 0));
    CHECK(n == 2, "carol reads the counter as %lld", (long long)n);
    CHECK(warnings == 1, "%d warnings in all", warnings);
    qv_cache_close(c);
}

/* Let every user reach dir: its ancestors and itself may be searched. */
static void open_to_all(char *dir) {
    for (char *p = dir + 1;; p++) {
        if (*p == '/' || !*p) {
            char c = *p;
            *p = 0;
            struct stat sb;
            if (stat(dir, &sb) == 0 && !(sb.st_mode & S_IXOTH)) chmod(dir, sb.st_mode | S_IXOTH | S_IROTH);
            *p = c;
            if (!c) break;
        }
    }
}

static void test_shared_group(void **state) {
    if (geteuid() != 0) skip(); /* changing users needs root */
    char *dir = qvt_tempdir("team");
    open_to_all(dir);
    char team[4200], cache[4300];
    snprintf(team, sizeof team, "%s/team", dir);
    snprintf(cache, sizeof cache, "%s/cache", team);
    assert_int_equal(mkdir(team, 0755), 0);
    assert_int_equal(chown(team, 0, TEAM), 0);
    assert_int_equal(chmod(team, 02775), 0);
    as_user alice = {cache, ALICE, TEAM}, bob = {cache, BOB, TEAM}, carol = {cache, CAROL, OTHERS};
    in_child(alice_scenario, &alice);
    in_child(bob_scenario, &bob);
    in_child(carol_scenario, &carol);
    qvt_rmtree(dir);
    free(dir);
}

/* A user who may not write lock.mdb reads without it while the owner keeps
 * rewriting the same entries (every commit frees and reuses pages): every
 * hit must still be whole. */
static int blob_state(qv_cache *c, int64_t i, size_t n) { /* 1 hit, 0 miss, -1 wrong */
    qvt_call call = qvt_make_call("blob", i);
    void *data;
    size_t len;
    qv_status st = qv_cache_get(c, &call.key, &data, &len);
    if (st == QV_NOTFOUND) return 0;
    if (st) return -1;
    int ok = len == n + 3;
    for (size_t j = 0; ok && j < n; j++)
        ok = ((uint8_t *)data)[3 + j] == (j < 8 ? (uint8_t)(i >> (8 * j)) : (uint8_t)(i * 7 + j));
    qv_free(data);
    return ok ? 1 : -1;
}

#define STABLE 100

static void lockless_reader(void *arg) {
    as_user *u = arg;
    become(u->uid, u->gid);
    qv_set_warning_handler(count_warning, NULL, NULL);
    qv_cache *c;
    CHECK_OK(qv_cache_open(&c, u->cache, NULL));
    CHECK(warnings == 1 && strstr(last_warning, "reader table"), "warning: %s", last_warning);
    long hits = 0, misses = 0, wrong = 0;
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
        for (int64_t k = 0; k < STABLE; k++) {
            int s = blob_state(c, k, BLOB);
            hits += s == 1;
            misses += s == 0;
            wrong += s == -1;
        }
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 < 1500);
    fprintf(stderr, "lock-less reader: %ld hits, %ld misses, %ld wrong while the owner rewrote them\n", hits, misses,
            wrong);
    CHECK(wrong == 0, "%ld reads were not whole: %s", wrong, qv_errmsg());
    CHECK(hits > 0, "no hits");
    qv_cache_close(c);
}

static void test_lockless_reader(void **state) {
    if (geteuid() != 0) skip();
    char *dir = qvt_tempdir("lockless");
    open_to_all(dir);
    char cache[4200];
    snprintf(cache, sizeof cache, "%s/cache", dir);
    qv_cache_options o = QV_CACHE_OPTIONS_INIT;
    o.durability = QV_DURABILITY_FAST; /* as many commits as it can make */
    qv_cache *c;
    QVT_OK(qv_cache_open(&c, cache, &o));
    for (int64_t k = 0; k < STABLE; k++) QVT_OK(store_blob(c, k, BLOB));
    as_user carol = {cache, CAROL, OTHERS};
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        lockless_reader(&carol);
        _exit(0);
    }
    /* rewrite them (a rerun replaces the record), and come and go others */
    int status, rounds = 0;
    while (waitpid(pid, &status, WNOHANG) == 0) {
        for (int64_t k = 0; k < STABLE; k += 7) QVT_OK(store_blob(c, k, BLOB));
        int64_t other = 1000 + rounds++;
        QVT_OK(store_blob(c, other, BLOB));
        qvt_call call = qvt_make_call("blob", other);
        QVT_OK(qv_cache_evict(c, &call.key));
    }
    print_message("the owner rewrote entries in %d rounds meanwhile\n", rounds);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    qv_cache_close(c);
    qvt_rmtree(dir);
    free(dir);
}

/* -------------------------------------------------- network filesystems */

static void test_network_fs(void **state) {
    char *dir = qvt_tempdir("netfs");
    qv_cache *c;
    const char *refused[] = {"0x6969", "0xFF534D42", "0xFE534D42", "0x0BD00BD0", "0x47504653", "0x00C36400",
                             "fuse.sshfs"};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        setenv("QUIVER_TEST_FSTYPE", refused[i], 1);
        assert_int_equal(qv_cache_open(&c, dir, NULL), QV_EINVAL);
        assert_null(c);
        assert_non_null(strstr(qv_errmsg(), "redis://"));
        assert_non_null(strstr(qv_errmsg(), "allow_network_fs"));
    }
    const char *allowed[] = {"0xEF53", "0x01021994", "fuse.ntfs-3g"}; /* ext4, tmpfs, a local FUSE */
    for (size_t i = 0; i < sizeof allowed / sizeof allowed[0]; i++) {
        setenv("QUIVER_TEST_FSTYPE", allowed[i], 1);
        QVT_OK(qv_cache_open(&c, dir, NULL));
        qv_cache_close(c);
    }
    /* allowed on NFS: the cache and its shared counters open */
    setenv("QUIVER_TEST_FSTYPE", "0x6969", 1);
    qv_cache_options o = QV_CACHE_OPTIONS_INIT;
    o.flags = QV_CACHE_ALLOW_NETWORK_FS;
    QVT_OK(qv_cache_open(&c, dir, &o));
    qv_digest d = qvt_store_int(c, "nfs", 1);
    qvt_hit(c, &d, 1);
    int64_t n;
    QVT_OK(qv_counter_add(&n, c, "runs", NULL, 0, 1));
    qv_cache_close(c);
    unsetenv("QUIVER_TEST_FSTYPE");
    qvt_rmtree(dir);
    free(dir);
}

/* ---------------------------------------------------------- reader slots */

#define SMALL_TABLE 126 /* LMDB's default */

static int readers_counted;
static int count_reader(const char *msg, void *ctx) {
    (void)ctx;
    if (!strstr(msg, "pid")) readers_counted++;
    return 0;
}

/* Slots in dir's reader table, live or dead, counted by a process of its own
 * (one process must not open an environment twice). */
static int reader_slots(const char *dir) {
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    if (pid == 0) {
        MDB_env *env;
        mdb_env_create(&env);
        mdb_env_set_maxdbs(env, 8);
        int n = -1;
        if (mdb_env_open(env, dir, MDB_RDONLY, 0644) == 0) {
            readers_counted = 0;
            mdb_reader_list(env, count_reader, NULL);
            n = readers_counted;
        }
        if (write(fds[1], &n, sizeof n) != sizeof n) _exit(1);
        _exit(0);
    }
    int n = -1;
    close(fds[1]);
    assert_int_equal(read(fds[0], &n, sizeof n), sizeof n);
    close(fds[0]);
    waitpid(pid, NULL, 0);
    return n;
}

/* Processes that open, hit (parking a read transaction in a reader slot)
 * and wait to be killed. */
static void kill_readers(const char *dir, const qv_digest *d, int count) {
    pid_t *pids = calloc((size_t)count, sizeof *pids);
    int ready[2];
    assert_int_equal(pipe(ready), 0);
    for (int i = 0; i < count; i++) {
        fflush(NULL);
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            close(ready[0]);
            qv_cache *c;
            void *data;
            size_t len;
            char ok = qv_cache_open(&c, dir, NULL) == QV_OK && qv_cache_get(c, d, &data, &len) == QV_OK;
            if (write(ready[1], &ok, 1) != 1) _exit(1);
            for (;;) pause();
        }
    }
    close(ready[1]);
    for (int i = 0; i < count; i++) {
        char ok = 0;
        assert_int_equal(read(ready[0], &ok, 1), 1);
        assert_true(ok);
    }
    close(ready[0]);
    for (int i = 0; i < count; i++) kill(pids[i], SIGKILL);
    for (int i = 0; i < count; i++) waitpid(pids[i], NULL, 0);
    free(pids);
}

typedef struct {
    qv_cache *c;
    qv_digest d;
    qv_status st;
    char msg[256];
} hit_arg;

static void *hit_thread(void *p) {
    hit_arg *a = p;
    void *data;
    size_t len;
    a->st = qv_cache_get(a->c, &a->d, &data, &len);
    if (a->st) snprintf(a->msg, sizeof a->msg, "%s", qv_errmsg());
    else qv_free(data);
    return NULL;
}

static void test_dead_readers(void **state) {
    char *dir = qvt_tempdir("readers");
    /* A reader table of LMDB's default size, kept by holding the environment
     * open while quiver joins it (the first process sizes the table). */
    int go[2], ready[2];
    assert_int_equal(pipe(go), 0);
    assert_int_equal(pipe(ready), 0);
    pid_t holder = fork();
    if (holder == 0) {
        MDB_env *env;
        mdb_env_create(&env);
        mdb_env_set_maxreaders(env, SMALL_TABLE);
        char c = mdb_env_open(env, dir, 0, 0644) == 0;
        if (write(ready[1], &c, 1) != 1 || read(go[0], &c, 1) != 1) _exit(1);
        mdb_env_close(env);
        _exit(0);
    }
    char c = 0;
    assert_int_equal(read(ready[0], &c, 1), 1);
    assert_true(c);
    qv_cache *cache;
    QVT_OK(qv_cache_open(&cache, dir, NULL));
    assert_int_equal(write(go[1], &c, 1), 1);
    waitpid(holder, NULL, 0);
    qv_digest d = qvt_store_int(cache, "r", 1);
    qvt_hit(cache, &d, 1);

    /* 120 readers die holding their slots... */
    kill_readers(dir, &d, 120);
    int dead = reader_slots(dir);
    assert_true(dead >= 120);
    /* ...and this process, open since before, needs ten more slots (one per
     * thread shard) than the table has left: a full table reclaims the dead */
    enum { THREADS = 10 };
    pthread_t t[THREADS];
    hit_arg a[THREADS];
    for (int i = 0; i < THREADS; i++) {
        a[i] = (hit_arg){cache, d, QV_OK, ""};
        assert_int_equal(pthread_create(&t[i], NULL, hit_thread, &a[i]), 0);
        pthread_join(t[i], NULL); /* one after another: each parks its own slot */
        if (a[i].st) fail_msg("thread %d: %s: %s", i, qv_status_name(a[i].st), a[i].msg);
    }
    /* 80 more die (each round of the long form); a process opening
     * afterwards clears them and hits. */
    int killed = 120;
    for (int round = 0; round < rounds(); round++) {
        kill_readers(dir, &d, 80);
        killed += 80;
        int before = reader_slots(dir);
        assert_true(before >= 80);
        fflush(NULL);
        pid_t late = fork();
        if (late == 0) {
            qv_cache *lc;
            void *data;
            size_t len;
            _exit(qv_cache_open(&lc, dir, NULL) == QV_OK && qv_cache_get(lc, &d, &data, &len) == QV_OK ? 0 : 1);
        }
        int status;
        waitpid(late, &status, 0);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        int after = reader_slots(dir);
        if (round == 0 || round == rounds() - 1)
            print_message("reader slots: %d after 120 killed, %d after 80 more, %d after a new process opened "
                          "(table %d; %d readers killed so far)\n",
                          dead, before, after, SMALL_TABLE, killed);
        assert_true(after <= 1 + THREADS + 1);
    }
    qv_cache_close(cache);
    qvt_rmtree(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_disk),     cmocka_unit_test(test_full_disk_rlimit),
        cmocka_unit_test(test_map_full_at_limit), cmocka_unit_test(test_readonly_fs),
        cmocka_unit_test(test_shared_group),  cmocka_unit_test(test_network_fs),
        cmocka_unit_test(test_dead_readers),  cmocka_unit_test(test_lockless_reader),
        cmocka_unit_test(test_meta_write_fails),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
