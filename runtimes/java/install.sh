#!/bin/sh
# process.install / docker.install (cwd = {deps}, which holds the function's pom.xml): lay the deps
# folder out like the pod's (function/pom.xml, our parent as pom.xml beside it) and copy the pom's
# runtime dependencies into {deps}/lib with Maven, from the repository in {runtime_lib} (shared by
# every function of this runtime). Offline first: a pom whose dependencies are all there needs no
# network. MAVEN_OPTS and the machine's Maven settings (mirrors, proxies) apply as usual.
# usage: install.sh <mvn> <runtime_dir> <runtime_lib>   (javac on PATH: its java makes the trust store)
set -u
MVN=$1 RUNTIME_DIR=$2 LIB=$3
mkdir -p function lib || exit 1
cp pom.xml function/pom.xml && cp "$RUNTIME_DIR/kubeless-parent.pom" pom.xml || exit 1
# A pom whose only dependencies are Kubeless' own (io.kubeless:params, which the runtime provides)
# needs no Maven at all: nothing to copy, no network (the init template's pom).
others=$(awk '/<dependencies>/{d=1} /<\/dependencies>/{d=0} d && /<groupId>/{gsub(/.*<groupId>|<\/groupId>.*/, ""); print}' function/pom.xml | grep -vx 'io\.kubeless')
[ -z "$others" ] && exit 0
GOAL="org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies"
set -- -B -ntp -Dmaven.repo.local="$LIB/repository" -f function/pom.xml "$GOAL" \
  -DoutputDirectory="$PWD/lib" -DincludeScope=runtime -DexcludeGroupIds=io.kubeless
if "$MVN" -o -q "$@" > offline.log 2>&1; then
  rm -f offline.log
  exit 0
fi
rm -f offline.log
# The host's CA bundle (SSL_CERT_FILE: set in containers, or by the user) as a trust store for Maven.
if [ -n "${SSL_CERT_FILE:-}" ] && [ -f "$SSL_CERT_FILE" ]; then
  JAVA="$(dirname "$(readlink -f "$(command -v javac)")")/java"
  if "$JAVA" -cp "$LIB/handler" io.kubeless.runtime.TrustStore "$SSL_CERT_FILE" "$PWD/.truststore.p12" changeit; then
    MAVEN_OPTS="${MAVEN_OPTS:-} -Djavax.net.ssl.trustStore=$PWD/.truststore.p12 -Djavax.net.ssl.trustStorePassword=changeit -Djavax.net.ssl.trustStoreType=PKCS12"
    export MAVEN_OPTS
  fi
fi
echo "resolving pom.xml dependencies with Maven"
# Maven's own lines, less the download chatter; the errors name pom.xml
"$MVN" "$@" > maven.log 2>&1
code=$?
if [ $code -ne 0 ]; then
  grep -E '^\[(ERROR|WARNING)\]' maven.log | sed -e "s#$PWD/function/pom.xml#pom.xml#g" -e "s#$PWD/##g" | grep -v '^\[ERROR\] *$' | head -n 30
  exit $code
fi
rm -f maven.log .truststore.p12
