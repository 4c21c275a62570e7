/* quiver: look inside a cache from the shell. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quiver.h"

static int usage(void) {
    fputs("usage: quiver COMMAND PATH [ARGS]\n"
          "  stats PATH            counts and sizes\n"
          "  ls PATH [NAME]        stored calls (of one function)\n"
          "  show PATH DIGEST      one call record\n"
          "  evict PATH DIGEST     remove one call\n"
          "  gc PATH               remove values no call uses\n"
          "  verify PATH [--repair] check every entry (and remove bad ones)\n"
          "  version               the library's version\n",
          stderr);
    return 2;
}

static int fail(const char *what) {
    fprintf(stderr, "quiver: %s: %s\n", what, qv_errmsg());
    return 1;
}

/* CBOR diagnostic notation (RFC 8949 section 8). */
static void diag(FILE *f, const qv_value *v) {
    switch (qv_value_type(v)) {
    case QV_TYPE_NULL:
        fputs("null", f);
        break;
    case QV_TYPE_BOOL: {
        int b;
        qv_value_get_bool(v, &b);
        fputs(b ? "true" : "false", f);
        break;
    }
    case QV_TYPE_INT: {
        int neg;
        uint64_t n;
        qv_value_get_cbor_int(v, &neg, &n);
        if (neg && n == UINT64_MAX) fputs("-18446744073709551616", f);
        else if (neg) fprintf(f, "-%" PRIu64, n + 1);
        else fprintf(f, "%" PRIu64, n);
        break;
    }
    case QV_TYPE_BIGINT: {
        int neg;
        const uint8_t *m;
        size_t n;
        qv_value_get_bigint(v, &neg, &m, &n);
        fprintf(f, "%d(h'", neg ? 3 : 2);
        for (size_t i = 0; i < n; i++) fprintf(f, "%02x", m[i]);
        fputs("')", f);
        break;
    }
    case QV_TYPE_FLOAT: {
        double d;
        qv_value_get_float(v, &d);
        fprintf(f, "%.17g", d);
        break;
    }
    case QV_TYPE_TEXT: {
        const char *s;
        size_t n;
        qv_value_get_text(v, &s, &n);
        fputc('"', f);
        for (size_t i = 0; i < n; i++) {
            unsigned char c = (unsigned char)s[i];
            if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
            else if (c < 0x20) fprintf(f, "\\u%04x", c);
            else fputc(c, f);
        }
        fputc('"', f);
        break;
    }
    case QV_TYPE_BYTES: {
        const uint8_t *d;
        size_t n;
        qv_value_get_bytes(v, &d, &n);
        fputs("h'", f);
        for (size_t i = 0; i < n && i < 64; i++) fprintf(f, "%02x", d[i]);
        fprintf(f, n > 64 ? "...' (%zu bytes)" : "'", n);
        break;
    }
    case QV_TYPE_LIST:
        fputc('[', f);
        for (size_t i = 0; i < qv_value_count(v); i++) {
            if (i) fputs(", ", f);
            diag(f, qv_value_list_get(v, i));
        }
        fputc(']', f);
        break;
    case QV_TYPE_MAP:
        fputc('{', f);
        for (size_t i = 0; i < qv_value_count(v); i++) {
            if (i) fputs(", ", f);
            diag(f, qv_value_map_key(v, i));
            fputs(": ", f);
            diag(f, qv_value_map_value(v, i));
        }
        fputc('}', f);
        break;
    case QV_TYPE_TAG: {
        uint64_t tag;
        const qv_value *content;
        qv_value_get_tag(v, &tag, &content);
        fprintf(f, "%" PRIu64 "(", tag);
        diag(f, content);
        fputc(')', f);
        break;
    }
    }
}

static int parse_digest(qv_digest *d, const char *hex) {
    if (qv_digest_parse(d, hex, strlen(hex))) {
        fprintf(stderr, "quiver: %s\n", qv_errmsg());
        return 0;
    }
    return 1;
}

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "version") == 0) {
        printf("quiver %s\n", qv_version());
        return 0;
    }
    if (argc < 3) return usage();
    const char *cmd = argv[1], *path = argv[2];
    int writes = !strcmp(cmd, "evict") || !strcmp(cmd, "gc") || (!strcmp(cmd, "verify") && argc > 3);
    qv_cache_options opts = QV_CACHE_OPTIONS_INIT;
    if (!writes) opts.flags |= QV_CACHE_READONLY;
    qv_cache *c;
    if (qv_cache_open(&c, path, &opts)) return fail(path);
    int rc = 0;
    qv_digest d;
    if (!strcmp(cmd, "stats")) {
        printf("path: %s\n", qv_cache_path(c));
        for (int i = 0; i < QV_STAT_COUNT; i++) {
            uint64_t v;
            if (qv_cache_stat(c, i, &v) == QV_OK) printf("%s: %" PRIu64 "\n", qv_stat_name(i), v);
        }
    } else if (!strcmp(cmd, "ls")) {
        qv_iter *it;
        if (qv_cache_query(&it, c, argc > 3 ? argv[3] : NULL)) rc = fail("query");
        else {
            while (qv_iter_next(it, &d) == QV_OK) {
                qv_value *rec;
                char hex[33];
                qv_digest_hex(&d, hex);
                if (qv_cache_load(c, &d, &rec)) {
                    printf("%s  (unreadable: %s)\n", hex, qv_errmsg());
                    continue;
                }
                printf("%s  ", hex);
                diag(stdout, qv_value_map_find(rec, "name"));
                diag(stdout, qv_value_map_find(rec, "args"));
                fputs(" -> ", stdout);
                diag(stdout, qv_value_map_find(rec, "result"));
                fputc('\n', stdout);
                qv_value_free(rec);
            }
            qv_iter_free(it);
        }
    } else if (!strcmp(cmd, "show") && argc > 3) {
        qv_value *rec;
        if (!parse_digest(&d, argv[3])) rc = 2;
        else if (qv_cache_load(c, &d, &rec)) rc = fail(argv[3]);
        else {
            diag(stdout, rec);
            fputc('\n', stdout);
            qv_value_free(rec);
        }
    } else if (!strcmp(cmd, "evict") && argc > 3) {
        if (!parse_digest(&d, argv[3])) rc = 2;
        else if (qv_cache_evict(c, &d)) rc = fail(argv[3]);
    } else if (!strcmp(cmd, "gc")) {
        uint64_t freed;
        if (qv_cache_gc(c, &freed)) rc = fail("gc");
        else printf("values freed: %" PRIu64 "\n", freed);
    } else if (!strcmp(cmd, "verify")) {
        uint64_t bad;
        int repair = argc > 3 && !strcmp(argv[3], "--repair");
        if (argc > 3 && !repair) rc = usage();
        else if (qv_cache_verify(c, repair, &bad)) rc = fail("verify");
        else {
            printf("bad entries: %" PRIu64 "%s\n", bad, repair && bad ? " (removed)" : "");
            rc = bad && !repair ? 1 : 0;
        }
    } else {
        rc = usage();
    }
    qv_cache_close(c);
    return rc;
}
