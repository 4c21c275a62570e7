/* The storage vtable. A store holds a fixed set of tables of byte keys and
 * byte values, with read and write transactions. It knows nothing of what the
 * keys or values mean: the cache gives it the table names when it opens. */
#ifndef QV_STORE_H
#define QV_STORE_H

#include "internal.h"

#define QV_STORE_MAX_TABLES 9

/* put_new found the key present. */
#define QV__EEXISTS (-101)

typedef struct qv_store qv_store;
typedef struct qv_txn qv_txn;

/* Return nonzero to stop the scan. key/val are borrowed for the call. */
typedef int (*qv_scan_cb)(const void *key, size_t klen, const void *val, size_t vlen, void *userdata);

typedef struct qv_store_ops {
    /* Read transactions see one snapshot; any number may run at once. */
    qv_status (*read_begin)(qv_store *s, qv_txn **txn);
    void (*read_end)(qv_store *s, qv_txn *txn);
    /* One write transaction at a time per store (others wait). */
    qv_status (*write_begin)(qv_store *s, qv_txn **txn);
    qv_status (*commit)(qv_store *s, qv_txn *txn);
    void (*abort)(qv_store *s, qv_txn *txn);
    /* *val is borrowed until the transaction ends or, in a write
     * transaction, until the next put or del. QV_NOTFOUND when absent. */
    qv_status (*get)(qv_store *s, qv_txn *txn, int table, const void *key, size_t klen, const void **val, size_t *vlen);
    /* QV_EFULL when the store has no room: abort, then grow or evict. */
    qv_status (*put)(qv_store *s, qv_txn *txn, int table, const void *key, size_t klen, const void *val, size_t vlen);
    /* put when key is absent; QV__EEXISTS, the table unchanged, when it is
     * present: one lookup for a key that is usually new. */
    qv_status (*put_new)(qv_store *s, qv_txn *txn, int table, const void *key, size_t klen, const void *val,
                         size_t vlen);
    qv_status (*del)(qv_store *s, qv_txn *txn, int table, const void *key, size_t klen);
    /* Entries with key >= from (all when from is NULL), in key order. */
    qv_status (*scan)(qv_store *s, qv_txn *txn, int table, const void *from, size_t flen, qv_scan_cb cb, void *userdata);
    qv_status (*count)(qv_store *s, qv_txn *txn, int table, uint64_t *n);
    /* Make room after QV_EFULL, outside any transaction; QV_EFULL if it cannot. */
    qv_status (*grow)(qv_store *s);
    qv_status (*sync)(qv_store *s);
    uint64_t (*map_size)(qv_store *s);
    void (*close)(qv_store *s);
} qv_store_ops;

struct qv_store {
    const qv_store_ops *ops;
};

typedef struct qv_store_config {
    const char *const *tables; /* names, at most QV_STORE_MAX_TABLES */
    int ntables;
    uint32_t durability;       /* QV_DURABILITY_* */
    int readonly;
    uint64_t map_size;         /* 0: default */
    int allow_network_fs;      /* QV_CACHE_ALLOW_NETWORK_FS */
    int quiet;                 /* no warning about reading without the lock file */
} qv_store_config;

/* Opens read-only, with one warning, a directory this process cannot write;
 * refuses one on a network filesystem unless cfg->allow_network_fs. */
qv_status qv__store_lmdb_open(qv_store **out, const char *path, const qv_store_config *cfg);
/* Whether the store is read-only: asked, or fallen back to. */
int qv__store_lmdb_readonly(const qv_store *s);
/* Give path (just created by this user) the group and group write of its
 * directory when that directory is the group's to write. */
void qv__share_with_group(const char *path);
qv_status qv__store_memory_open(qv_store **out, const qv_store_config *cfg);

#endif
