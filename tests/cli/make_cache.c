/* A cache for the CLI tests: two stored calls, one with a result large
 * enough to live in the values store and one with a start time, duration,
 * language and metadata of its own, and N more small ones (cli.many) to
 * make a pass long enough to report progress; with "rich", one more call
 * (cli.rich) whose arguments, keyword arguments and result hold every kind
 * of item, one argument large enough for the values store. Without N, the
 * large call is hit twice (ls shows its hits). Prints the large call's
 * digest.
 * Usage: make_cache CACHE_DIR [N [rich]] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quiver.h"

static int fail(const char *what, qv_status st) {
    fprintf(stderr, "make_cache: %s: %s: %s\n", what, qv_status_name(st), qv_errmsg());
    return 1;
}

/* Store name(x) = result; the caller's result is consumed. */
static qv_status store(qv_cache *cache, const char *name, int64_t x, qv_value *result, const qv_store_info *info,
                       qv_digest *key) {
    qv_value *args = NULL, *item = NULL;
    qv_status st;
    if (!(st = qv_value_new_list(&args)) && !(st = qv_value_new_int(&item, x)) &&
        !(st = qv_value_list_append(args, item)) &&
        !(st = qv_cache_store_value(cache, name, "1", args, NULL, result, info)))
        st = qv_call_digest(key, name, "1", args, NULL);
    qv_value_free(args);
    qv_value_free(result);
    return st;
}

/* cli.rich(1.5, "\u00fc", [true, null], tuple(1, 2), 2^70, -5, <600 bytes>,
 *          k=h'00ff', z={"n": 1}) = tuple(-0.0, "r"), with no version */
static qv_status store_rich(qv_cache *cache) {
    static const uint8_t two70[] = {0x40, 0, 0, 0, 0, 0, 0, 0, 0}, ff[] = {0x00, 0xff};
    static uint8_t large[600];
    qv_encoder *call = NULL, *result = NULL;
    const void *c, *r;
    size_t clen, rlen;
    qv_status st;
    if ((st = qv_encoder_new(&call)) || (st = qv_encoder_new(&result)) ||
        (st = qv_encoder_call_head(call, "cli.rich", 8, NULL, 0)) || (st = qv_encoder_list(call, 7)) ||
        (st = qv_encoder_float(call, 1.5)) || (st = qv_encoder_text(call, "\xc3\xbc", 2)) ||
        (st = qv_encoder_list(call, 2)) || (st = qv_encoder_bool(call, 1)) || (st = qv_encoder_null(call)) ||
        (st = qv_encoder_tag(call, QV_TAG_TUPLE)) || (st = qv_encoder_list(call, 2)) ||
        (st = qv_encoder_int(call, 1)) || (st = qv_encoder_int(call, 2)) ||
        (st = qv_encoder_bigint(call, 0, two70, sizeof two70)) ||
        (st = qv_encoder_int(call, -5)) || (st = qv_encoder_bytes(call, large, sizeof large)) ||
        (st = qv_encoder_map_begin(call)) || (st = qv_encoder_text(call, "z", 1)) ||
        (st = qv_encoder_map_begin(call)) || (st = qv_encoder_text(call, "n", 1)) || (st = qv_encoder_int(call, 1)) ||
        (st = qv_encoder_map_end(call)) ||
        (st = qv_encoder_text(call, "k", 1)) || (st = qv_encoder_bytes(call, ff, sizeof ff)) ||
        (st = qv_encoder_map_end(call)) || (st = qv_encoder_finish(call, &c, &clen)) ||
        (st = qv_encoder_tag(result, QV_TAG_TUPLE)) || (st = qv_encoder_list(result, 2)) ||
        (st = qv_encoder_float(result, -0.0)) || (st = qv_encoder_text(result, "r", 1)) ||
        (st = qv_encoder_finish(result, &r, &rlen)))
        goto done;
    st = qv_cache_store(cache, NULL, c, clen, r, rlen, NULL);
done:
    qv_encoder_free(call);
    qv_encoder_free(result);
    return st;
}

int main(int argc, char **argv) {
    if (argc < 2 || argc > 4 || (argc == 4 && strcmp(argv[3], "rich"))) {
        fputs("usage: make_cache CACHE_DIR [N [rich]]\n", stderr);
        return 2;
    }
    qv_cache *cache;
    qv_status st = qv_cache_open(&cache, argv[1], NULL);
    if (st) return fail(argv[1], st);
    static uint8_t big[4096];
    memset(big, 0xab, sizeof big);
    /* {"project": "p1"} */
    static const uint8_t meta[] = {0xa1, 0x67, 'p', 'r', 'o', 'j', 'e', 'c', 't', 0x62, 'p', '1'};
    qv_store_info info = QV_STORE_INFO_INIT;
    info.start_ns = 1700000000123456789;
    info.duration_ns = 1500;
    info.lang = "python";
    info.meta = meta;
    info.meta_len = sizeof meta;
    qv_value *small_result, *big_result;
    qv_digest small_key, big_key;
    if ((st = qv_value_new_int(&small_result, 2)) ||
        (st = store(cache, "cli.small", 1, small_result, &info, &small_key)) ||
        (st = qv_value_new_bytes(&big_result, big, sizeof big)) ||
        (st = store(cache, "cli.big", 7, big_result, NULL, &big_key))) {
        qv_cache_close(cache);
        return fail("store", st);
    }
    long many = argc >= 3 ? strtol(argv[2], NULL, 10) : 0;
    qv_digest key;
    for (long i = 0; i < many && !st; i++) {
        qv_value *r;
        if (!(st = qv_value_new_int(&r, i))) st = store(cache, "cli.many", i, r, NULL, &key);
    }
    if (st || (argc == 4 && (st = store_rich(cache)))) {
        qv_cache_close(cache);
        return fail("store many", st);
    }
    for (int i = 0; argc == 2 && i < 2 && !st; i++) {
        void *data;
        size_t len;
        if (!(st = qv_cache_get(cache, &big_key, &data, &len))) qv_free(data);
    }
    if (st) {
        qv_cache_close(cache);
        return fail("hit", st);
    }
    char hex[33];
    qv_digest_hex(&big_key, hex);
    puts(hex);
    qv_cache_close(cache);
    return 0;
}
