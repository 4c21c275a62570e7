#define _GNU_SOURCE
#include "helpers.h"

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

char *qvt_tempdir(const char *tag) {
    const char *base = getenv("QV_TEST_TMP");
    if (!base) base = "/tmp";
    mkdir(base, 0755);
    char *path;
    if (asprintf(&path, "%s/%s-XXXXXX", base, tag) < 0) return NULL;
    if (!mkdtemp(path)) fail_msg("mkdtemp %s: %s", path, strerror(errno));
    return path;
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    chmod(path, 0755);
    return remove(path);
}

void qvt_rmtree(const char *path) {
    if (path) nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

qvt_table qvt_read_tsv(const char *name) {
    qvt_table t = {NULL, NULL, 0};
    const char *dir = getenv("QV_VECTORS");
    if (!dir) fail_msg("QV_VECTORS is not set (ctest sets it to ../shared/vectors)");
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "r");
    if (!f) fail_msg("cannot open %s: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) >= 0) {
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
        t.fields = realloc(t.fields, (t.nlines + 1) * sizeof *t.fields);
        t.nfields = realloc(t.nfields, (t.nlines + 1) * sizeof *t.nfields);
        char **cols = NULL;
        int nc = 0;
        char *p = line;
        for (;;) {
            char *tab = strchr(p, '\t');
            cols = realloc(cols, (nc + 1) * sizeof *cols);
            cols[nc++] = tab ? strndup(p, tab - p) : strdup(p);
            if (!tab) break;
            p = tab + 1;
        }
        t.fields[t.nlines] = cols;
        t.nfields[t.nlines++] = nc;
    }
    free(line);
    fclose(f);
    return t;
}

void qvt_free_table(qvt_table *t) {
    for (int i = 0; i < t->nlines; i++) {
        for (int j = 0; j < t->nfields[i]; j++) free(t->fields[i][j]);
        free(t->fields[i]);
    }
    free(t->fields);
    free(t->nfields);
}

uint8_t *qvt_unhex(const char *hex, size_t *len) {
    size_t n = strlen(hex) / 2;
    uint8_t *out = malloc(n ? n : 1);
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(hex + 2 * i, "%2x", &v);
        out[i] = (uint8_t)v;
    }
    *len = n;
    return out;
}

qvt_call qvt_make_call(const char *name, int64_t x) {
    qvt_call c;
    qv_encoder *enc;
    const void *data;
    QVT_OK(qv_encoder_new(&enc));
    QVT_OK(qv_encoder_call_head(enc, name, strlen(name), NULL, 0));
    QVT_OK(qv_encoder_list(enc, 1));
    QVT_OK(qv_encoder_int(enc, x));
    QVT_OK(qv_encoder_map_begin(enc));
    QVT_OK(qv_encoder_map_end(enc));
    QVT_OK(qv_encoder_finish(enc, &data, &c.len));
    assert_true(c.len <= sizeof c.bytes);
    memcpy(c.bytes, data, c.len);
    qv_digest_bytes(&c.key, c.bytes, c.len);
    qv_encoder_free(enc);
    return c;
}

qv_value *qvt_int_args(int64_t x) {
    qv_value *args, *v;
    QVT_OK(qv_value_new_list(&args));
    QVT_OK(qv_value_new_int(&v, x));
    QVT_OK(qv_value_list_append(args, v));
    return args;
}

qv_digest qvt_store_int(qv_cache *c, const char *name, int64_t x) {
    qv_value *args = qvt_int_args(x), *r;
    qv_digest d;
    QVT_OK(qv_value_new_int(&r, x * 10));
    QVT_OK(qv_cache_store_value(c, name, "1", args, NULL, r, NULL));
    QVT_OK(qv_call_digest(&d, name, "1", args, NULL));
    qv_value_free(args);
    qv_value_free(r);
    return d;
}

void qvt_hit(qv_cache *c, const qv_digest *d, int times) {
    for (int i = 0; i < times; i++) {
        qv_value *r;
        QVT_OK(qv_cache_get_value(c, d, &r));
        qv_value_free(r);
    }
}

int qvt_free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t n = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &n), 0);
    close(fd);
    return ntohs(a.sin_port);
}
