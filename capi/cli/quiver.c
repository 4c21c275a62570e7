/* quiver: look inside a cache from the shell. */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
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

/* One line of the overview and the text of `quiver COMMAND --help`. */
typedef struct {
    const char *name, *args, *summary, *help;
} command;

static const command commands[] = {
    {"stats", "PATH [--json] [--zero]", "counts, sizes, hits and time saved",
     "Print the cache's counters, one per line with sizes also in KiB, MiB or GiB\n"
     "and times in s, min or h, or with --json as one JSON object of plain numbers\n"
     "(bytes, nanoseconds). total_hits, total_misses, total_stores,\n"
     "total_evictions and total_corrupt count what every process that wrote to\n"
     "the cache did, written in batches with its stores and hits (a read-only\n"
     "handle adds nothing). hits, misses, ... without total_ are this command's\n"
     "own, always 0. Then, per function: stored calls and their result bytes (this\n"
     "part reads every call's record), and the counts every process added for it:\n"
     "hits, misses (of memoized calls), stores, evictions (for size), corrupt\n"
     "entries met, and the time its hits saved (each hit counts the time its call\n"
     "took to compute); then the time saved in all (saved_ns). --zero: then set\n"
     "the totals and every function's counts to 0 (the per-call hits stay).\n"},
    {"ls", "PATH [NAME] [--json]", "stored calls (of one function)",
     "One line per stored call: its digest, name, arguments and result, the size\n"
     "of its result and how long it took to compute, then how many hits it has had\n"
     "and when the last was (UTC). Hits are written in batches: a process's latest\n"
     "hits show once it stores, closes or hits again after QUIVER_LRU_FLUSH_MS; a\n"
     "read-only handle does not count. --json: one JSON array with an object per\n"
     "call (the record's fields, plus digest and result_bytes; bytes as\n"
     "{\"bytes\": HEX}, tags as {\"tag\": N, \"value\": V}, integers beyond 64 bits\n"
     "and map keys that are not text in CBOR diagnostic notation).\n"},
    {"show", "PATH DIGEST", "one call record",
     "The whole record of one call in CBOR diagnostic notation, values stored by\n"
     "digest resolved.\n"},
    {"evict", "PATH DIGEST", "remove one call", "Remove one call, and the values only it used.\n"},
    {"clear", "PATH [NAME]", "remove every call (of one function)",
     "Remove every stored call, or those of the function NAME, and the values only\n"
     "they used; print how many were removed.\n"},
    {"gc", "PATH", "remove values no call uses",
     "Remove values no call refers to and repair reference counts. Progress on\n"
     "stderr (see below).\n"},
    {"verify", "PATH [--repair]", "check every entry (and remove bad ones)",
     "Check every call and value; exit 1 when bad entries are found, unless\n"
     "--repair removed them. Progress on stderr (see below).\n"},
    {"export", "PATH FILE", "write every call to FILE (\"-\": stdout)",
     "Write every stored call of the cache at PATH to FILE (\"-\": stdout) as a\n"
     "CBOR sequence (RFC 8742): a header item, one map per call (name, version,\n"
     "args, kwargs, result, start_ns, duration_ns, lang, meta) in digest order, and\n"
     "an end item with the number of calls. docs/FORMAT.md section 12 describes it;\n"
     "the same cache always exports to the same bytes. Progress on stderr (see\n"
     "below).\n"},
    {"import", "PATH FILE", "store the calls of an export file",
     "Store every call of FILE (\"-\": stdin), written by quiver export, into the\n"
     "cache at PATH, created when PATH does not exist or is an empty directory.\n"
     "The whole file is checked first: a truncated or damaged file, or one of an\n"
     "unknown version, is refused (exit 1) and nothing is stored. Calls the cache\n"
     "holds already are skipped and keep their stored result. Progress on stderr\n"
     "(see below).\n"},
    {"version", "", "the library's version", "Print the version of the quiver library.\n"},
};
#define NCOMMANDS (sizeof commands / sizeof commands[0])

static const char usage_tail[] =
    "PATH is an existing cache: a directory holding data.mdb (only import creates one),\n"
    "or a remote tier's URL, redis://host[:port][/db] or unix:///path/redis.sock\n"
    "(gc and verify are for directories; import into a URL moves a cache into Redis).\n"
    "gc, verify, export and import show progress on stderr: a bar on a terminal, else\n"
    "a line every QUIVER_PROGRESS_INTERVAL seconds (default 5)\n"
    "exit status: 0 done, 1 failed (verify: bad entries found), 2 usage, 3 PATH is not a cache\n";

static void overview(FILE *f) {
    fputs("usage: quiver COMMAND PATH [ARGS]   (quiver COMMAND --help: more)\n", f);
    for (size_t i = 0; i < NCOMMANDS; i++) {
        char synopsis[64];
        snprintf(synopsis, sizeof synopsis, "%s %s", commands[i].name, commands[i].args);
        fprintf(f, "  %-24s %s\n", synopsis, commands[i].summary);
    }
    fputs(usage_tail, f);
}

static int usage(void) {
    overview(stderr);
    return EXIT_USAGE;
}

/* --help asked for help: it goes to stdout and is no error. */
static int help(const char *name) {
    for (size_t i = 0; i < NCOMMANDS; i++) {
        if (strcmp(commands[i].name, name)) continue;
        printf("usage: quiver %s%s%s\n\n%s\n%s", name, *commands[i].args ? " " : "", commands[i].args, commands[i].help,
               usage_tail);
        return 0;
    }
    overview(stdout);
    return 0;
}

/* ------------------------------------------------------------- progress */

