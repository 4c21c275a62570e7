/* What the C benchmarks share: timing, medians, progress lines and removing
 * their temporary trees. Header-only: each benchmark is one program. */
#ifndef QV_BENCH_H
#define QV_BENCH_H

#include <ftw.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static inline uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The median of v's n values; sorts v. */
static inline double median_in_place(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* A line on stderr saying what runs now: rows take seconds each. */
static inline void progress(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "  .. ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
}

static inline int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

static inline void rm_tree(const char *path) {
    struct stat sb;
    if (stat(path, &sb) == 0) nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* The build directory: $QUIVER_BUILD, else two levels above this program
 * (build/bin/bench_x -> build). 0, or -1 when neither says. */
static inline int build_dir(char base[PATH_MAX]) {
    const char *build = getenv("QUIVER_BUILD");
    if (build && *build) return snprintf(base, PATH_MAX, "%s", build) < PATH_MAX ? 0 : -1;
    ssize_t n = readlink("/proc/self/exe", base, PATH_MAX - 1);
    if (n <= 0) return -1;
    base[n] = 0;
    for (int i = 0; i < 2; i++) {
        char *slash = strrchr(base, '/');
        if (!slash) return -1;
        *slash = 0;
    }
    return 0;
}

#endif
