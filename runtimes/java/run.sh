#!/bin/sh
# process.command: the runtime server on the JDK whose javac the catalog found (its java beside it).
# The serial collector with small free ratios: a small heap that shrinks back after big bodies (the
# server collects after a call with a body of 8 MiB or more); JAVA_OPTS (the Function's env) adds more.
# usage: run.sh <javac> <runtime_lib> <build> <deps>
JAVAC=$1 LIB=$2 BUILD=$3 DEPS=$4
exec "$(dirname "$(readlink -f "$JAVAC")")/java" -XX:+UseSerialGC -XX:MinHeapFreeRatio=10 -XX:MaxHeapFreeRatio=30 ${JAVA_OPTS:-} \
  -Dkubeless.compileWarnings="$BUILD/compile-warnings.txt" \
  -cp "$BUILD/classes:$DEPS/lib/*:$LIB/params:$LIB/handler" io.kubeless.runtime.Main
