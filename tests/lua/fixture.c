/* C functions the Lua specs memoize through quiver.cfunction, as a user's
 * own library would be: built as a shared library the specs find through
 * $QV_LUA_FIXTURE. */
#include <errno.h>
#include <stdint.h>
#include <time.h>

int64_t qvt_add(int64_t a, int64_t b) {
    return a + b;
}

int64_t qvt_slow_square(int64_t x, int64_t ms) {
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
    return x * x;
}

double qvt_scale(double x, double k) {
    return x * k;
}
