#!/bin/sh
# Compile a Kubeless Go function together with the runtime server, as the Kubeless compile init
# container does (runtimes stable/golang compile-function.sh): copy the function into the server
# tree as a replaced module, put the handler name in, `go build`. Run by kubeless-local as the
# catalog's process.compile (cwd = {build}); a non-zero exit + this output = CompileError.
#
# usage: compile-function.sh <go> <runtime_dir> <runtime_lib> <install> <build> <module> <handler>
set -u
GO=$1 RUNTIME_DIR=$2 LIB=$3 INSTALL=$4 BUILD=$5 MODULE=$6 HANDLER=$7

# Shared, persistent caches: a rebuild only recompiles the function and relinks.
export GOMODCACHE="$LIB/mod" GOCACHE="$LIB/cache" GOPATH="$LIB/gopath"
# -mod=mod: requirements of the function's go.mod resolve through GOPROXY and go.sum is filled in;
# -modcacherw: the cache stays deletable. GOTOOLCHAIN=local: never download another Go.
export GOFLAGS="-mod=mod -modcacherw" GOTOOLCHAIN=local GOWORK=off

case "$HANDLER" in
  ""|[!A-Za-z_]*|*[!A-Za-z0-9_]*)
    echo "$MODULE.go: handler \"$HANDLER\" is not a Go function name (spec.handler must be <module>.<Function>)"
    exit 1 ;;
esac

SRC="$BUILD/src"
rm -rf "$SRC" "$BUILD/kubeless" && mkdir -p "$SRC/function" || exit 1
cp -R "$RUNTIME_DIR/server/." "$SRC/" && cp -R "$RUNTIME_DIR/kubeless" "$BUILD/kubeless" || exit 1
cp -R "$INSTALL/." "$SRC/function/" || exit 1
rm -f "$SRC/function/server" "$SRC/function/go.work"

# No (or an empty) go.mod: the function is module `kubeless`, as in Kubeless.
if ! grep -q '[^[:space:]]' "$SRC/function/go.mod" 2>/dev/null; then
  printf 'module kubeless\n\ngo %s\n' "$("$GO" env GOVERSION | sed 's/^go\([0-9]*\.[0-9]*\).*/\1/')" > "$SRC/function/go.mod"
fi
MODPATH=$(cd "$SRC/function" && "$GO" mod edit -json 2>&1 | sed -n 's/^.*"Path": "\([^"]*\)".*$/\1/p' | head -n 1)
if [ -z "$MODPATH" ]; then
  echo "go.mod is not valid:"
  (cd "$SRC/function" && "$GO" mod edit -json 2>&1 | sed "s#$SRC/function/##g")
  exit 1
fi

sed -e "s#<<MODULE>>#$MODPATH#" -e "s#<<FUNCTION>>#$HANDLER#" "$SRC/kubeless_function.go.tpl" > "$SRC/kubeless_function.go"
rm -f "$SRC/kubeless_function.go.tpl"
(cd "$SRC" && "$GO" mod edit -require="$MODPATH@v0.0.0" -replace="$MODPATH=./function") || exit 1
# go.sum: the server's, the function's and what earlier builds verified (checksums are facts about
# module versions, so one shared list serves every function).
KNOWN="$LIB/go.sum.known"
cat "$SRC/go.sum" "$SRC/function/go.sum" "$KNOWN" 2>/dev/null | sort -u > "$SRC/go.sum.new"
mv "$SRC/go.sum.new" "$SRC/go.sum"

