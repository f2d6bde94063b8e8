#!/bin/sh
# process.setup (cwd = {runtime_lib}): compile the runtime server once per JDK and server version:
# {runtime_lib}/params (io.kubeless Event, Context, Extensions; also params.jar) and
# {runtime_lib}/handler (io.kubeless.runtime), and a Maven repository {runtime_lib}/repository that
# holds io.kubeless:kubeless:1.0-SNAPSHOT (our parent POM, see kubeless-parent.pom) and
# io.kubeless:params:1.0-SNAPSHOT, so functions' pom.xml that name them resolve. Written as files:
# Maven counts an artifact without _remote.repositories as installed locally.
# usage: setup.sh <javac> <runtime_dir> <runtime_lib>
set -eu
JAVAC=$1 RUNTIME_DIR=$2 LIB=$3
JAR="$(dirname "$(readlink -f "$JAVAC")")/jar"
rm -rf "$LIB/params" "$LIB/handler"
"$JAVAC" --release 11 -encoding UTF-8 -nowarn -d "$LIB/params" "$RUNTIME_DIR"/params/io/kubeless/*.java
"$JAVAC" --release 11 -encoding UTF-8 -nowarn -cp "$LIB/params" -d "$LIB/handler" "$RUNTIME_DIR"/server/io/kubeless/runtime/*.java
"$JAR" --create --file "$LIB/params.jar" -C "$LIB/params" .
REPO="$LIB/repository/io/kubeless"
mkdir -p "$REPO/kubeless/1.0-SNAPSHOT" "$REPO/params/1.0-SNAPSHOT"
cp "$RUNTIME_DIR/kubeless-parent.pom" "$REPO/kubeless/1.0-SNAPSHOT/kubeless-1.0-SNAPSHOT.pom"
cp "$RUNTIME_DIR/params.pom" "$REPO/params/1.0-SNAPSHOT/params-1.0-SNAPSHOT.pom"
cp "$LIB/params.jar" "$REPO/params/1.0-SNAPSHOT/params-1.0-SNAPSHOT.jar"
echo "Java runtime ready: server in $LIB/handler, Maven repository $LIB/repository"
