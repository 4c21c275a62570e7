/* gc and verify with options: progress reports, and the options' version. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

typedef struct {
    char phase[64][32];
    uint64_t done[64], total[64];
    int n;
} reports;

static void record(const char *phase, uint64_t done, uint64_t total, void *userdata) {
    reports *r = userdata;
    if (r->n == 64) fail_msg("too many progress reports");
    snprintf(r->phase[r->n], sizeof r->phase[0], "%s", phase);
    r->done[r->n] = done;
    r->total[r->n++] = total;
}

/* The reports of phase, in order: from 0 of total, every 256, to total of total. */
static void assert_phase(const reports *r, const char *phase, uint64_t total) {
    uint64_t want = 0;
    int seen = 0;
    for (int i = 0; i < r->n; i++) {
        if (strcmp(r->phase[i], phase)) continue;
        if (r->total[i] != total) fail_msg("%s: total %llu, want %llu", phase, (unsigned long long)r->total[i],
                                           (unsigned long long)total);
        if (r->done[i] != want) fail_msg("%s: report %d says %llu done, want %llu", phase, seen,
                                         (unsigned long long)r->done[i], (unsigned long long)want);
        seen++;
        want = want + 256 > total ? total : want + 256;
    }
    if (seen != (int)(total / 256) + 2) fail_msg("%s: %d reports, want %llu", phase, seen, (unsigned long long)(total / 256 + 2));
}

static qv_cache *cache_with(int calls) {
    qv_cache *c;
    QVT_OK(qv_cache_open_memory(&c));
    static uint8_t big[2048];
    for (int i = 0; i < calls; i++) {
        qv_value *args, *x, *r;
        QVT_OK(qv_value_new_list(&args));
        QVT_OK(qv_value_new_int(&x, i));
        QVT_OK(qv_value_list_append(args, x));
        big[0] = (uint8_t)i; /* a few results big enough to be values of their own */
        big[1] = (uint8_t)(i >> 8);
        if (i % 100 == 0) QVT_OK(qv_value_new_bytes(&r, big, sizeof big));
        else QVT_OK(qv_value_new_int(&r, i));
        QVT_OK(qv_cache_store_value(c, "maint.f", "1", args, NULL, r, NULL));
        qv_value_free(args);
        qv_value_free(r);
    }
    return c;
}

static void verify_reports_progress(void **state) {
    qv_cache *c = cache_with(600);
    reports r = {.n = 0};
    qv_maintenance_options o = QV_MAINTENANCE_OPTIONS_INIT;
    o.progress = record;
    o.userdata = &r;
    uint64_t bad = 99;
    QVT_OK(qv_cache_verify_ext(c, &o, &bad));
    assert_int_equal(bad, 0);
    assert_string_equal(r.phase[0], "checking values");
    assert_phase(&r, "checking values", 6);
    assert_phase(&r, "checking calls", 600);
    assert_string_equal(r.phase[r.n - 1], "checking calls");
    /* NULL options: no progress, no repair, as qv_cache_verify */
    QVT_OK(qv_cache_verify_ext(c, NULL, &bad));
    qv_cache_close(c);
}

static void gc_reports_progress(void **state) {
    qv_cache *c = cache_with(300);
    reports r = {.n = 0};
    qv_maintenance_options o = QV_MAINTENANCE_OPTIONS_INIT;
    o.progress = record;
    o.userdata = &r;
    uint64_t freed = 99;
    QVT_OK(qv_cache_gc_ext(c, &o, &freed));
    assert_int_equal(freed, 0);
    assert_phase(&r, "marking calls", 300);
    assert_phase(&r, "sweeping values", 3);
    assert_string_equal(r.phase[r.n - 1], "sweeping values");
    QVT_OK(qv_cache_gc_ext(c, NULL, NULL));
    qv_cache_close(c);
}

static void options_versions(void **state) {
    qv_maintenance_options o;
    memset(&o, 0xff, sizeof o);
    QVT_OK(qv_maintenance_options_init(&o, QV_MAINTENANCE_OPTIONS_VERSION));
    assert_int_equal(o.version, 1);
    assert_int_equal(o.flags, 0);
    assert_null(o.progress);
    assert_null(o.userdata);
    assert_int_equal(qv_maintenance_options_init(&o, 0), QV_EINVAL);
    assert_int_equal(qv_maintenance_options_init(&o, 2), QV_EINVAL);
    assert_int_equal(qv_maintenance_options_init(NULL, 1), QV_EINVAL);
    qv_cache *c = cache_with(1);
    o.version = 2;
    uint64_t n;
    assert_int_equal(qv_cache_verify_ext(c, &o, &n), QV_EINVAL);
    assert_non_null(strstr(qv_errmsg(), "version 2"));
    assert_int_equal(qv_cache_gc_ext(c, &o, &n), QV_EINVAL);
    qv_cache_close(c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(verify_reports_progress),
        cmocka_unit_test(gc_reports_progress),
        cmocka_unit_test(options_versions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
