#!/bin/sh
# process.init (cwd = the folder `init` just wrote): our parent POM io.kubeless:kubeless and the params jar
# io.kubeless:params (Event, Context), both 1.0-SNAPSHOT, into the user's local Maven repository, so an
# editor resolves the pom's parent and the handler's imports. Files already there are kept, never replaced.
# usage: init.sh <runtime_lib>
set -eu
REPO="$HOME/.m2/repository"
mkdir -p "$REPO/io/kubeless"
cp -R -n "$1/repository/io/kubeless/." "$REPO/io/kubeless/"
echo "io.kubeless:kubeless and io.kubeless:params 1.0-SNAPSHOT are in $REPO (for your editor)"
