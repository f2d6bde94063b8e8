#!/bin/sh
# Installs the function's package.json into the current folder ({deps}), like Kubeless'
# kubeless-npm-install.sh: NPM_REGISTRY (optionally only for NPM_SCOPE) and NPM_CONFIG_EXTRA
# from the function's env go into an .npmrc next to package.json.
set -e
rm -f .npmrc
if [ -n "$NPM_REGISTRY" ]; then
  if [ -n "$NPM_SCOPE" ]; then
    echo "$NPM_SCOPE:registry=$NPM_REGISTRY" > .npmrc
  else
    echo "registry=$NPM_REGISTRY" > .npmrc
  fi
fi
if [ -n "$NPM_CONFIG_EXTRA" ]; then
  echo "$NPM_CONFIG_EXTRA" >> .npmrc
fi
exec npm install --omit=dev --no-audit --no-fund --no-update-notifier --prefix="$(pwd)"
