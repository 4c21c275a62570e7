/* quiver: look inside a cache from the shell. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "quiver.h"

/* Exit statuses, frozen like status codes: scripts test them. */
#define EXIT_FAILED 1  /* the command failed, or verify found bad entries */
#define EXIT_USAGE 2   /* unknown command or wrong arguments */
#define EXIT_NOCACHE 3 /* PATH is not an existing cache */

static int usage(void) {
    fputs("usage: quiver COMMAND PATH [ARGS]\n"
          "  stats PATH [--json]   counts and sizes\n"
          "  ls PATH [NAME]        stored calls (of one function)\n"
          "  show PATH DIGEST      one call record\n"
          "  evict PATH DIGEST     remove one call\n"
          "  gc PATH               remove values no call uses\n"
          "  verify PATH [--repair] check every entry (and remove bad ones)\n"
          "  version               the library's version\n"
          "PATH is an existing cache: a directory holding data.mdb. Nothing is ever created.\n"
          "gc and verify show progress on stderr: a bar on a terminal, else a line every\n"
          "QUIVER_PROGRESS_INTERVAL seconds (default 5)\n"
          "exit status: 0 done, 1 failed (verify: bad entries found), 2 usage, 3 PATH is not a cache\n",
          stderr);
    return EXIT_USAGE;
}

/* ------------------------------------------------------------- progress */

/* verify and gc on a big cache take minutes: on a terminal a bar on stderr,
 * redrawn in place; otherwise (a log, CI) a plain line every interval
 * seconds, so a long pass shows it is alive without flooding the log. A pass
 * that ends within one interval prints nothing. QUIVER_PROGRESS_INTERVAL
 * sets the interval (seconds; 5 by default, 0: every report). */
typedef struct {
    int tty;
    double interval, start, last; /* seconds */
    const char *phase;            /* the phase shown last, NULL when none */
} progress;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void show_progress(const char *phase, uint64_t done, uint64_t total, void *userdata) {
    progress *p = userdata;
    double t = now();
    int shown = p->phase && !strcmp(p->phase, phase), end = done == total;
    /* a phase's end is shown once it has been seen, so the log says it finished */
    if (!(shown && end) && t - (shown ? p->last : p->start) < p->interval) return;
    if (!shown && p->tty && p->phase) fputc('\n', stderr);
    p->phase = phase;
    p->last = t;
    int pct = total ? (int)(done * 100 / total) : 100;
    if (p->tty) {
        int width = 30, filled = pct * width / 100;
        fprintf(stderr, "\r%-16s [%.*s%*s] %3d%% %" PRIu64 "/%" PRIu64, phase, filled,
                "##############################", width - filled, "", pct, done, total);
        if (end) {
            fputc('\n', stderr);
            p->phase = NULL; /* the next phase starts a new bar */
        }
    } else {
        fprintf(stderr, "quiver: %s: %" PRIu64 "/%" PRIu64 " (%d%%)\n", phase, done, total, pct);
        if (end) p->phase = NULL;
    }
    fflush(stderr);
}

/* 0 and a message when QUIVER_PROGRESS_INTERVAL is not a number of seconds. */
static int progress_init(progress *p) {
    const char *env = getenv("QUIVER_PROGRESS_INTERVAL");
    p->tty = isatty(STDERR_FILENO);
    p->interval = p->tty ? 0.1 : 5.0;
    p->start = p->last = now();
    p->phase = NULL;
    if (env && *env) {
        char *end;
        errno = 0;
        p->interval = strtod(env, &end);
        if (*end || errno || !(p->interval >= 0)) {
            fprintf(stderr, "quiver: QUIVER_PROGRESS_INTERVAL=%s is not a number of seconds\n", env);
            return 0;
        }
    }
    return 1;
}

static int fail(const char *what) {
    fprintf(stderr, "quiver: %s: %s\n", what, qv_errmsg());
    return EXIT_FAILED;
}

/* Every command reads or maintains a cache that exists. Opening creates a
 * missing cache (and its parent directories), so a mistyped path would
 * otherwise become a new empty cache: check first. */
