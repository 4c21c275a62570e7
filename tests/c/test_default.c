/* The default cache (DESIGN section 9): where it lives, how big it may grow,
 * and what a bad environment gets. The default is made once per process, so
 * every case runs qv_cache_default in a child of its own with exactly the
 * environment it names, and reports back through a pipe. */
#define _GNU_SOURCE /* asprintf */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"

typedef struct {
    qv_status st;
    uint64_t max_bytes;
    char path[PATH_MAX];
    char msg[1024];
} outcome;

/* Run qv_cache_default in a child whose environment has none of the
 * variables that steer it except those in env ("NAME=value", NULL-ended),
 * working in directory cwd. With store, the child also stores one call
 * through the default, and with probe it reports whether that call is there. */
static outcome resolve_in(const char *cwd, const char *const *env, int store, int *probe) {
    int fds[2];
    if (pipe(fds) != 0) fail_msg("pipe: %s", strerror(errno));
    pid_t pid = fork();
    if (pid < 0) fail_msg("fork: %s", strerror(errno));
    if (pid == 0) {
        outcome o;
        memset(&o, 0, sizeof o);
        unsetenv("QUIVER_CACHE");
        unsetenv("QUIVER_MAX_SIZE");
        unsetenv("XDG_CACHE_HOME");
        unsetenv("HOME");
        for (const char *const *e = env; e && *e; e++) putenv((char *)*e);
        if (cwd && chdir(cwd) != 0) _exit(90);
        qv_cache *c;
        o.st = qv_cache_default(&c);
        if (o.st) snprintf(o.msg, sizeof o.msg, "%s", qv_errmsg());
        else {
            snprintf(o.path, sizeof o.path, "%s", qv_cache_path(c));
            qv_cache_stat(c, QV_STAT_MAX_BYTES, &o.max_bytes);
            qv_value *args, *x, *r;
            qv_digest key;
            if (qv_value_new_list(&args) || qv_value_new_int(&x, 41) || qv_value_list_append(args, x) ||
                qv_call_digest(&key, "default.shared", "1", args, NULL))
                _exit(91);
            if (store && (qv_value_new_int(&r, 42) ||
                          qv_cache_store_value(c, "default.shared", "1", args, NULL, r, NULL) || qv_cache_sync(c)))
                _exit(92);
            if (store) qv_value_free(r);
            snprintf(o.msg, sizeof o.msg, "%d", qv_cache_contains(c, &key) == QV_OK);
            qv_value_free(args);
        }
        if (write(fds[1], &o, sizeof o) != (ssize_t)sizeof o) _exit(93);
        _exit(0);
    }
    close(fds[1]);
    outcome o;
    ssize_t n = read(fds[0], &o, sizeof o);
    close(fds[0]);
    int status;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || n != (ssize_t)sizeof o)
        fail_msg("the child failed: status %d, read %zd", status, n);
    if (probe) *probe = !o.st && strcmp(o.msg, "1") == 0;
    return o;
}

static outcome resolve(const char *const *env) {
    return resolve_in(NULL, env, 0, NULL);
}

static char *join(const char *a, const char *b) {
    char *p;
    if (asprintf(&p, "%s%s", a, b) < 0) fail_msg("asprintf");
    return p;
}

static char *real(const char *path) {
    char *r = realpath(path, NULL);
    if (!r) fail_msg("realpath %s: %s", path, strerror(errno));
    return r;
}

static void assert_private_dir(const char *path) {
    struct stat sb;
    if (stat(path, &sb) != 0) fail_msg("%s was not created: %s", path, strerror(errno));
    assert_true(S_ISDIR(sb.st_mode));
    if ((sb.st_mode & 0777) != 0700) fail_msg("%s has mode %o, want 0700", path, (unsigned)(sb.st_mode & 0777));
}

#define GIB (UINT64_C(1) << 30)

/* XDG_CACHE_HOME wins over HOME; the directories made are private. */
static void xdg_cache_home(void **state) {
    char *tmp = qvt_tempdir("default-xdg");
    char *xdg = join(tmp, "/xdg/deeper"), *home = join(tmp, "/home");
    char *xdg_env = join("XDG_CACHE_HOME=", xdg), *home_env = join("HOME=", home);
    const char *env[] = {xdg_env, home_env, NULL};
    outcome o = resolve(env);
    if (o.st) fail_msg("%s: %s", qv_status_name(o.st), o.msg);
    char *want = join(xdg, "/quiver"), *want_real = real(want);
    assert_string_equal(o.path, want_real);
    assert_private_dir(want);
    assert_private_dir(xdg); /* XDG's rule for a cache home it has to make */
    assert_true(o.max_bytes == 5 * GIB);
    assert_int_equal(access(home, F_OK), -1); /* HOME was not used */
    free(want_real);
    free(want);
    free(xdg_env);
    free(home_env);
    free(xdg);
    free(home);
    qvt_rmtree(tmp);
    free(tmp);
}

