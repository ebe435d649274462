#!/bin/sh
# Entry point of the dataflow image: `python -m bytewax.run <import string> [bytewax.run flags]`.
#
# With BYTEWAX_RECOVERY_DIRECTORY set (compose.yaml sets it to a volume), the dataflow keeps its
# Kafka offsets and open windows in Bytewax recovery partitions and resumes from them after a
# restart. Bytewax needs the partitions to exist before the first run, so they are created here
# when the directory holds none. Bytewax itself reads BYTEWAX_RECOVERY_DIRECTORY,
# BYTEWAX_SNAPSHOT_INTERVAL and BYTEWAX_RECOVERY_BACKUP_INTERVAL from the environment.
#
# Without it, a restarted dataflow reads the trades topic again from its beginning (24 h of
# retention): slower, but correct, because bar writes are idempotent.
set -eu

if [ "$#" -eq 0 ]; then
    set -- dataflows.ohlcv:flow
fi

if [ -n "${BYTEWAX_RECOVERY_DIRECTORY:-}" ]; then
    mkdir -p "$BYTEWAX_RECOVERY_DIRECTORY"
    if ! ls "$BYTEWAX_RECOVERY_DIRECTORY"/part-*.sqlite3 >/dev/null 2>&1; then
        partitions="${BYTEWAX_RECOVERY_PARTITIONS:-1}"
        echo "dataflow-entrypoint: creating ${partitions} Bytewax recovery partition(s)" \
            "in ${BYTEWAX_RECOVERY_DIRECTORY}" >&2
        python -m bytewax.recovery "$BYTEWAX_RECOVERY_DIRECTORY" "$partitions"
    fi
    # Snapshot every 30 s unless told otherwise; keep no extra snapshots for external backups.
    BYTEWAX_SNAPSHOT_INTERVAL="${BYTEWAX_SNAPSHOT_INTERVAL:-30}"
    BYTEWAX_RECOVERY_BACKUP_INTERVAL="${BYTEWAX_RECOVERY_BACKUP_INTERVAL:-0}"
    export BYTEWAX_SNAPSHOT_INTERVAL BYTEWAX_RECOVERY_BACKUP_INTERVAL
fi

exec python -m bytewax.run "$@"
