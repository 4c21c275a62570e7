#include "_cgo_export.h"
#include "calls.h"

void *link_go_pow(void) { return (void *)goPow; }
void *link_go_scale(void) { return (void *)goScale; }
void *link_go_collatz(void) { return (void *)goCollatz; }
void *link_go_greet(void) { return (void *)goGreet; }
void *link_go_shared(void) { return (void *)goShared; }
void *link_go_add(void) { return (void *)goAdd; }

double link_call_f64_f64_i64(void *f, double x, int64_t n) { return ((double (*)(double, int64_t))f)(x, n); }
uint32_t link_call_u32_u64(void *f, uint64_t n) { return ((uint32_t (*)(uint64_t))f)(n); }
const char *link_call_str_str(void *f, const char *s) { return ((const char *(*)(const char *))f)(s); }
double link_call_f64_i64_str(void *f, int64_t n, const char *s) { return ((double (*)(int64_t, const char *))f)(n, s); }
int64_t link_call_i64_i64_i64(void *f, int64_t x, int64_t y) { return ((int64_t (*)(int64_t, int64_t))f)(x, y); }
