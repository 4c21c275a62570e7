#!/bin/sh
# cmake --install into a temporary prefix, then build a program against it as
# a user would: with pkg-config, and with find_package(quiver CONFIG). The
# prefix is moved before the pkg-config build: quiver.pc must not name the
# prefix it was installed to.
#   test_install.sh BUILD_DIR SOURCE_DIR TMP C_COMPILER
set -eu
build=$1 source=$2 tmp=$3 cc=$4
rm -rf "$tmp" && mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
unset PKG_CONFIG_PATH CMAKE_PREFIX_PATH LD_LIBRARY_PATH

cmake --install "$build" --prefix "$tmp/first" >/dev/null
test -f "$tmp/first/lib/pkgconfig/quiver.pc"
! grep -n "$tmp" "$tmp/first/lib/pkgconfig/quiver.pc" || { echo "quiver.pc names its install prefix" >&2; exit 1; }

# find_package(quiver CONFIG) -> quiver::quiver, from the prefix as installed.
cmake -S "$source/tests/install/consumer" -B "$tmp/consumer" -DCMAKE_C_COMPILER="$cc" \
  -DCMAKE_PREFIX_PATH="$tmp/first" >/dev/null
cmake --build "$tmp/consumer" >/dev/null
"$tmp/consumer/hello"

# pkg-config, from the same prefix moved elsewhere.
mv "$tmp/first" "$tmp/moved"
P="$tmp/moved"
export PKG_CONFIG_PATH="$P/lib/pkgconfig"
test "$(pkg-config --modversion quiver)" = "$(sed -n 's/^Version: //p' "$P/lib/pkgconfig/quiver.pc")"
# shellcheck disable=SC2046 # pkg-config's output is split into words on purpose
"$cc" -o "$tmp/hello-pc" "$source/tests/install/consumer/hello.c" $(pkg-config --cflags --libs quiver)
LD_LIBRARY_PATH="$P/lib" "$tmp/hello-pc"
# Static: Libs.private brings what libquiver.a needs.
# shellcheck disable=SC2046
"$cc" -o "$tmp/hello-static" "$source/tests/install/consumer/hello.c" \
  $(pkg-config --cflags quiver) "$P/lib/libquiver.a" $(pkg-config --libs-only-l --static quiver | sed 's/-lquiver//')
"$tmp/hello-static"
echo "install: ok"