static int is_cache(const char *path) {
    const char *why = NULL;
    struct stat st;
    if (strstr(path, "://") || !strcmp(path, ":memory:")) {
        why = "the quiver tool opens cache directories only";
    } else if (stat(path, &st) != 0) {
        why = strerror(errno);
    } else if (!S_ISDIR(st.st_mode)) {
        why = "not a directory";
    } else {
        size_t n = strlen(path) + sizeof "/data.mdb";
        char *data = malloc(n);
        if (!data) {
            why = strerror(ENOMEM);
        } else {
            snprintf(data, n, "%s/data.mdb", path);
            if (stat(data, &st) != 0 || !S_ISREG(st.st_mode)) why = "no data.mdb in this directory";
            free(data);
        }
    }
    if (why) fprintf(stderr, "quiver: %s: not a quiver cache (%s); nothing was created\n", path, why);
    return !why;
}

static int known_command(const char *cmd, int nargs, const char *arg) {
    if (!strcmp(cmd, "stats")) return nargs == 0 || (nargs == 1 && !strcmp(arg, "--json"));
    if (!strcmp(cmd, "ls")) return nargs <= 1;
    if (!strcmp(cmd, "show") || !strcmp(cmd, "evict")) return nargs == 1;
    if (!strcmp(cmd, "gc")) return nargs == 0;
    if (!strcmp(cmd, "verify")) return nargs == 0 || (nargs == 1 && !strcmp(arg, "--repair"));
    return 0;
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
    const char *cmd = argv[1], *path = argv[2], *arg = argc > 3 ? argv[3] : NULL;
    if (!known_command(cmd, argc - 3, arg)) return usage();
    progress bar;
    if (!progress_init(&bar)) return EXIT_USAGE;
    qv_maintenance_options mopts = QV_MAINTENANCE_OPTIONS_INIT;
    mopts.progress = show_progress;
    mopts.userdata = &bar;
    if (!is_cache(path)) return EXIT_NOCACHE;
    int writes = !strcmp(cmd, "evict") || !strcmp(cmd, "gc") || (!strcmp(cmd, "verify") && arg);
    qv_cache_options opts = QV_CACHE_OPTIONS_INIT;
    if (!writes) opts.flags |= QV_CACHE_READONLY;
    qv_cache *c;
    if (qv_cache_open(&c, path, &opts)) return fail(path);
    int rc = 0;
    qv_digest d;
    if (!strcmp(cmd, "stats") && arg) {
        /* the path is printed as a JSON string: escape what JSON requires */
        fputs("{\"path\": \"", stdout);
        for (const char *p = qv_cache_path(c); *p; p++) {
            unsigned char ch = (unsigned char)*p;
            if (ch == '"' || ch == '\\') printf("\\%c", ch);
            else if (ch < 0x20) printf("\\u%04x", ch);
            else putchar(ch);
        }
        putchar('"');
        for (int i = 0; i < QV_STAT_COUNT; i++) {
            uint64_t v;
            if (qv_cache_stat(c, i, &v) == QV_OK) printf(", \"%s\": %" PRIu64, qv_stat_name(i), v);
        }
        puts("}");
    } else if (!strcmp(cmd, "stats")) {
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
    } else if (!strcmp(cmd, "show")) {
        qv_value *rec;
        if (!parse_digest(&d, arg)) rc = EXIT_USAGE;
        else if (qv_cache_load(c, &d, &rec)) rc = fail(arg);
        else {
            diag(stdout, rec);
            fputc('\n', stdout);
            qv_value_free(rec);
        }
    } else if (!strcmp(cmd, "evict")) {
        if (!parse_digest(&d, arg)) rc = EXIT_USAGE;
        else if (qv_cache_evict(c, &d)) rc = fail(arg);
    } else if (!strcmp(cmd, "gc")) {
        uint64_t freed;
        if (qv_cache_gc_ext(c, &mopts, &freed)) rc = fail("gc");
        else printf("values freed: %" PRIu64 "\n", freed);
    } else if (!strcmp(cmd, "verify")) {
        uint64_t bad;
        int repair = arg != NULL;
        if (repair) mopts.flags |= QV_MAINTENANCE_REPAIR;
        if (qv_cache_verify_ext(c, &mopts, &bad)) rc = fail("verify");
        else {
            printf("bad entries: %" PRIu64 "%s\n", bad, repair && bad ? " (removed)" : "");
            rc = bad && !repair ? EXIT_FAILED : 0;
        }
    }
    qv_cache_close(c);
    return rc;
}
