/* Shared by the C tests: temporary directories, vector files, hex. */
#ifndef QV_TEST_HELPERS_H
#define QV_TEST_HELPERS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "quiver.h"

/* A fresh empty directory under $QV_TEST_TMP (or /tmp); caller frees. */
char *qvt_tempdir(const char *tag);
/* rm -rf */
void qvt_rmtree(const char *path);
/* Lines of a file in $QV_VECTORS, split on tabs: fields[line][col]. */
typedef struct {
    char ***fields;
    int *nfields;
    int nlines;
} qvt_table;
qvt_table qvt_read_tsv(const char *name);
void qvt_free_table(qvt_table *t);
/* Decode hex into a new buffer; returns its length via *len. */
uint8_t *qvt_unhex(const char *hex, size_t *len);
/* The encoding of the call name(x) and its digest. */
typedef struct {
    uint8_t bytes[64];
    size_t len;
    qv_digest key;
} qvt_call;
qvt_call qvt_make_call(const char *name, int64_t x);
/* [x], for an int x. */
qv_value *qvt_int_args(int64_t x);
/* Store name(x) = x * 10 (version "1"); returns the call's digest. */
qv_digest qvt_store_int(qv_cache *c, const char *name, int64_t x);
/* Read d's result times times, checking every read hits. */
void qvt_hit(qv_cache *c, const qv_digest *d, int times);
/* A loopback port nobody listens on now (the kernel's pick for port 0). */
int qvt_free_port(void);
/* Fail the test with qv_errmsg() when st is not QV_OK. */
#define QVT_OK(expr)                                                                                        \
    do {                                                                                                    \
        qv_status qvt_st_ = (expr);                                                                         \
        if (qvt_st_ != QV_OK) fail_msg("%s -> %s: %s", #expr, qv_status_name(qvt_st_), qv_errmsg());         \
    } while (0)

#endif
