/* libFuzzer target: the call-record readers (record_check.h) on any bytes, as
 * a record read from a cache that anyone could have written. A reference's
 * digest picks what the values table holds for it: a valid value, nothing,
 * bytes that are not CBOR, or a value that is itself a reference. */
#include "record_check.h"

static const uint8_t value_list[] = {0x83, 0x01, 0x62, 0x68, 0x69, 0xf6}; /* [1, "hi", null] */
static const uint8_t value_bad[] = {0x1c};
static const uint8_t value_ref[] = {0xda, 0x51, 0x56, 0x00, 0x03, 0x50, 1, 2, 3, 4, 5, 6, 7, 8,
                                    9,    10,   11,   12,   13,   14,   15, 16};

static qv_status lookup(const uint8_t digest[16], const void **data, size_t *len, void *userdata) {
    (void)userdata;
    switch (digest[0] & 3) {
    case 0: *data = value_list, *len = sizeof value_list; return QV_OK;
    case 1: return QV_NOTFOUND;
    case 2: *data = value_bad, *len = sizeof value_bad; return QV_OK;
    default: *data = value_ref, *len = sizeof value_ref; return QV_OK;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    rc_values values = {lookup, NULL};
    rc_check(data, size, &values);
    return 0;
}
