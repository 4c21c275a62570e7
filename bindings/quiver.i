/*
 * The one SWIG interface for every language. The C API is wrapped one to one;
 * each language's typemaps, fast paths and ignores live in its own file,
 * included below. The idiomatic layers (python/quiver, lua/quiver.lua) sit on
 * top of what this generates.
 *
 * The module name is set per language on the command line (-module), since
 * Python loads it as quiver._quiver and Lua as quiver_core.
 *
 * Never put this directory on SWIG's include path (-I): SWIG's own library
 * has files named python.swg and lua.swg, and ours would shadow them. They
 * are found here because SWIG looks beside the including file first.
 */
%module quiver

%{
#include "quiver.h"
%}

/* SWIG does not read the generated export header. */
#define QV_EXPORT

%include <stdint.i>

#if defined(SWIGPYTHON)
%include "python.swg"
#elif defined(SWIGLUA)
%include "lua.swg"
#endif

/* The language file above has declared its typemaps, ignores and fast paths;
 * now the C API itself. */
%include "quiver.h"
