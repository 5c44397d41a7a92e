#!/bin/sh
# Stands in for `tributary function` in the supervisor's tests: a process that
# lives until it is killed (the test says its hello for it).
exec sleep 600
