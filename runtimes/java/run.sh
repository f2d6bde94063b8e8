#!/bin/sh
# process.command: the runtime server on the JDK whose javac the catalog found (its java beside it).
# The serial collector, a small initial heap and small free ratios: a heap that shrinks back after big
# bodies (the server collects after a call with a body of 8 MiB or more); JAVA_OPTS (the Function's
# env) adds options. nodelay: no 40 ms Nagle/delayed-ACK stall per kept-alive request. A big body also
# left ~20 MB in a malloc arena (NIO's cached temporary direct buffer, then glibc keeping the freed
# pages): no caching of big temporary buffers, and a periodic malloc_trim (a JDK older than 17.0.9 has
# no such flag, and ignores it).
# KUBELESS_LOCAL_MEMORY_LIMIT_BYTES (the process backend, where the Function has a memory limit): the JVM sizes
# its heap as in the pod's container, whose limit it sees there (half of a small one, a quarter of a large one),
# not by this machine's memory.
# usage: run.sh <javac> <build> <deps>   (the compile step put the server's classes in <build>)
JAVAC=$1 BUILD=$2 DEPS=$3
exec "$(dirname "$(readlink -f "$JAVAC")")/java" -XX:+UseSerialGC -Xms16m -XX:MinHeapFreeRatio=10 -XX:MaxHeapFreeRatio=30 -XX:-ShrinkHeapInSteps -Dsun.net.httpserver.nodelay=true -Djdk.nio.maxCachedBufferSize=262144 -XX:+IgnoreUnrecognizedVMOptions -XX:TrimNativeHeapInterval=1000 ${KUBELESS_LOCAL_MEMORY_LIMIT_BYTES:+-XX:MaxRAM=$KUBELESS_LOCAL_MEMORY_LIMIT_BYTES} ${JAVA_OPTS:-} \
  -Dkubeless.compileWarnings="$BUILD/compile-warnings.txt" \
  -cp "$BUILD/classes:$DEPS/lib/*:$BUILD/params:$BUILD/handler" io.kubeless.runtime.Main
