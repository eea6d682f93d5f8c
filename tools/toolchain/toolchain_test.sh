#!/usr/bin/env bash
# The toolchain's own test, run on the host (not under Bazel: it tests what Bazel runs in), as
# root or as any user: tools/toolchain/toolchain_test.sh. CI runs it as its unprivileged user.
#
# - several toolchain calls at once, from two workspaces (this one and a second one made here),
#   all succeed and all see the same, complete toolchain config (on an empty cache they also race
#   on provisioning and on making the namespace);
# - host paths: a file the host writes under /tmp and under $HOME is seen inside at the same path,
#   and a file written inside shows on the host; the caller's directory is kept;
# - as root: a directory made at the top of the host, and a file system mounted on the host, after
#   the namespace exists, are seen inside, and so is that directory deleted and made anew (an
#   unprivileged user cannot mount on the host, so this part needs root; it says so). The mount
#   and its removal each make the namespace anew, so Bazel servers of that cache restart on their
#   next call: run it as root on your own cache
#   (BAZELW_CACHE=DIR), not on one others are using.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
TOOLCHAIN=$HERE/toolchain.sh
failures=0 passes=0
pass() { printf 'PASS %s\n' "$*"; passes=$((passes + 1)); }
fail() { printf 'FAIL %s\n' "$*"; failures=$((failures + 1)); }

scratch=$(mktemp -d /tmp/toolchain-test.XXXXXX)
cleanup() {
  if [ -n "${mounted:-}" ]; then umount "$mounted" 2>/dev/null || true; fi
  [ -z "${topdir:-}" ] || rmdir "$topdir" 2>/dev/null || true
  rm -rf "$scratch" "${homefile:-}"
}
trap cleanup EXIT

# A second workspace: a directory with its own copy of the toolchain scripts (same lock, so the
# same root), as a second clone would be.
second=$scratch/second-workspace
mkdir -p "$second/tools"
cp -r "$HERE" "$second/tools/toolchain"
touch "$second/MODULE.bazel"

expected=$(sha256sum <"$HERE/bazel.bazelrc")
calls=8
for i in $(seq 1 "$calls"); do
  ws=$HERE; [ $((i % 2)) = 0 ] || ws=$second/tools/toolchain
  ( "$ws/toolchain.sh" exec /bin/sh -c 'sha256sum </etc/bazel.bazelrc; pwd' >"$scratch/call.$i.out" 2>"$scratch/call.$i.err"
    echo $? >"$scratch/call.$i.rc" ) &
done
wait
# The call that provisioned (on an empty cache) shows its steps and their durations.
for i in $(seq 1 "$calls"); do
  if grep -q 'toolchain ready' "$scratch/call.$i.err"; then echo "call $i provisioned:"; cat "$scratch/call.$i.err"; fi
done
ok=0
for i in $(seq 1 "$calls"); do
  if [ "$(cat "$scratch/call.$i.rc")" = 0 ] && [ "$(head -n1 "$scratch/call.$i.out")" = "$expected" ]; then
    ok=$((ok + 1))
  else
    echo "--- call $i: exit $(cat "$scratch/call.$i.rc")"; cat "$scratch/call.$i.out" "$scratch/call.$i.err"
  fi
done
[ "$ok" = "$calls" ] && pass "$calls concurrent calls from two workspaces" || fail "$ok of $calls concurrent calls succeeded"

# Host paths at their own paths, both ways.
echo "from the host" >"$scratch/host.txt"
homefile=$(mktemp "$HOME/.toolchain-test.XXXXXX")
echo "home" >"$homefile"
got=$("$TOOLCHAIN" exec /bin/sh -c 'cat "$1" "$2" && echo "from inside" >"$3"' _ \
        "$scratch/host.txt" "$homefile" "$scratch/inside.txt" 2>"$scratch/host.err") || got="$got $(cat "$scratch/host.err")"
[ "$got" = "$(printf 'from the host\nhome')" ] && pass "host files under /tmp and \$HOME seen inside at their paths" \
  || fail "host files inside: $got"
[ "$(cat "$scratch/inside.txt" 2>/dev/null)" = "from inside" ] && pass "a file written inside shows on the host" \
  || fail "a file written inside did not show on the host"

# The caller's directory inside the workspace is kept (bazel run's BUILD_WORKING_DIRECTORY).
got=$(cd "$HERE" && "$TOOLCHAIN" exec pwd 2>"$scratch/cwd.err") || got="$got $(cat "$scratch/cwd.err")"
[ "$got" = "$HERE" ] && pass "the caller's directory is kept" || fail "cwd inside: $got, expected $HERE"

if [ "$(id -u)" = 0 ]; then
  topdir=$(mktemp -d /toolchain-test.XXXXXX)
  mounted=$scratch/mounted
  mkdir -p "$mounted"
  mount -t tmpfs -o size=1m toolchain-test "$mounted"
  echo "on a new mount" >"$mounted/file"
  echo "top" >"$topdir/file"
  got=$("$TOOLCHAIN" exec /bin/sh -c 'cat "$1" "$2"' _ "$mounted/file" "$topdir/file" 2>"$scratch/mount.err") || got="$got $(cat "$scratch/mount.err")"
  [ "$got" = "$(printf 'on a new mount\ntop')" ] \
    && pass "a file system mounted and a top-level directory made after the namespace are seen inside" \
    || fail "after-the-namespace mount / directory: $got"
  # The same top-level directory deleted and made anew (as a re-created checkout or scratch area
  # is): the namespace still holds a bind of the deleted one; the next call must show the new one.
  rm -rf "$topdir"; mkdir "$topdir"; echo "anew" >"$topdir/file"
  got=$("$TOOLCHAIN" exec cat "$topdir/file" 2>"$scratch/anew.err") || true
  [ "$got" = "anew" ] && [ ! -s "$scratch/anew.err" ] \
    && pass "a top-level directory deleted and made anew is seen inside with its new content" \
    || fail "re-made top-level directory: got '$got', stderr: $(cat "$scratch/anew.err")"
  umount "$mounted" && mounted=
  rm -rf "$topdir"; topdir=
  # Back to the host's usual mounts: the next call gets a namespace without the test's mount.
  "$TOOLCHAIN" exec true
else
  echo "NOTE mounting on the host needs root: run this test as root too for the after-the-namespace mount"
fi

echo "toolchain_test: $passes passed, $failures failed"
[ "$failures" = 0 ]
