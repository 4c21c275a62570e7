/* stack.c: being written (issue 11); these two keep the library linkable meanwhile. */
#include "stack.h"
#include "tier.h"

qv_status qv_stack_options_init(qv_stack_options *opts, uint32_t version) {
    return qv__error(QV_EINVAL, "stacks are being built");
}

qv_status qv_cache_stack(qv_cache **out, qv_cache *local, qv_cache *remote, const qv_stack_options *opts) {
    return qv__error(QV_EINVAL, "stacks are being built");
}

int qv__stack_tiers(qv_cache *cache, qv_cache **local, qv_cache **remote) {
    *local = *remote = NULL;
    return 0;
}