/* Only HOME: ~/.cache/quiver. A relative XDG_CACHE_HOME is invalid (the XDG
 * spec says to ignore it), and so is an empty QUIVER_CACHE. */
static void only_home(void **state) {
    char *tmp = qvt_tempdir("default-home");
    char *home_env = join("HOME=", tmp);
    const char *cases[][4] = {
        {home_env, NULL, NULL},
        {home_env, "XDG_CACHE_HOME=relative/cache", NULL},
        {home_env, "XDG_CACHE_HOME=", "QUIVER_CACHE="},
    };
    char *want = join(tmp, "/.cache/quiver");
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        outcome o = resolve_in(tmp, cases[i], 0, NULL);
        if (o.st) fail_msg("case %zu: %s: %s", i, qv_status_name(o.st), o.msg);
        char *want_real = real(want);
        assert_string_equal(o.path, want_real);
        free(want_real);
        assert_true(o.max_bytes == 5 * GIB);
    }
    assert_private_dir(want);
    char *rel = join(tmp, "/relative");
    assert_int_equal(access(rel, F_OK), -1);
    free(rel);
    free(want);
    free(home_env);
    qvt_rmtree(tmp);
    free(tmp);
}

/* With neither HOME nor XDG_CACHE_HOME there is no place that is the
 * user's: a clear error naming what to set, as ccache gives. */
static void no_home(void **state) {
    char *tmp = qvt_tempdir("default-nohome");
    outcome o = resolve_in(tmp, NULL, 0, NULL);
    assert_int_equal(o.st, QV_EINVAL);
    assert_non_null(strstr(o.msg, "HOME"));
    assert_non_null(strstr(o.msg, "QUIVER_CACHE"));
    const char *empty[] = {"HOME=", NULL};
    o = resolve_in(tmp, empty, 0, NULL);
    assert_int_equal(o.st, QV_EINVAL);
    struct stat sb;
    char *cache = join(tmp, "/.cache");
    assert_int_equal(stat(cache, &sb), -1);
    free(cache);
    qvt_rmtree(tmp);
    free(tmp);
}

/* QUIVER_CACHE names a directory, made private when missing, with the same
 * size limit as the default. */
static void quiver_cache_directory(void **state) {
    char *tmp = qvt_tempdir("default-dir");
    char *dir = join(tmp, "/a/b"), *dir_env = join("QUIVER_CACHE=", dir);
    const char *env[] = {dir_env, "HOME=/nonexistent-home", NULL};
    outcome o = resolve(env);
    if (o.st) fail_msg("%s: %s", qv_status_name(o.st), o.msg);
    char *dir_real = real(dir);
    assert_string_equal(o.path, dir_real);
    assert_private_dir(dir);
    assert_true(o.max_bytes == 5 * GIB);
    free(dir_real);
    free(dir_env);
    free(dir);
    qvt_rmtree(tmp);
    free(tmp);
}

/* :memory: is private to the process: nothing on disk, nothing shared. */
static void memory(void **state) {
    char *tmp = qvt_tempdir("default-memory");
    char *home_env = join("HOME=", tmp);
    const char *env[] = {"QUIVER_CACHE=:memory:", home_env, NULL};
    int seen;
    outcome o = resolve_in(tmp, env, 1, &seen);
    if (o.st) fail_msg("%s: %s", qv_status_name(o.st), o.msg);
    assert_string_equal(o.path, ":memory:");
    assert_true(seen);
    o = resolve_in(tmp, env, 0, &seen);
    assert_false(seen); /* another process does not see the first one's call */
    DIR *d = opendir(tmp);
    int entries = 0;
    for (struct dirent *e; (e = readdir(d));) entries += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    assert_int_equal(entries, 0); /* no ":memory:" directory, no ~/.cache */
    free(home_env);
    qvt_rmtree(tmp);
    free(tmp);
}

/* What the default is for: two processes with no configuration share. */
static void processes_share(void **state) {
    char *tmp = qvt_tempdir("default-share");
    char *home_env = join("HOME=", tmp);
    const char *env[] = {home_env, NULL};
    int seen;
    outcome o = resolve_in(tmp, env, 0, &seen);
    assert_false(seen);
    resolve_in(tmp, env, 1, &seen);
    assert_true(seen);
    o = resolve_in(tmp, env, 0, &seen);
    if (o.st) fail_msg("%s: %s", qv_status_name(o.st), o.msg);
    assert_true(seen); /* stored by the process before */
    free(home_env);
    qvt_rmtree(tmp);
    free(tmp);
}

