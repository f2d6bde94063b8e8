#!/bin/sh
# Compile a Kubeless Java function (process.compile / docker.compile, cwd = {build}): every .java file
# of the code folder with `javac --release 11` against the runtime's params and the pom's dependencies
# ({deps}/lib), into {build}/classes. Only --release rejects APIs newer than 11 (String.formatted,
# Stream.toList), which the cluster's Java 11 would fail on at run time. Errors name the file and line
# (Foo.java:5); a non-zero exit + this output = CompileError.
#
# Parity guard: the Kubeless java11 image builds with -source 1.6 unless the pom sets the language
# level. When it sets none, the code is also compiled at --release 7 (rejects lambdas) and scanned for
# Java 7 syntax that -source 6 rejects (diamond, try-with-resources, multi-catch): a warning, shown as
# the server starts ({build}/compile-warnings.txt), or an error with
# KUBELESS_LOCAL_JAVA_SOURCE_CHECK=error (the Function's env or this machine's).
#
# {build} gets the runtime server's classes too (params/, handler/: a few files), so that the build
# alone runs (run.sh), also where a cluster's compilation phase copies it into the install volume.
#
# usage: compile-function.sh <javac> <runtime_lib> <install> <build> <module> <handler> <deps>
set -u
JAVAC=$1 LIB=$2 INSTALL=$3 BUILD=$4 MODULE=$5 HANDLER=$6 DEPS=$7

ident='[A-Za-z_$][A-Za-z0-9_$]*'
if ! printf '%s\n' "$MODULE" | grep -qx "$ident" || ! printf '%s\n' "$HANDLER" | grep -qx "$ident"; then
  echo "$MODULE.java: handler \"$MODULE.$HANDLER\" is not <Class>.<method> (spec.handler must be e.g. Foo.foo: class io.kubeless.Foo in Foo.java)"
  exit 1
fi
# (a missing class or method is the server's load failure: one line naming the file, CompileError)

rm -rf "$BUILD/classes" "$BUILD/params" "$BUILD/handler" "$BUILD/release7" "$BUILD/sources" "$BUILD/compile-warnings.txt"
mkdir -p "$BUILD/classes" || exit 1
cp -R "$LIB/params" "$LIB/handler" "$BUILD/" || exit 1
find "$INSTALL/" -name '*.java' -type f | sed 's/.*/"&"/' > "$BUILD/sources"
CP="$LIB/params:$DEPS/lib/*"
FAST="-J-XX:TieredStopAtLevel=1 -J-XX:+UseSerialGC"  # javac is a short run: the quick JIT is faster
if ! "$JAVAC" $FAST --release 11 -encoding UTF-8 -proc:none -Xlint:-options -d "$BUILD/classes" -cp "$CP" @"$BUILD/sources" > "$BUILD/compile.log" 2>&1; then
  cat "$BUILD/compile.log"
  exit 1
fi

# ---- the parity guard
level_set() {
  [ -f "$INSTALL/pom.xml" ] && grep -Eq '<(maven\.compiler\.(source|target|release)|source|release)>' "$INSTALL/pom.xml"
}
rm -f "$BUILD/compile.log"
level_set && { rm -f "$BUILD/sources"; exit 0; }
problems=""
if ! "$JAVAC" $FAST --release 7 -encoding UTF-8 -proc:none -nowarn -Xlint:-options -d "$BUILD/release7" -cp "$CP" @"$BUILD/sources" > "$BUILD/release7.log" 2>&1; then
  problems=$(grep -E '\.java:[0-9]+: error:' "$BUILD/release7.log" | head -n 10)
fi
# Java 7 syntax that --release 7 accepts and -source 6 refuses
java7=$(sed 's/^"\(.*\)"$/\1/' "$BUILD/sources" | while read -r src; do
  grep -nE 'new[[:space:]]+[A-Za-z0-9_.$]+[[:space:]]*<>|(^|[^A-Za-z0-9_])try[[:space:]]*\(|catch[[:space:]]*\([^)]*\|' "$src" |
    while IFS=: read -r line text; do
      case "$text" in
        *'<>'*) what="diamond operator <>" ;;
        *catch*) what="multi-catch" ;;
        *) what="try-with-resources" ;;
      esac
      echo "$src:$line: $what needs Java 7"
    done
done | head -n 10)
rm -rf "$BUILD/release7" "$BUILD/release7.log" "$BUILD/sources"
[ -z "$problems$java7" ] && exit 0
{
  echo "warning: this compiles locally, but the java11 image builds with -source 6; set maven.compiler.source/target >= 8 in pom.xml:"
  [ -n "$problems" ] && printf '%s\n' "$problems" | sed 's/: error:/: needs Java 8 or newer:/'
  [ -n "$java7" ] && printf '%s\n' "$java7"
} > "$BUILD/compile-warnings.txt"
if [ "${KUBELESS_LOCAL_JAVA_SOURCE_CHECK:-warn}" = "error" ]; then
  sed 's/^warning: this compiles locally/error: this compiles locally/' "$BUILD/compile-warnings.txt"
  echo "(KUBELESS_LOCAL_JAVA_SOURCE_CHECK=error makes this an error)"
  exit 1
fi
cat "$BUILD/compile-warnings.txt"
exit 0
