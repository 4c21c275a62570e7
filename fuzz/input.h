/* The fuzzers' byte consumer: the input read as a stream of choices, each
 * taking a few bytes and reading zeros once it runs out, so every input,
 * however short, builds something. */
#ifndef QV_FUZZ_INPUT_H
#define QV_FUZZ_INPUT_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    const uint8_t *p;
    size_t n;
} input;

static inline uint8_t take8(input *in) {
    if (!in->n) return 0;
    in->n--;
    return *in->p++;
}

static inline uint64_t take(input *in, int bytes) {
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++) v = v << 8 | take8(in);
    return v;
}

#endif