# debug-build.sh <out>, run in src/ by the server when it is debugged (server/main.go, "debugging"):
# the same build with debug info (no optimisation, no inlining) for Delve. Not -trimpath: Delve needs
# real paths, and the function's files are named as the server loads them, through the install link
# (KUBELESS_INSTALL_VOLUME/<file>.go, whatever the generation: an editor maps that folder to the
# user's). Only a debugged function pays for it. Its build cache is Go's own (not $LIB/cache, which a
# new runtime version starts afresh): the standard library built for debugging (once per Go, warmed
# when the engine builds Delve, emulator/delve.py) serves every version.
quote() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"; }
write_debug_build() {
  echo '#!/bin/sh'
  echo '# Written by compile-function.sh: this build with debug info for Delve (cwd: src/, $1: the binary).'
  echo "GO=$(quote "$GO") LIB=$(quote "$LIB") MODPATH=$(quote "$MODPATH")"
  echo 'export GOMODCACHE="$LIB/mod" GOPATH="$LIB/gopath"'
  echo 'export GOFLAGS="-mod=mod -modcacherw" GOTOOLCHAIN=local GOWORK=off'
  echo 'FUNCTION="$MODPATH/...=-N -l"'
  echo 'if [ -n "${KUBELESS_INSTALL_VOLUME:-}" ]; then'
  echo '  FUNCTION="$FUNCTION '"'"'-trimpath=$PWD/function=>$KUBELESS_INSTALL_VOLUME'"'"'"'
  echo 'fi'
  echo 'exec "$GO" build -gcflags="all=-N -l" -gcflags="$FUNCTION" -buildvcs=false -o "$1" .'
}

cd "$SRC" || exit 1
if "$GO" build -trimpath -buildvcs=false -o "$BUILD/server.new" . > "$BUILD/compile.log" 2>&1; then
  mv "$BUILD/server.new" "$BUILD/server" || exit 1
  write_debug_build > "$BUILD/debug-build.sh" || exit 1
  cp "$SRC/go.sum" "$KNOWN.$$" && mv "$KNOWN.$$" "$KNOWN"
  exit 0
fi
# Name the function's files as the server loads them (function/handler.go:9:2 -> $INSTALL/handler.go:9:2, which the
# engine maps back to the user's file, as the other runtimes' errors name it) and the error first (no "# <package>"
# header lines: the engine shows the first line in `ls`/`call`).
sed -e "s#$SRC/function/#$INSTALL/#g" -e "s#\./function/#$INSTALL/#g" -e "s#\(^\|[[:space:](]\)function/#\1$INSTALL/#g" \
    -e "s#^\./kubeless_function\.go:[0-9:]* #$MODULE.go: handler $HANDLER: #" \
    -e "s#^kubeless_function\.go:[0-9:]* #$MODULE.go: handler $HANDLER: #" \
    -e "s#: undefined: function\.\([A-Za-z0-9_]*\)#: no function \1 in the function's package#" \
    -e "/^# [^ ]*\$/d" -e "s#$SRC/##g" "$BUILD/compile.log"
# The function's go.mod replacing a module by a folder of its own: Go takes replaces from the main module only
# (the server's, which requires the function's: in the pod too), so the build looked for that module elsewhere.
LOCAL_REPLACE=$(sed -n 's#^[[:space:]]*\(replace[[:space:]]\)\{0,1\}[[:space:]]*\([^[:space:]]*\)[^=]*=>[[:space:]]*\(\.\.\{0,1\}/[^[:space:]]*\).*$#\2 => \3#p' "$SRC/function/go.mod" | head -n 1)
if [ -n "$LOCAL_REPLACE" ]; then
  echo "go.mod: replace $LOCAL_REPLACE is not used: the function is built as a module the runtime's server requires (as in the pod), and Go applies only the main module's replace directives; make the folder a package of the function's module (import \"$MODPATH/${LOCAL_REPLACE##* => ./}\", without its own go.mod)"
fi
if grep -q 'kubeless_function\.go' "$BUILD/compile.log"; then
  case "$HANDLER" in [a-z_]*) echo "Go only exports names that start with an upper-case letter: rename it and spec.handler.";; esac
  echo "A Go handler must be: func $HANDLER(event functions.Event, context functions.Context) (string, error)"
fi
rm -f "$BUILD/server.new"
exit 1
