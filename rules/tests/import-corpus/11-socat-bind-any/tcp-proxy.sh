#!/bin/sh
LISTEN_PORT=${LISTEN_PORT:-9000}
exec socat TCP-LISTEN:${LISTEN_PORT},bind=0.0.0.0,fork,reuseaddr TCP:10.0.0.25:9001
