/* The Go functions of natives.go as C function pointers, and C callers that
 * take such a pointer: Go cannot call a C function pointer itself, so these
 * stand for any C code handed the original or the memoized one. */
#ifndef LINKTEST_CALLS_H
#define LINKTEST_CALLS_H

#include <stdint.h>
#include <stdlib.h>

void *link_go_pow(void);
void *link_go_scale(void);
void *link_go_collatz(void);
void *link_go_greet(void);
void *link_go_shared(void);
void *link_go_add(void);

double link_call_f64_f64_i64(void *f, double x, int64_t n);
uint32_t link_call_u32_u64(void *f, uint64_t n);
const char *link_call_str_str(void *f, const char *s);
double link_call_f64_i64_str(void *f, int64_t n, const char *s);
int64_t link_call_i64_i64_i64(void *f, int64_t x, int64_t y);

#endif