/* verify, gc, export and import on a big cache take minutes: on a terminal a bar on stderr,
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

static int fail_errno(const char *what, int err) {
    fprintf(stderr, "quiver: %s: %s\n", what, strerror(err));
    return EXIT_FAILED;
}

/* Every command but import reads or maintains a cache that exists. Opening
 * creates a missing cache (and its parent directories), so a mistyped path
 * would otherwise become a new empty cache: check first. import may create
 * (creates): a cache where nothing is, or in an empty directory, never among
 * files that are not a cache's. A remote tier's URL is a cache (opening it
 * says whether the server answers). 0 after a message; 1 a cache; 2 nothing
 * yet. */
static int is_cache(const char *path, int creates) {
    const char *why = NULL;
    int fresh = 0;
    struct stat st;
    if (!strncmp(path, "redis://", 8) || !strncmp(path, "unix://", 7)) {
        return 1;
    } else if (strstr(path, "://") || !strcmp(path, ":memory:")) {
        why = "the quiver tool opens cache directories and redis:// or unix:// URLs";
    } else if (stat(path, &st) != 0) {
        if (!(creates && errno == ENOENT)) why = strerror(errno);
        fresh = 1;
    } else if (!S_ISDIR(st.st_mode)) {
        why = "not a directory";
    } else {
        size_t n = strlen(path) + sizeof "/data.mdb";
        char *data = malloc(n);
        if (!data) {
            why = strerror(ENOMEM);
        } else {
            snprintf(data, n, "%s/data.mdb", path);
            if (stat(data, &st) != 0 || !S_ISREG(st.st_mode)) {
                why = "no data.mdb in this directory";
                if (creates) {
                    DIR *dir = opendir(path);
                    struct dirent *e;
                    while (dir && (e = readdir(dir)) && (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")))
                        ;
                    if (dir && !e) { /* empty */
                        why = NULL;
                        fresh = 1;
                    }
                    if (dir) closedir(dir);
                }
            }
            free(data);
        }
    }
    if (why) fprintf(stderr, "quiver: %s: not a quiver cache (%s); nothing was created\n", path, why);
    return why ? 0 : fresh ? 2 : 1;
}

static int known_command(const char *cmd, int nargs, const char *arg) {
    if (!strcmp(cmd, "stats")) return nargs <= 2; /* stats_args checks them */
    if (!strcmp(cmd, "ls")) return nargs <= 2;
    if (!strcmp(cmd, "clear")) return nargs <= 1;
    if (!strcmp(cmd, "show") || !strcmp(cmd, "evict")) return nargs == 1;
    if (!strcmp(cmd, "gc")) return nargs == 0;
    if (!strcmp(cmd, "verify")) return nargs == 0 || (nargs == 1 && !strcmp(arg, "--repair"));
    if (!strcmp(cmd, "export") || !strcmp(cmd, "import")) return nargs == 1;
    return 0;
}

/* CBOR diagnostic notation (RFC 8949 section 8). */
/* A call's hit count and its last hit's time, as ls shows them; a remote
 * tier keeps none. */
static void print_hits(const qv_value *rec) {
    int64_t hits, last;
    const qv_value *h = qv_value_map_find(rec, "hits"), *l = qv_value_map_find(rec, "last_hit_ns");
    if (!h || qv_value_get_int(h, &hits)) return;
    printf("  (%" PRId64 " hit%s", hits, hits == 1 ? "" : "s");
    if (l && !qv_value_get_int(l, &last) && last > 0) {
        time_t secs = (time_t)(last / 1000000000);
        struct tm tm;
        char when[32];
        if (gmtime_r(&secs, &tm) && strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm)) printf(", last %s", when);
    }
    putchar(')');
}

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

/* ------------------------------------------------------ human, JSON */

/* "512 B", "1.5 KiB", "3.2 GiB": binary multiples, as QUIVER_MAX_SIZE reads them. */
static const char *human_size(char buf[32], uint64_t n) {
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    double v = (double)n;
    int u = 0;
    while (v >= 1024 && u < 6) {
        v /= 1024;
        u++;
    }
    if (u == 0) snprintf(buf, 32, "%" PRIu64 " B", n);
    else snprintf(buf, 32, "%.*f %s", v < 10 ? 2 : v < 100 ? 1 : 0, v, units[u]);
    return buf;
}

#define SECOND UINT64_C(1000000000) /* ns */

/* "850 ns", "12.3 us", "4.56 ms", "2.50 s", "3 min 20 s", "2 h 05 min". */
static const char *human_ns(char buf[32], uint64_t ns) {
    double v = (double)ns;
    if (ns < 1000) snprintf(buf, 32, "%" PRIu64 " ns", ns);
    else if (ns < 1000000) snprintf(buf, 32, "%.*f us", v < 1e4 ? 2 : 1, v / 1e3);
    else if (ns < 1000000000) snprintf(buf, 32, "%.*f ms", v < 1e7 ? 2 : 1, v / 1e6);
    else if (ns < 60 * SECOND) snprintf(buf, 32, "%.2f s", v / 1e9);
    else if (ns < 3600 * SECOND)
        snprintf(buf, 32, "%" PRIu64 " min %02" PRIu64 " s", ns / (60 * SECOND), ns / SECOND % 60);
    else
        snprintf(buf, 32, "%" PRIu64 " h %02" PRIu64 " min", ns / (3600 * SECOND), ns / (60 * SECOND) % 60);
    return buf;
}

static void json_string(FILE *f, const char *s, size_t n) {
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

/* A value in CBOR diagnostic notation, as a JSON string: what JSON cannot
 * hold as itself (a bigint, a map key that is not text) stays exact. */
static void json_diag(FILE *f, const qv_value *v) {
    char *text = NULL;
    size_t n = 0;
    FILE *m = open_memstream(&text, &n);
    if (!m) {
        fputs("null", f);
        return;
    }
    diag(m, v);
    fclose(m);
    json_string(f, text, n);
    free(text);
}

/* The JSON for a value: ls --json. CBOR has more than JSON: bytes become
 * {"bytes": HEX}, tags {"tag": N, "value": V}, floats JSON cannot write
 * (NaN, infinities) their names as strings. */
static void json(FILE *f, const qv_value *v) {
    switch (qv_value_type(v)) {
    case QV_TYPE_NULL:
    case QV_TYPE_BOOL:
    case QV_TYPE_INT:
        diag(f, v);
        break;
    case QV_TYPE_FLOAT: {
        double d;
        qv_value_get_float(v, &d);
        if (isnan(d)) fputs("\"NaN\"", f);
        else if (isinf(d)) fputs(d > 0 ? "\"Infinity\"" : "\"-Infinity\"", f);
        else diag(f, v);
        break;
    }
    case QV_TYPE_TEXT: {
        const char *s;
        size_t n;
        qv_value_get_text(v, &s, &n);
        json_string(f, s, n);
        break;
    }
    case QV_TYPE_BYTES: {
        const uint8_t *d;
        size_t n;
        qv_value_get_bytes(v, &d, &n);
        fputs("{\"bytes\": \"", f);
        for (size_t i = 0; i < n; i++) fprintf(f, "%02x", d[i]);
        fputs("\"}", f);
        break;
    }
    case QV_TYPE_LIST:
        fputc('[', f);
        for (size_t i = 0; i < qv_value_count(v); i++) {
            if (i) fputs(", ", f);
            json(f, qv_value_list_get(v, i));
        }
        fputc(']', f);
        break;
    case QV_TYPE_MAP:
        fputc('{', f);
        for (size_t i = 0; i < qv_value_count(v); i++) {
            const qv_value *k = qv_value_map_key(v, i);
            if (i) fputs(", ", f);
            if (qv_value_type(k) == QV_TYPE_TEXT) json(f, k);
            else json_diag(f, k);
            fputs(": ", f);
            json(f, qv_value_map_value(v, i));
        }
        fputc('}', f);
        break;
    case QV_TYPE_TAG: {
        uint64_t tag;
        const qv_value *content;
        qv_value_get_tag(v, &tag, &content);
        fprintf(f, "{\"tag\": %" PRIu64 ", \"value\": ", tag);
        json(f, content);
        fputc('}', f);
        break;
    }
    default: /* a bigint */
        json_diag(f, v);
        break;
    }
}

/* The size of a call's result as stored (its canonical encoding). */
static uint64_t result_bytes(const qv_value *rec) {
    const qv_value *r = qv_value_map_find(rec, "result");
    void *data;
    size_t len;
    if (!r || qv_value_encode(r, &data, &len)) return 0;
    qv_free(data);
    return len;
}

static int parse_digest(qv_digest *d, const char *hex) {
    if (qv_digest_parse(d, hex, strlen(hex))) {
        fprintf(stderr, "quiver: %s\n", qv_errmsg());
        return 0;
    }
    return 1;
}

/* --------------------------------------------------------- export, import */

/* An export file (docs/FORMAT.md section 12) is a CBOR sequence: the header
 * {"created-by": "quiver VERSION", "quiver-export": 1}, one map per call as
 * qv_cache_load gives it, in digest order, and the end item
 * {"quiver-export-end": CALLS}. The end item is how a file cut between two
 * items is told from a complete one; nothing in the file depends on the
 * time, so the same cache always exports to the same bytes. */
#define EXPORT_KEY "quiver-export"
#define EXPORT_END "quiver-export-end"
#define EXPORT_VERSION 1
#define PROGRESS_EVERY 256 /* items between progress reports, as the library's passes */

static const char *const record_fields[] = {"args", "duration_ns", "kwargs", "lang",   "meta",
                                            "name", "result",      "start_ns", "version"};
#define NFIELDS (sizeof record_fields / sizeof record_fields[0])

/* Write the one-entry map {key: n}, or the header when key is EXPORT_KEY. */
static qv_status write_marker(FILE *out, qv_encoder *enc, const char *key, uint64_t n) {
    const void *data;
    size_t len;
    char creator[64];
    snprintf(creator, sizeof creator, "quiver %s", qv_version());
    qv_encoder_reset(enc);
    qv_status st = qv_encoder_map_begin(enc);
    if (!st && !strcmp(key, EXPORT_KEY) && !(st = qv_encoder_text(enc, "created-by", 10)))
        st = qv_encoder_text(enc, creator, strlen(creator));
    if (st || (st = qv_encoder_text(enc, key, strlen(key))) || (st = qv_encoder_uint(enc, n)) ||
        (st = qv_encoder_map_end(enc)) || (st = qv_encoder_finish(enc, &data, &len)))
        return st;
    return fwrite(data, 1, len, out) == len ? QV_OK : qv_error_set(QV_EIO, strerror(errno));
}

static int is_statistic(const qv_value *key) {
    const char *s;
    size_t n;
    return qv_value_get_text(key, &s, &n) == QV_OK &&
           ((n == 4 && !memcmp(s, "hits", 4)) || (n == 11 && !memcmp(s, "last_hit_ns", 11)));
}

/* An export item holds the record's nine fields: the statistics
 * qv_cache_load adds (hits, last_hit_ns) describe this cache, not the call. */
static qv_status encode_item(const qv_value *rec, void **data, size_t *len) {
    qv_value *item;
    qv_status st = qv_value_new_map(&item);
    for (size_t i = 0; !st && i < qv_value_count(rec); i++) {
        qv_value *k, *v;
        if (is_statistic(qv_value_map_key(rec, i))) continue;
        if ((st = qv_value_clone(&k, qv_value_map_key(rec, i)))) break;
        if ((st = qv_value_clone(&v, qv_value_map_value(rec, i)))) qv_value_free(k);
        else st = qv_value_map_set(item, k, v);
    }
    if (!st) st = qv_value_encode(item, data, len);
    qv_value_free(item);
    return st;
}

static int export_cache(qv_cache *c, const char *file, progress *bar) {
    int to_stdout = !strcmp(file, "-");
    if (to_stdout && isatty(STDOUT_FILENO)) {
        fputs("quiver: export: not writing CBOR to a terminal: give a FILE or redirect stdout\n", stderr);
        return EXIT_USAGE;
    }
    FILE *out = to_stdout ? stdout : fopen(file, "wb");
    if (!out) {
        return fail_errno(file, errno);
    }
    qv_encoder *enc = NULL;
    qv_iter *it = NULL;
    qv_value *rec = NULL;
    uint64_t total = 0, n = 0, done = 0;
    qv_digest d;
    char hex[33] = "";
    qv_status st;
    if (!(st = qv_encoder_new(&enc)) && !(st = qv_cache_query(&it, c, NULL)) &&
        !(st = write_marker(out, enc, EXPORT_KEY, EXPORT_VERSION))) {
        total = qv_iter_count(it);
        show_progress("exporting calls", 0, total, bar);
    }
    while (!st && (st = qv_iter_next(it, &d)) == QV_OK) {
        void *data;
        size_t len;
        qv_digest_hex(&d, hex);
        if (++done % PROGRESS_EVERY == 0) show_progress("exporting calls", done, total, bar);
        /* the query is a snapshot: a call evicted since is simply gone */
        if ((st = qv_cache_load(c, &d, &rec)) == QV_NOTFOUND) {
            st = QV_OK;
            hex[0] = '\0';
            continue;
        }
        if (st || (st = encode_item(rec, &data, &len))) break;
        if (fwrite(data, 1, len, out) != len) st = qv_error_set(QV_EIO, strerror(errno));
        qv_free(data);
        qv_value_free(rec);
        rec = NULL;
        n++;
        hex[0] = '\0';
    }
    if (st == QV_NOTFOUND && !(st = write_marker(out, enc, EXPORT_END, n))) {
        show_progress("exporting calls", total, total, bar);
        if (fflush(out)) st = qv_error_set(QV_EIO, strerror(errno));
    }
    int rc = EXIT_FAILED;
    if (st) {
        fprintf(stderr, "quiver: export %s%s%s: %s\n", file, *hex ? ": call " : "", hex, qv_errmsg());
        if (st == QV_ECORRUPT) fputs("quiver: `quiver verify --repair PATH` removes broken calls\n", stderr);
        fputs("quiver: the file is incomplete: import refuses it\n", stderr);
    } else {
        /* the summary stays off the export it would corrupt */
        fprintf(to_stdout ? stderr : stdout, "calls exported: %" PRIu64 "\n", n);
        rc = 0;
    }
    if (!to_stdout && fclose(out) && !st) {
        rc = fail_errno(file, errno);
    }
    qv_value_free(rec);
    qv_iter_free(it);
    qv_encoder_free(enc);
    return rc;
}

/* Items of a CBOR sequence from a stream. An item's end is known only once
 * it decodes, so a failure before the end of the input reads more and tries
 * again: a damaged item is reported when the input ends, which costs memory
 * for the rest of the file but never refuses a large item that is good. */
typedef struct {
    FILE *in;
    FILE *spool; /* a copy of what was read, for the second pass over a pipe; or NULL */
    uint8_t *buf;
    size_t cap, start, end; /* buf[start, end) is read and not yet taken */
    uint64_t offset;        /* of buf[start] in the input */
    int eof;
} reader;

static void reader_init(reader *r, FILE *in, FILE *spool) {
    r->in = in;
    r->spool = spool;
    r->start = r->end = 0;
    r->offset = 0;
    r->eof = 0;
}

/* The next item in *item, *len, valid until the next call; QV_NOTFOUND at
 * the end of the input, the decoder's error for a bad or cut item. */
static qv_status next_item(reader *r, qv_decoder *dec, const uint8_t **item, size_t *len) {
    for (;;) {
        if (r->end > r->start) {
            qv_type t;
            qv_decoder_reset(dec, r->buf + r->start, r->end - r->start);
            qv_status st = qv_decoder_next(dec, &t);
            if (!st) st = qv_decoder_skip(dec);
            if (!st) {
                *item = r->buf + r->start;
                *len = qv_decoder_offset(dec);
                r->start += *len;
                r->offset += *len;
                return QV_OK;
            }
            if (r->eof) return st;
        } else if (r->eof) {
            return QV_NOTFOUND;
        }
        if (r->start) {
            memmove(r->buf, r->buf + r->start, r->end - r->start);
            r->end -= r->start;
            r->start = 0;
        }
        if (r->end == r->cap) {
            size_t cap = r->cap ? 2 * r->cap : 1 << 16;
            uint8_t *buf = cap > r->cap ? realloc(r->buf, cap) : NULL;
            if (!buf) return qv_error_set(QV_ENOMEM, "out of memory for an item");
            r->buf = buf;
            r->cap = cap;
        }
        size_t got = fread(r->buf + r->end, 1, r->cap - r->end, r->in);
        if (ferror(r->in)) return qv_error_set(QV_EIO, strerror(errno));
        if (r->spool && fwrite(r->buf + r->end, 1, got, r->spool) != got)
            return qv_error_set(QV_EIO, strerror(errno));
        r->end += got;
        r->eof = feof(r->in);
    }
}

/* NULL when rec is a call as export writes it, else what is wrong. */
static const char *check_call(const qv_value *rec) {
    if (qv_value_type(rec) != QV_TYPE_MAP || qv_value_count(rec) != NFIELDS)
        return "a call is a map of 9 entries";
    for (size_t i = 0; i < NFIELDS; i++) {
        const char *key = record_fields[i], *s;
        const qv_value *v = qv_value_map_find(rec, key);
        qv_type t = qv_value_type(v);
        size_t len;
        int64_t n;
        if (!v) return "a call lacks a field";
        if ((!strcmp(key, "name") && t != QV_TYPE_TEXT) ||
            (!strcmp(key, "version") && t != QV_TYPE_TEXT && t != QV_TYPE_NULL) ||
            (!strcmp(key, "args") && t != QV_TYPE_LIST) ||
            ((!strcmp(key, "kwargs") || !strcmp(key, "meta")) && t != QV_TYPE_MAP) ||
            ((!strcmp(key, "start_ns") || !strcmp(key, "duration_ns")) && qv_value_get_int(v, &n)))
            return "a field of a call has the wrong type";
        /* the language is handed on as a C string */
        if (!strcmp(key, "lang") && (qv_value_get_text(v, &s, &len) || strlen(s) != len))
            return "a call's lang is not text without NUL";
    }
    return NULL;
}

/* Store the call rec (checked) unless the cache holds it: *stored or *skipped. */
static qv_status store_call(qv_cache *c, qv_encoder *enc, const qv_value *rec, uint64_t *stored, uint64_t *skipped) {
    const qv_value *version = qv_value_map_find(rec, "version");
    const char *name, *ver = NULL, *lang;
    size_t name_len, ver_len = 0, len;
    const void *call;
    size_t call_len;
    qv_digest key;
    qv_value_get_text(qv_value_map_find(rec, "name"), &name, &name_len);
    qv_value_get_text(qv_value_map_find(rec, "lang"), &lang, &len);
    if (qv_value_type(version) == QV_TYPE_TEXT) qv_value_get_text(version, &ver, &ver_len);
    /* the call's encoding, as every binding digests it */
    qv_encoder_reset(enc);
    qv_status st = qv_encoder_call_head(enc, name, name_len, ver, ver_len);
    if (st || (st = qv_encoder_value(enc, qv_value_map_find(rec, "args"))) ||
        (st = qv_encoder_value(enc, qv_value_map_find(rec, "kwargs"))) ||
        (st = qv_encoder_finish(enc, &call, &call_len)))
        return st;
    qv_digest_bytes(&key, call, call_len);
    if ((st = qv_cache_contains(c, &key)) != QV_NOTFOUND) {
        if (!st) ++*skipped;
        return st;
    }
    void *result = NULL, *meta = NULL;
    size_t result_len, meta_len;
    qv_store_info info = QV_STORE_INFO_INIT;
    qv_value_get_int(qv_value_map_find(rec, "start_ns"), &info.start_ns);
    qv_value_get_int(qv_value_map_find(rec, "duration_ns"), &info.duration_ns);
    info.lang = lang;
    if (!(st = qv_value_encode(qv_value_map_find(rec, "result"), &result, &result_len)) &&
        !(st = qv_value_encode(qv_value_map_find(rec, "meta"), &meta, &meta_len))) {
        info.meta = meta;
        info.meta_len = meta_len;
        if (!(st = qv_cache_store(c, &key, call, call_len, result, result_len, &info))) ++*stored;
    }
    qv_free(result);
    qv_free(meta);
    return st;
}

/* One pass over the export in r: check every item (c NULL), or store the
 * calls into c. *calls is the number of calls in the file. 0, or an exit
 * status after a message naming file. */
static int import_pass(reader *r, const char *file, qv_cache *c, uint64_t size, progress *bar, uint64_t *calls,
                       uint64_t *stored, uint64_t *skipped) {
    const char *phase = c ? "storing calls" : "checking file";
    uint64_t total = c ? *calls : size, n = 0, at = 0;
    qv_decoder *dec = NULL;
    qv_encoder *enc = NULL;
    qv_value *v = NULL;
    const qv_value *h;
    const uint8_t *item;
    size_t len;
    int64_t number;
    int ended = 0, rc = EXIT_FAILED;
    qv_status st;
    if ((st = qv_decoder_new(&dec)) || (st = qv_encoder_new(&enc))) {
        fprintf(stderr, "quiver: import: %s\n", qv_errmsg());
        goto done;
    }
    if (total) show_progress(phase, 0, total, bar);
    if ((st = next_item(r, dec, &item, &len)) || (st = qv_value_decode(&v, item, len)) ||
        !(h = qv_value_map_find(v, EXPORT_KEY)) || qv_value_get_int(h, &number)) {
        fprintf(stderr, "quiver: %s: not a quiver export file (%s)\n", file,
                st == QV_NOTFOUND ? "it is empty" : st ? qv_errmsg() : "no " EXPORT_KEY " header");
        goto done;
    }
    if (number != EXPORT_VERSION) {
        fprintf(stderr, "quiver: %s: a " EXPORT_KEY " %" PRId64 " file; quiver %s reads " EXPORT_KEY " %d\n", file,
                number, qv_version(), EXPORT_VERSION);
        goto done;
    }
    for (;;) {
        const char *why = NULL;
        at = r->offset;
        qv_value_free(v);
        v = NULL;
        if ((st = next_item(r, dec, &item, &len)) == QV_NOTFOUND) break;
        if (st == QV_EDECODE || (!st && (st = qv_value_decode(&v, item, len)))) {
            fprintf(stderr, "quiver: %s: the item at byte %" PRIu64 " (call %" PRIu64 ") is damaged or cut short: %s\n",
                    file, at, n + 1, qv_errmsg());
            goto done;
        } else if (st) {
            fprintf(stderr, "quiver: %s: %s\n", file, qv_errmsg());
            goto done;
        } else if (ended) {
            why = "an item after the end item";
        } else if ((h = qv_value_map_find(v, EXPORT_END))) {
            uint64_t count;
            if (qv_value_count(v) != 1 || qv_value_get_uint(h, &count) || count != n)
                why = "the end item does not count the calls before it";
            ended = 1;
            /* checked in both passes: a file changed since the first is never stored unchecked */
        } else if (!(why = check_call(v)) && c && (st = store_call(c, enc, v, stored, skipped))) {
            fprintf(stderr, "quiver: %s: storing call %" PRIu64 ": %s\n", file, n + 1, qv_errmsg());
            goto done;
        }
        if (why) {
            fprintf(stderr, "quiver: %s: the item at byte %" PRIu64 " (call %" PRIu64 "): %s\n", file, at, n + 1, why);
            goto done;
        }
        if (!ended && ++n % PROGRESS_EVERY == 0) show_progress(phase, c ? n : r->offset, total, bar);
    }
    if (!ended) {
        fprintf(stderr, "quiver: %s: truncated: the file ends after %" PRIu64 " calls, without its end item\n", file,
                n);
        goto done;
    }
    if (total) show_progress(phase, total, total, bar);
    *calls = n;
    rc = 0;
done:
    qv_value_free(v);
    qv_encoder_free(enc);
    qv_decoder_free(dec);
    return rc;
}

/* import checks the whole file, then stores: a damaged file changes nothing
 * (and creates no cache). A pipe cannot be read twice: its bytes are kept in
 * a temporary file for the second pass. fresh: the cache is created. */
static int import_file(const char *path, const char *file, int fresh, progress *bar) {
    int from_stdin = !strcmp(file, "-");
    FILE *in = from_stdin ? stdin : fopen(file, "rb");
    if (!in) {
        return fail_errno(file, errno);
    }
    struct stat st;
    off_t origin = ftello(in);
    int seekable = fstat(fileno(in), &st) == 0 && S_ISREG(st.st_mode) && origin >= 0;
    uint64_t size = seekable && st.st_size > origin ? (uint64_t)(st.st_size - origin) : 0;
    FILE *spool = seekable ? NULL : tmpfile();
    reader r = {0};
    uint64_t calls = 0, stored = 0, skipped = 0;
    qv_cache *c = NULL;
    qv_cache_options opts = QV_CACHE_OPTIONS_INIT;
    int rc = EXIT_FAILED;
    if (!seekable && !spool) {
        fprintf(stderr, "quiver: import: a temporary file for %s: %s\n", file, strerror(errno));
        goto done;
    }
    reader_init(&r, in, spool);
    if ((rc = import_pass(&r, file, NULL, size, bar, &calls, &stored, &skipped))) goto done;
    rc = EXIT_FAILED;
    if (fseeko(seekable ? in : spool, seekable ? origin : 0, SEEK_SET)) {
        fail_errno(file, errno);
        goto done;
    }
    reader_init(&r, seekable ? in : spool, NULL);
    /* One commit per call. A new cache takes them without a sync each (a
     * tenth of the time) and syncs at the end: a system crash costs only this
     * import, to run again. A cache that holds calls keeps the safe default,
     * as fast commits cut by a system crash may damage what was there. */
    if (fresh) opts.durability = QV_DURABILITY_FAST;
    if (qv_cache_open(&c, path, &opts)) {
        rc = fail(path);
        goto done;
    }
    if ((rc = import_pass(&r, file, c, size, bar, &calls, &stored, &skipped))) goto done;
    if (qv_cache_sync(c)) {
        rc = fail(path);
        goto done;
    }
    printf("calls stored: %" PRIu64 "\ncalls skipped: %" PRIu64 " (in the cache already)\n", stored, skipped);
done:
    if (rc && c) fprintf(stderr, "quiver: %" PRIu64 " calls were stored before the failure\n", stored);
    qv_cache_close(c);
    free(r.buf);
    if (spool) fclose(spool);
    if (!from_stdin) fclose(in);
    return rc;
}

/* ---------------------------------------------------------------- stats */

static int stats_args(int nargs, char **args, int *as_json, int *zero) {
    *as_json = *zero = 0;
    for (int i = 0; i < nargs; i++) {
        if (!strcmp(args[i], "--json") && !*as_json) *as_json = 1;
        else if (!strcmp(args[i], "--zero") && !*zero) *zero = 1;
        else return 0;
    }
    return 1;
}

/* One function: its calls now stored, their result bytes, and the counts
 * the cache keeps for it (qv_cache_function_stats). */
typedef struct {
    char *name;
    uint64_t calls, bytes;
    qv_function_stats counts;
} fn_sum;

typedef struct {
    fn_sum *fns;
    size_t n, cap;
    uint64_t saved_ns, unreadable;
    int failed;
} fn_sums;

static fn_sum *fn_sum_of(fn_sums *t, const char *name, size_t len) {
    for (size_t i = 0; i < t->n; i++)
        if (strlen(t->fns[i].name) == len && !memcmp(t->fns[i].name, name, len)) return &t->fns[i];
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        fn_sum *f = realloc(t->fns, cap * sizeof *f);
        if (!f) return NULL;
        t->fns = f;
        t->cap = cap;
    }
    fn_sum *f = &t->fns[t->n];
    memset(f, 0, sizeof *f);
    if (!(f->name = strndup(name, len))) return NULL;
    t->n++;
    return f;
}

static int by_name(const void *a, const void *b) {
    return strcmp(((const fn_sum *)a)->name, ((const fn_sum *)b)->name);
}

static int add_counts(const char *name, size_t len, const qv_function_stats *counts, void *userdata) {
    fn_sums *t = userdata;
    fn_sum *f = fn_sum_of(t, name, len);
    if (!f) return t->failed = 1;
    f->counts = *counts;
    t->saved_ns += counts->saved_ns;
    return 0;
}

/* Every function with calls stored or counts kept: the calls and their
 * result bytes from the records, the rest from the counts. */
static int sum_functions(qv_cache *c, fn_sums *t) {
    qv_iter *it;
    qv_digest d;
    if (qv_cache_function_stats(c, add_counts, t)) return fail("stats");
    if (t->failed || qv_cache_query(&it, c, NULL)) return t->failed ? fail_errno("stats", ENOMEM) : fail("query");
    while (qv_iter_next(it, &d) == QV_OK) {
        qv_value *rec;
        qv_status st = qv_cache_load(c, &d, &rec);
        if (st == QV_NOTFOUND) continue;
        if (st) {
            t->unreadable++;
            continue;
        }
        const char *name;
        size_t len;
        fn_sum *f = NULL;
        if (!qv_value_get_text(qv_value_map_find(rec, "name"), &name, &len) && !(f = fn_sum_of(t, name, len))) {
            qv_value_free(rec);
            qv_iter_free(it);
            return fail_errno("stats", ENOMEM);
        }
        if (f) {
            f->calls++;
            f->bytes += result_bytes(rec);
        }
        qv_value_free(rec);
    }
    qv_iter_free(it);
    if (t->n) qsort(t->fns, t->n, sizeof *t->fns, by_name);
    return 0;
}

/* stats PATH [--json] [--zero] */
static int show_stats(qv_cache *c, int nargs, char **args) {
    int as_json, zero;
    stats_args(nargs, args, &as_json, &zero);
    fn_sums t = {NULL, 0, 0, 0, 0, 0};
    int rc = sum_functions(c, &t);
    if (rc) goto done;
    const char *path = qv_cache_path(c);
    char h[32], h2[32];
    if (as_json) {
        fputs("{\"path\": ", stdout);
        json_string(stdout, path, strlen(path));
    } else {
        printf("path: %s\n", path);
    }
    for (int i = 0; i < QV_STAT_COUNT; i++) {
        uint64_t v;
        if (qv_cache_stat(c, i, &v) != QV_OK) continue;
        if (as_json) {
            printf(", \"%s\": %" PRIu64, qv_stat_name(i), v);
            continue;
        }
        printf("%s: %" PRIu64, qv_stat_name(i), v);
        if (i == QV_STAT_BYTES || i == QV_STAT_MAP_SIZE || (i == QV_STAT_MAX_BYTES && v))
            printf(" (%s)", human_size(h, v));
        else if (i == QV_STAT_MAX_BYTES)
            fputs(" (no limit)", stdout);
        putchar('\n');
    }
    if (as_json) {
        printf(", \"saved_ns\": %" PRIu64 ", \"unreadable\": %" PRIu64 ", \"functions\": {", t.saved_ns, t.unreadable);
        for (size_t i = 0; i < t.n; i++) {
            fn_sum *f = &t.fns[i];
            fputs(i ? ", " : "", stdout);
            json_string(stdout, f->name, strlen(f->name));
            printf(": {\"calls\": %" PRIu64 ", \"result_bytes\": %" PRIu64 ", \"hits\": %" PRIu64 ", \"misses\": %" PRIu64
                   ", \"stores\": %" PRIu64 ", \"evictions\": %" PRIu64 ", \"corrupt\": %" PRIu64 ", \"saved_ns\": %" PRIu64
                   "}",
                   f->calls, f->bytes, f->counts.hits, f->counts.misses, f->counts.stores, f->counts.evictions,
                   f->counts.corrupt, f->counts.saved_ns);
        }
        puts("}}");
    } else {
        printf("saved: %" PRIu64 " (%s)\n", t.saved_ns, human_ns(h, t.saved_ns));
        if (t.unreadable) printf("unreadable: %" PRIu64 " (quiver verify checks them)\n", t.unreadable);
        if (t.n)
            printf("%-32s %8s %10s %8s %8s %8s %8s %8s %10s\n", "function", "calls", "bytes", "hits", "misses", "stores",
                   "evicted", "corrupt", "saved");
        for (size_t i = 0; i < t.n; i++) {
            fn_sum *f = &t.fns[i];
            printf("%-32s %8" PRIu64 " %10s %8" PRIu64 " %8" PRIu64 " %8" PRIu64 " %8" PRIu64 " %8" PRIu64 " %10s\n",
                   f->name, f->calls, human_size(h, f->bytes), f->counts.hits, f->counts.misses, f->counts.stores,
                   f->counts.evictions, f->counts.corrupt, human_ns(h2, f->counts.saved_ns));
        }
    }
    if (zero && qv_cache_reset_totals(c)) rc = fail("stats --zero");
done:
    for (size_t i = 0; i < t.n; i++) free(t.fns[i].name);
    free(t.fns);
    return rc;
}

/* ----------------------------------------------------------- ls, clear */

/* ls's [NAME] [--json], in either order; 0 when they are not that. */
static int ls_args(int nargs, char **args, const char **name, int *as_json) {
    *name = NULL;
    *as_json = 0;
    for (int i = 0; i < nargs; i++) {
        if (!strcmp(args[i], "--json") && !*as_json) *as_json = 1;
        else if (args[i][0] != '-' && !*name) *name = args[i];
        else return 0;
    }
    return 1;
}

/* ls PATH [NAME] [--json]: one line per call, or one JSON array. */
static int list_calls(qv_cache *c, int nargs, char **args) {
    const char *name;
    int as_json;
    ls_args(nargs, args, &name, &as_json);
    qv_iter *it;
    qv_digest d;
    if (qv_cache_query(&it, c, name)) return fail("query");
    int first = 1;
    if (as_json) putchar('[');
    while (qv_iter_next(it, &d) == QV_OK) {
        qv_value *rec;
        char hex[33], size[32], took[32];
        qv_digest_hex(&d, hex);
        /* the query is a snapshot: a call evicted since is simply gone */
        qv_status st = qv_cache_load(c, &d, &rec);
        if (st == QV_NOTFOUND) continue;
        if (as_json) {
            printf("%s\n{\"digest\": \"%s\"", first ? "" : ",", hex);
            first = 0;
        }
        if (st && as_json) {
            const char *msg = qv_errmsg();
            fputs(", \"unreadable\": ", stdout);
            json_string(stdout, msg, strlen(msg));
            putchar('}');
            continue;
        }
        if (st) {
            printf("%s  (unreadable: %s)\n", hex, qv_errmsg());
            continue;
        }
        uint64_t bytes = result_bytes(rec);
        if (as_json) {
            printf(", \"result_bytes\": %" PRIu64, bytes);
            for (size_t i = 0; i < qv_value_count(rec); i++) {
                fputs(", ", stdout);
                json(stdout, qv_value_map_key(rec, i));
                fputs(": ", stdout);
                json(stdout, qv_value_map_value(rec, i));
            }
            putchar('}');
        } else {
            int64_t ns;
            const qv_value *dur = qv_value_map_find(rec, "duration_ns");
            printf("%s  ", hex);
            diag(stdout, qv_value_map_find(rec, "name"));
            diag(stdout, qv_value_map_find(rec, "args"));
            fputs(" -> ", stdout);
            diag(stdout, qv_value_map_find(rec, "result"));
            printf("  [%s", human_size(size, bytes));
            if (dur && !qv_value_get_int(dur, &ns) && ns >= 0) printf(", computed in %s", human_ns(took, (uint64_t)ns));
            putchar(']');
            print_hits(rec);
            fputc('\n', stdout);
        }
        qv_value_free(rec);
    }
    if (as_json) puts(first ? "]" : "\n]");
    qv_iter_free(it);
    return 0;
}

/* clear PATH [NAME]: the digests first, then one eviction each, so no read
 * snapshot is held across the writes. */
static int clear_calls(qv_cache *c, const char *name) {
    qv_iter *it;
    if (qv_cache_query(&it, c, name)) return fail("query");
    size_t n = 0, cap = qv_iter_count(it) + 1;
    qv_digest *all = malloc(cap * sizeof *all);
    if (!all) {
        qv_iter_free(it);
        fprintf(stderr, "quiver: clear: %s\n", strerror(ENOMEM));
        return EXIT_FAILED;
    }
    while (n < cap && qv_iter_next(it, &all[n]) == QV_OK) n++;
    qv_iter_free(it);
    uint64_t removed = 0;
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        qv_status st = qv_cache_evict(c, &all[i]);
        if (st == QV_OK) removed++;
        else if (st != QV_NOTFOUND) rc = fail("clear");
    }
    free(all);
    printf("calls removed: %" PRIu64 "\n", removed);
    return rc;
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || (i == 1 && (!strcmp(argv[1], "help") || !strcmp(argv[1], "-h"))))
            return help(i > 1 ? argv[1] : argc > 2 ? argv[2] : "");
    if (argc == 2 && strcmp(argv[1], "version") == 0) {
        printf("quiver %s\n", qv_version());
        return 0;
    }
    if (argc < 3) return usage();
    const char *cmd = argv[1], *path = argv[2], *arg = argc > 3 ? argv[3] : NULL;
    const char *ls_name;
    int ls_json, zero = 0;
    if (!known_command(cmd, argc - 3, arg)) return usage();
    if (!strcmp(cmd, "ls") && !ls_args(argc - 3, argv + 3, &ls_name, &ls_json)) return usage();
    if (!strcmp(cmd, "stats") && !stats_args(argc - 3, argv + 3, &ls_json, &zero)) return usage();
    progress bar;
    if (!progress_init(&bar)) return EXIT_USAGE;
    if (!strcmp(cmd, "import")) {
        int where = is_cache(path, 1);
        return where ? import_file(path, arg, where == 2, &bar) : EXIT_NOCACHE;
    }
    qv_maintenance_options mopts = QV_MAINTENANCE_OPTIONS_INIT;
    mopts.progress = show_progress;
    mopts.userdata = &bar;
    if (!is_cache(path, 0)) return EXIT_NOCACHE;
    int writes = !strcmp(cmd, "evict") || !strcmp(cmd, "clear") || !strcmp(cmd, "gc") ||
                 (!strcmp(cmd, "verify") && arg) || zero;
    qv_cache_options opts = QV_CACHE_OPTIONS_INIT;
    if (!writes) opts.flags |= QV_CACHE_READONLY;
    qv_cache *c;
    if (qv_cache_open(&c, path, &opts)) return fail(path);
    int rc = 0;
    qv_digest d;
    if (!strcmp(cmd, "stats")) {
        rc = show_stats(c, argc - 3, argv + 3);
    } else if (!strcmp(cmd, "ls")) {
        rc = list_calls(c, argc - 3, argv + 3);
    } else if (!strcmp(cmd, "clear")) {
        rc = clear_calls(c, arg);
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
    } else if (!strcmp(cmd, "export")) {
        rc = export_cache(c, arg, &bar);
    }
    qv_cache_close(c);
    return rc;
}
