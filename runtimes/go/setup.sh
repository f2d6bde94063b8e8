#!/bin/sh
# process.setup (cwd = {runtime_lib}): fetch the server's own modules (client_golang…) into the
# shared module cache and build a warm-up function once, so that later function builds only
# compile the function and link (≈1 s).
# usage: setup.sh <go> <runtime_dir> <runtime_lib>
set -eu
GO=$1 RUNTIME_DIR=$2 LIB=$3
WARM="$LIB/warmup"
rm -rf "$WARM" && mkdir -p "$WARM/install" "$WARM/build"
cat > "$WARM/install/handler.go" <<'GO'
package kubeless

import "github.com/kubeless/kubeless/pkg/functions"

func Handler(event functions.Event, context functions.Context) (string, error) {
	return "warm", nil
}
GO
cd "$WARM/build"
sh "$RUNTIME_DIR/compile-function.sh" "$GO" "$RUNTIME_DIR" "$LIB" "$WARM/install" "$WARM/build" handler Handler
rm -rf "$WARM"
echo "Go runtime ready: modules in $LIB/mod, build cache in $LIB/cache"
