#!/bin/sh
# Stands in for `tributary function` in the supervisor's tests: the first
# start (per marker file) dies at once, later ones live until killed.
marker="${TRIBUTARY_TEST_MARKER:?}"
if [ ! -e "$marker" ]; then
  : > "$marker"
  exit 1
fi
exec sleep 600
