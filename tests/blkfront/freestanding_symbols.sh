#!/bin/sh
# The freestanding blkfront core may only need what a guest kernel provides itself: the
# compiler's memcpy/memset/memmove/memcmp/strlen. Any other undefined symbol (operator new,
# __cxa_*, exception or libc routines) means the core picked up a hosted dependency.
# usage: freestanding_symbols.sh NM ARCHIVE
set -eu
nm=$1
lib=$2
defined=$("$nm" --defined-only "$lib" 2>/dev/null | awk 'NF == 3 { print $3 }' | sort -u)
undefined=$("$nm" -u "$lib" | awk 'NF == 2 && $1 == "U" { print $2 }' | sort -u)
bad=0
for s in $undefined; do
  case $s in
    memcpy|memset|memmove|memcmp|strlen) continue ;;
  esac
  if printf '%s\n' "$defined" | grep -qxF "$s"; then continue; fi
  echo "unexpected external symbol: $s"
  bad=1
done
[ "$bad" -eq 0 ] && echo "only freestanding symbols in $(basename "$lib")"
exit "$bad"
