#!/bin/sh
# process.command: the runtime server on the JDK whose javac the catalog found (its java beside it).
# The serial collector, a small initial heap and small free ratios: a heap that shrinks back after big
# bodies (the server collects after a call with a body of 8 MiB or more); JAVA_OPTS (the Function's
# env) adds options. nodelay: no 40 ms Nagle/delayed-ACK stall per kept-alive request.
# usage: run.sh <javac> <build> <deps>   (the compile step put the server's classes in <build>)
JAVAC=$1 BUILD=$2 DEPS=$3
exec "$(dirname "$(readlink -f "$JAVAC")")/java" -XX:+UseSerialGC -Xms16m -XX:MinHeapFreeRatio=10 -XX:MaxHeapFreeRatio=30 -XX:-ShrinkHeapInSteps -Dsun.net.httpserver.nodelay=true ${JAVA_OPTS:-} \
  -Dkubeless.compileWarnings="$BUILD/compile-warnings.txt" \
  -cp "$BUILD/classes:$DEPS/lib/*:$BUILD/params:$BUILD/handler" io.kubeless.runtime.Main
