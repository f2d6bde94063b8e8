#!/bin/sh
# Installs the runtime server's own libraries (express, prom-client) into the current folder
# ({runtime_lib}) from the committed lock file.
set -e
cp "$1/package.json" "$1/package-lock.json" .
exec npm ci --omit=dev --no-audit --no-fund --no-update-notifier
