/* What the rest of the core needs to know of a stack (stack.c). */
#ifndef QV_STACK_H
#define QV_STACK_H

#include "cache.h"

/* The local and remote tiers of a stack, borrowed for as long as the stack
 * lives; 0 (and both NULL) when cache is not a stack. The call runtime takes
 * its lease on each (call.c). */
int qv__stack_tiers(qv_cache *cache, qv_cache **local, qv_cache **remote);

#endif
