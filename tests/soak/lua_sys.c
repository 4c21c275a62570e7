/* What the soak's Lua scripts need from the system and standard Lua lacks:
 * fsync (a kill-loop writer reports a store only once its log line is on
 * disk); the process id, its count of open descriptors, the page size, a
 * monotonic clock and malloc_trim (the leak soak).
 * Loaded as require "soak_sys" from the build's tests/soak directory. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

/* append_sync(path, text): append text to path and fsync it; true, or nil
 * and the reason. */
static int append_sync(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    size_t len;
    const char *text = luaL_checklstring(L, 2, &len);
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) goto fail;
    while (len) {
        ssize_t n = write(fd, text, len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) goto fail_fd;
        text += n;
        len -= (size_t)n;
    }
    if (fsync(fd)) goto fail_fd;
    close(fd);
    lua_pushboolean(L, 1);
    return 1;
fail_fd:;
    int err = errno;
    close(fd);
    errno = err;
fail:
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", path, strerror(errno));
    return 2;
}

static int getpid_(lua_State *L) {
    lua_pushinteger(L, (lua_Integer)getpid());
    return 1;
}

/* fd_count(): this process's open descriptors, the one reading the
 * directory left out. */
static int fd_count(lua_State *L) {
    DIR *d = opendir("/proc/self/fd");
    if (!d) return luaL_error(L, "/proc/self/fd: %s", strerror(errno));
    lua_Integer n = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (e->d_name[0] != '.' && atoi(e->d_name) != dirfd(d)) n++;
    closedir(d);
    lua_pushinteger(L, n);
    return 1;
}

/* trim(): give the allocator's free memory back (malloc_trim), so that a
 * sample of resident memory counts what is live, not what free() cached. */
static int trim(lua_State *L) {
    malloc_trim(0);
    return 0;
}

static int page_size(lua_State *L) {
    lua_pushinteger(L, (lua_Integer)sysconf(_SC_PAGESIZE));
    return 1;
}

/* now(): seconds on the monotonic clock (os.time counts whole seconds). */
static int now(lua_State *L) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
    return 1;
}

int luaopen_soak_sys(lua_State *L) {
    static const luaL_Reg fns[] = {
        {"append_sync", append_sync}, {"getpid", getpid_}, {"fd_count", fd_count},
        {"page_size", page_size}, {"now", now}, {"trim", trim}, {NULL, NULL}};
    luaL_newlib(L, fns);
    return 1;
}