/* A URL is the Redis tier (tests/c/test_remote.c opens it with a server;
 * here nothing listens, a clear error), and any other scheme is refused:
 * never a directory named "redis:" or "ftp:". */
static void url_is_never_a_directory(void **state) {
    char *tmp = qvt_tempdir("default-url");
    char *home_env = join("HOME=", tmp);
    const char *env[] = {"QUIVER_CACHE=redis://127.0.0.1:1/0", home_env, NULL};
    outcome o = resolve_in(tmp, env, 0, NULL);
    assert_int_equal(o.st, QV_EIO);
    assert_non_null(strstr(o.msg, "redis://127.0.0.1:1/0"));
    const char *ftp[] = {"QUIVER_CACHE=ftp://127.0.0.1/cache", home_env, NULL};
    o = resolve_in(tmp, ftp, 0, NULL);
    assert_int_equal(o.st, QV_EINVAL);
    assert_non_null(strstr(o.msg, "ftp://127.0.0.1/cache"));
    assert_non_null(strstr(o.msg, "not a cache"));
    DIR *d = opendir(tmp);
    int entries = 0;
    for (struct dirent *e; (e = readdir(d));) entries += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    assert_int_equal(entries, 0);
    free(home_env);
    qvt_rmtree(tmp);
    free(tmp);
}

/* QUIVER_MAX_SIZE: bytes, or K/M/G/T as binary multiples (KiB... also
 * accepted); 0 is no limit; anything else is refused, naming the value. */
static void max_size(void **state) {
    char *tmp = qvt_tempdir("default-max");
    char *home_env = join("HOME=", tmp);
    struct {
        const char *value;
        uint64_t want;
    } good[] = {
        {"QUIVER_MAX_SIZE=1048576", 1048576},
        {"QUIVER_MAX_SIZE=64K", 64 << 10},
        {"QUIVER_MAX_SIZE=3M", 3 << 20},
        {"QUIVER_MAX_SIZE=3m", 3 << 20},
        {"QUIVER_MAX_SIZE=2G", 2 * GIB},
        {"QUIVER_MAX_SIZE=1T", 1024 * GIB},
        {"QUIVER_MAX_SIZE=512MiB", 512 << 20},
        {"QUIVER_MAX_SIZE=0", 0},
        {"QUIVER_MAX_SIZE=", 5 * GIB},
    };
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        const char *env[] = {home_env, good[i].value, NULL};
        outcome o = resolve_in(tmp, env, 0, NULL);
        if (o.st) fail_msg("%s: %s: %s", good[i].value, qv_status_name(o.st), o.msg);
        if (o.max_bytes != good[i].want)
            fail_msg("%s: max_bytes %llu, want %llu", good[i].value, (unsigned long long)o.max_bytes,
                     (unsigned long long)good[i].want);
    }
    const char *bad[] = {"QUIVER_MAX_SIZE=lots", "QUIVER_MAX_SIZE=5X",         "QUIVER_MAX_SIZE=-1",
                         "QUIVER_MAX_SIZE=5 G",  "QUIVER_MAX_SIZE=5GB",        "QUIVER_MAX_SIZE=G",
                         "QUIVER_MAX_SIZE=1.5G", "QUIVER_MAX_SIZE=99999999999999999999",
                         "QUIVER_MAX_SIZE=20000000T"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        const char *env[] = {home_env, bad[i], NULL};
        outcome o = resolve_in(tmp, env, 0, NULL);
        if (o.st != QV_EINVAL) fail_msg("%s was accepted (%s)", bad[i], qv_status_name(o.st));
        if (!strstr(o.msg, "QUIVER_MAX_SIZE") || !strstr(o.msg, strchr(bad[i], '=') + 1))
            fail_msg("%s: the message does not name the variable and value: %s", bad[i], o.msg);
    }
    /* a private memory cache takes the limit too */
    const char *env[] = {"QUIVER_CACHE=:memory:", "QUIVER_MAX_SIZE=1M", NULL};
    outcome o = resolve_in(tmp, env, 0, NULL);
    assert_int_equal(o.st, QV_OK);
    assert_true(o.max_bytes == 1 << 20);
    free(home_env);
    qvt_rmtree(tmp);
    free(tmp);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(xdg_cache_home), cmocka_unit_test(only_home), cmocka_unit_test(no_home),
        cmocka_unit_test(quiver_cache_directory), cmocka_unit_test(memory), cmocka_unit_test(processes_share),
        cmocka_unit_test(url_is_never_a_directory), cmocka_unit_test(max_size),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
