/* The soaks' reader-slot probe: counts the LMDB reader slots held in
 * the environments given, from outside the process that holds them.
 *
 *   soak_readers PID DIR...
 *
 * Prints "<slots held by PID> <slots held by anyone> <slots of dead
 * processes>", summed over the DIRs (the kill loops use the last).
 * A slot is held from a read transaction's first begin until it is aborted
 * (a reset transaction parked for reuse keeps its slot), so a process that
 * leaks transactions or handles shows a count that grows. The environment is
 * opened read-only and no transaction is begun: the probe takes no slot. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include <lmdb.h>

struct count {
    long pid;
    long mine, all, dead;
};

/* mdb_reader_list hands over formatted lines: a header, then "pid thread
 * txnid" per held slot (or "(no active readers)"). */
static int count_line(const char *msg, void *ctx) {
    struct count *c = ctx;
    long pid;
    unsigned long thread;
    if (sscanf(msg, "%ld %lx", &pid, &thread) != 2) return 0;
    c->all++;
    if (pid == c->pid) c->mine++;
    if (kill((pid_t)pid, 0) && errno == ESRCH) c->dead++;
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: soak_readers PID DIR...\n");
        return 2;
    }
    struct count c = {strtol(argv[1], NULL, 10), 0, 0, 0};
    for (int i = 2; i < argc; i++) {
        MDB_env *env;
        int rc = mdb_env_create(&env);
        if (!rc) rc = mdb_env_open(env, argv[i], MDB_RDONLY, 0644);
        if (!rc) rc = mdb_reader_list(env, count_line, &c);
        if (rc) {
            fprintf(stderr, "soak_readers: %s: %s\n", argv[i], mdb_strerror(rc));
            return 1;
        }
        mdb_env_close(env);
    }
    printf("%ld %ld %ld\n", c.mine, c.all, c.dead);
    return 0;
}
