#!/bin/bash
# Runs inside a virtme-ng guest (tests/kernels/matrix.py): mounts what bpfmagic needs,
# points HOME and the caches at the run's writable directory, then runs the command.
# $1: the writable directory shared with the host; the rest: the command.
set -u
out=$1; shift
for fs in "bpf /sys/fs/bpf" "tracefs /sys/kernel/tracing" "debugfs /sys/kernel/debug"; do
    type=${fs%% *}; dir=${fs#* }
    mountpoint -q "$dir" 2>/dev/null || mount -t "$type" "$type" "$dir" 2>/dev/null || echo "guest: could not mount $type on $dir" >&2
done
mkdir -p "$out/home" "$out/tmp"
chmod 0700 "$out" "$out/home" "$out/tmp"
# Temporary files on a guest tmpfs: on the shared directory, truncating a file that is open but
# unlinked (pytest's output capture, tempfile.TemporaryFile) fails with ENOENT, so the first
# test that writes to stdout or stderr broke the run.
mount -t tmpfs -o mode=0700 tmpfs "$out/tmp" || echo "guest: could not mount a tmpfs on $out/tmp" >&2
export HOME="$out/home" XDG_CACHE_HOME="$out/home/.cache" TMPDIR="$out/tmp"
exec "$@"
