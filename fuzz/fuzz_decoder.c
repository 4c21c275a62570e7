/* libFuzzer target: the decoder must refuse or accept any input without a
 * crash, and whatever it accepts must re-encode to the very same bytes. */
#include <stdlib.h>
#include <string.h>

#include "quiver.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    qv_value *v;
    qv_status valid = qv_validate(data, size);
    qv_status decoded = qv_value_decode(&v, data, size);
    if ((valid == QV_OK) != (decoded == QV_OK)) abort();
    if (decoded != QV_OK) return 0;
    void *out;
    size_t len;
    if (qv_value_encode(v, &out, &len) != QV_OK || len != size || memcmp(out, data, size) != 0) abort();
    qv_digest a, b;
    qv_value_digest(v, &a);
    qv_digest_bytes(&b, data, size);
    if (memcmp(a.bytes, b.bytes, 16) != 0) abort();
    qv_free(out);
    qv_value_free(v);
    return 0;
}
