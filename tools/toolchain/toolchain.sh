#!/usr/bin/env bash
# The pinned build toolchain: a Debian root filesystem holding Bazel 7 (Debian's bazel-bootstrap),
# its offline rule modules, Python, crane/skopeo/podman and kubectl, provisioned on first use and
# entered through one persistent private mount namespace (pivot_root, so containers work inside).
#
#   toolchain.sh bazel ARGS...     run Bazel inside the root (what ./bazelw and tools/bazel call)
#   toolchain.sh exec CMD ARGS...  run any command inside the root (cwd kept when inside the workspace)
#   toolchain.sh shell             interactive shell inside the root
#   toolchain.sh refresh-lock      resolve packages.txt anew on the mirror and rewrite toolchain.lock
#   toolchain.sh info              where the toolchain lives, its size and lock
#
# Environment: BAZELW_CACHE (default ${XDG_CACHE_HOME:-~/.cache}/churn-mlops-toolchain),
# BAZELW_DEBIAN_MIRROR (default: the host's own apt sources). Why not chroot: see
# shared notes (runc and `podman exec` need the root to be the namespace's root mount).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
WORKSPACE=$(cd "$HERE/../.." && pwd -P)
LOCK=$HERE/toolchain.lock
PACKAGES=$HERE/packages.txt
SUITE=sid
CACHE=${BAZELW_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/churn-mlops-toolchain}
# Bump when the provisioning steps change in a way that needs a new root.
FORMAT=1

say() { printf '[toolchain] %s\n' "$*" >&2; }
die() {
  printf '[toolchain] ERROR: %s\n' "$1" >&2
  shift
  for line in "$@"; do printf '[toolchain]   %s\n' "$line" >&2; done
  exit 1
}

lock_key() { { echo "format=$FORMAT"; cat "$LOCK"; } | sha256sum | cut -c1-16; }

# The Debian mirror: an explicit variable, else the host's own apt configuration (never a name
# written in the repository).
debian_mirror() {
  if [ -n "${BAZELW_DEBIAN_MIRROR:-}" ]; then echo "$BAZELW_DEBIAN_MIRROR"; return; fi
  local uri
  uri=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\/debian\/\{0,1\}\)\([[:space:]].*\)\{0,1\}$/\1/p' \
          /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)
  if [ -z "$uri" ]; then
    uri=$(sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\{0,1\}\([^[:space:]]*\/debian\/\{0,1\}\)[[:space:]].*/\2/p' \
            /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | head -n1)
  fi
  echo "$uri"
}

check_host() {
  [ "$(id -u)" = 0 ] || die "provisioning the toolchain needs root (mount namespaces, debootstrap)." \
    "Run as root, e.g. 'sudo ./bazelw ...'."
  for tool in unshare nsenter mount pivot_root; do
    command -v "$tool" >/dev/null || die "'$tool' is missing on this host." "Install util-linux: apt-get install util-linux"
  done
  unshare --mount true 2>/dev/null || die "this host does not allow mount namespaces (unshare --mount failed)." \
    "Run on a host (or privileged container) that allows them."
}

ensure_debootstrap() {
  command -v debootstrap >/dev/null && return
  command -v apt-get >/dev/null || die "debootstrap is missing and this host has no apt-get." \
    "Install debootstrap with your package manager."
  say "installing debootstrap on the host (apt-get install debootstrap)"
  apt-get install -y -q debootstrap >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q debootstrap >/dev/null; } \
    || die "could not install debootstrap." "Run: apt-get update && apt-get install debootstrap"
}

# Run a command inside a root that is still being built: a throw-away private mount namespace.
in_new_root() {
  local root=$1; shift
  unshare --mount --propagation private /bin/bash -c '
    set -e; R=$1; shift
    mount -t proc proc "$R/proc"; mount --rbind /dev "$R/dev"; mount --rbind /sys "$R/sys"
    cp -L /etc/resolv.conf "$R/etc/resolv.conf"
    exec chroot "$R" /usr/bin/env -i HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive \
      PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"' _ "$root" "$@"
}

timed() {  # timed LABEL CMD...: run a step, print its duration; show its log if it fails
  local label=$1 log=$STAGE/$(echo "$1" | tr ' /' '__').log start=$SECONDS; shift
  say "$label ..."
  if ! "$@" >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    return 1
  fi
  say "$label done in $((SECONDS - start)) s"
}

pinned_packages() { sed -n '/^suite=/d; s/^\([a-z0-9][a-z0-9+.-]*\)=\(.*\)$/\1=\2/p' "$LOCK"; }
wanted_packages() { sed 's/#.*//' "$PACKAGES" | tr -s ' \n' '\n' | sed '/^$/d'; }

configure_apt() {
  local root=$1
  # The mirror serves a frozen snapshot whose Release files are past Valid-Until.
  echo 'Acquire::Check-Valid-Until "false";' >"$root/etc/apt/apt.conf.d/99no-valid-until"
  echo 'APT::Install-Recommends "false";' >"$root/etc/apt/apt.conf.d/99no-recommends"
  # TLS-intercepting proxies: trust the host's extra CAs inside the root too (pip needs them).
  mkdir -p "$root/usr/local/share/ca-certificates"
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
  fi
}

install_pinned() {
  local root=$1 out
  # shellcheck disable=SC2046
  if ! out=$(in_new_root "$root" apt-get install -y -q --allow-downgrades $(pinned_packages) 2>&1); then
    echo "$out" | tail -n 20 >&2
    local gone
    gone=$(echo "$out" | sed -n -e "s/.*Version '\([^']*\)' for '\([^']*\)' was not found.*/\2=\1/p" \
                               -e "s/.*Unable to locate package \(.*\)$/\1/p")
    [ -z "$gone" ] || die "pinned packages are gone from the Debian mirror: $(echo $gone)" \
      "The mirror dropped these versions. Refresh the lock: tools/toolchain/toolchain.sh refresh-lock"
    die "apt-get install of the pinned toolchain failed (output above)."
  fi
}

verify_lock() {
  local root=$1 diff
  diff=$(diff <(pinned_packages | sort) <(installed_packages "$root") || true)
  [ -z "$diff" ] || die "the provisioned root differs from toolchain.lock:" "$diff" \
    "Refresh the lock: tools/toolchain/toolchain.sh refresh-lock"
}

installed_packages() {
  in_new_root "$1" dpkg-query -W -f '${db:Status-Abbrev} ${Package}=${Version}\n' \
    | sed -n 's/^ii  *//p' | sort
}

# Build a root in a staging directory; the caller moves it into place only when complete.
build_root() {
  local mode=$1 mirror
  mirror=$(debian_mirror)
  [ -n "$mirror" ] || die "no Debian mirror found in the host's apt sources." \
    "Set BAZELW_DEBIAN_MIRROR to a Debian mirror URL (the one apt uses)."
  timed "debootstrap $SUITE (minbase)" debootstrap --variant=minbase "$SUITE" "$STAGE/root" "$mirror"
  configure_apt "$STAGE/root"
  timed "apt-get update" in_new_root "$STAGE/root" apt-get update -q
  if [ "$mode" = pinned ]; then
    say "installing $(pinned_packages | wc -l) pinned packages ..."
    local start=$SECONDS
    install_pinned "$STAGE/root"
    say "installed in $((SECONDS - start)) s"
    verify_lock "$STAGE/root"
  else
    # shellcheck disable=SC2046
    timed "apt-get install (unpinned, from packages.txt)" \
      in_new_root "$STAGE/root" apt-get install -y -q $(wanted_packages)
  fi
  timed "update-ca-certificates" in_new_root "$STAGE/root" update-ca-certificates
  in_new_root "$STAGE/root" apt-get clean
}

write_lock() {
  local root=$1 tmp
  tmp=$(mktemp "$LOCK.XXXXXX")
  {
    echo "# The build toolchain root: Debian $SUITE, every package pinned (name=version)."
    echo "# Generated by: tools/toolchain/toolchain.sh refresh-lock   (input: packages.txt)"
    echo "suite=$SUITE"
    installed_packages "$root"
  } >"$tmp"
  mv "$tmp" "$LOCK"
}

provision() {  # provision pinned|unpinned: build a complete root under $CACHE/<key>
  check_host
  ensure_debootstrap
  mkdir -p "$CACHE"
  STAGE=$(mktemp -d "$CACHE/.staging.XXXXXX")
  trap 'rm -rf --one-file-system "$STAGE"' EXIT
  local start=$SECONDS
  say "provisioning the build toolchain (Debian $SUITE, $1) in $CACHE"
  build_root "$1"
  if [ "$1" = unpinned ]; then write_lock "$STAGE/root"; fi
  local dest
  dest=$CACHE/$(lock_key)
  mkdir -p "$dest"
  rm -rf --one-file-system "$dest/root"
  mv "$STAGE/root" "$dest/root"
  say "toolchain ready in $((SECONDS - start)) s: $(du -sh "$dest/root" | cut -f1) at $dest/root"
  rm -rf --one-file-system "$STAGE"
  trap - EXIT
}

ensure_root() {
  KEYDIR=$CACHE/$(lock_key)
  ROOT=$KEYDIR/root
  [ -x "$ROOT/usr/bin/bazel" ] && return
  mkdir -p "$CACHE"
  exec 9>"$CACHE/.provision.lock"
  flock 9  # one provisioning at a time; a second caller waits and then reuses it
  [ -x "$ROOT/usr/bin/bazel" ] || provision pinned
  exec 9>&-
}

# Files that configure the environment (not the project) inside the root: kept in sync each call.
# Concurrent calls (several workspaces, parallel jobs) take turns under one lock, and each file is
# replaced by a rename, so a Bazel server starting meanwhile reads a complete old or new file.
sync_config() {
  exec 8>"$KEYDIR/.sync.lock"
  flock 8
  replace_if_changed "$HERE/bazel.bazelrc" "$ROOT/etc/bazel.bazelrc"
  mkdir -p "$ROOT/etc/containers"
  replace_if_changed "$HERE/containers.conf" "$ROOT/etc/containers/containers.conf"
  [ ! -r /etc/resolv.conf ] || replace_if_changed /etc/resolv.conf "$ROOT/etc/resolv.conf"
  local stubs=$ROOT/usr/local/share/bazel-stubs
  if [ ! -e "$stubs/.synced-$FORMAT" ] || [ -n "$(find "$HERE/stubs" -newer "$stubs/.synced-$FORMAT" -print -quit)" ]; then
    rm -rf "$stubs.new" && cp -r "$HERE/stubs" "$stubs.new" && touch "$stubs.new/.synced-$FORMAT"
    rm -rf "$stubs.old"; [ ! -e "$stubs" ] || mv "$stubs" "$stubs.old"
    mv "$stubs.new" "$stubs" && rm -rf "$stubs.old"
  fi
  exec 8>&-
}

replace_if_changed() {  # replace_if_changed SRC DEST: DEST becomes a copy of SRC, by rename
  cmp -s "$1" "$2" && return
  local tmp
  tmp=$(mktemp "$(dirname "$2")/.$(basename "$2").XXXXXX")
  cp -L "$1" "$tmp" && chmod 0644 "$tmp" && mv -f "$tmp" "$2"
}

# One persistent mount namespace (pinned on a file) whose root mount is the toolchain root, so the
# Bazel server sees the same mounts on every call and survives between calls.
ensure_namespace() {
  NS=$KEYDIR/ns
  OUTPUT_ROOT=$KEYDIR/bazel
  mkdir -p "$NS" "$OUTPUT_ROOT"
  if nsenter --mount="$NS/mnt" true 2>/dev/null; then
    # The namespace sees the host's mounts as they were when it was made: a workspace on a
    # filesystem mounted since then is invisible in it, so such a call gets a new namespace.
    [ "$(nsenter --mount="$NS/mnt" stat -c %d:%i "/.host$WORKSPACE" 2>/dev/null)" = "$(stat -c %d:%i "$WORKSPACE")" ] \
      && return
    say "the workspace is not visible in the toolchain namespace (mounted after it was made): making a new one"
    umount "$NS/mnt"
  fi
  mountpoint -q "$NS" || { mount --bind "$NS" "$NS"; mount --make-private "$NS"; }
  touch "$NS/mnt"
  unshare --mount="$NS/mnt" --propagation private /bin/sh -ec '
    R=$1 OUT=$2
    mount --bind "$R" "$R"                       # pivot_root needs the new root to be a mount point
    mount -t proc proc "$R/proc"
    mount --rbind /dev "$R/dev"; mount --rbind /sys "$R/sys"
    mount -t tmpfs -o mode=755 tmpfs "$R/run"    # fresh /run: podman and netavark runtime state
    mkdir -p "$R$OUT"; mount --bind "$OUT" "$R$OUT"
    mkdir -p "$R/.host"; cd "$R"; pivot_root . .host
    mount --make-rslave /' _ "$ROOT" "$OUTPUT_ROOT"
}

# Variables passed from the caller into the root; everything else is reset for hermeticity.
passthrough_env() {
  local name
  for name in TERM CI HTTP_PROXY HTTPS_PROXY NO_PROXY http_proxy https_proxy no_proxy; do
    [ -n "${!name:-}" ] && printf '%s=%s\0' "$name" "${!name}"
  done
  env -0 | tr '\0' '\n' | grep -E '^(CHURN_|BAZELW_)[A-Z0-9_]*=' | tr '\n' '\0' || true
  # kubectl (//k8s:apply) inside the root reads the caller's kubeconfig through /.host.
  local kubeconfig=${KUBECONFIG:-}
  [ -n "$kubeconfig" ] || { [ -f "$HOME/.kube/config" ] && kubeconfig=$HOME/.kube/config; }
  [ -z "$kubeconfig" ] || printf 'KUBECONFIG=%s\0' "$(echo "$kubeconfig" | sed 's#\(^\|:\)/#\1/.host/#g')"
}

enter() {  # enter CMD...: run CMD in the namespace, in the caller's directory when inside the workspace
  ensure_root
  sync_config
  ensure_namespace
  local cwd=$PWD
  case "$(pwd -P)/" in "$WORKSPACE"/*) cwd=$(pwd -P) ;; *) cwd=$WORKSPACE ;; esac
  local -a envs=()
  mapfile -d '' envs < <(passthrough_env)
  exec nsenter --mount="$NS/mnt" /bin/sh -c '
    ws=$1 cwd=$2; shift 2
    # Bind the workspace at its host path (from the host tree kept at /.host), once per namespace.
    if [ "$(stat -c %d:%i "$ws" 2>/dev/null)" != "$(stat -c %d:%i "/.host$ws")" ]; then
      mountpoint -q "$ws" 2>/dev/null && umount -l "$ws"
      mkdir -p "$ws" && mount --bind "/.host$ws" "$ws"
    fi
    cd "$cwd" && exec "$@"' _ "$WORKSPACE" "$cwd" \
    /usr/bin/env -i HOME=/root USER=root LANG=C.UTF-8 PODMAN_IGNORE_CGROUPSV1_WARNING=1 \
      PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "${envs[@]}" "$@"
}

main() {
  local cmd=${1:-}
  shift || true
  case "$cmd" in
    bazel) check_host; KEYDIR=$CACHE/$(lock_key); enter /usr/bin/bazel --output_user_root="$KEYDIR/bazel" "$@" ;;
    exec) check_host; enter "$@" ;;
    shell) check_host; enter /bin/bash -l ;;
    refresh-lock) provision unpinned; say "wrote $LOCK ($(pinned_packages | wc -l) packages)" ;;
    info)
      KEYDIR=$CACHE/$(lock_key)
      echo "lock:      $LOCK ($(pinned_packages | wc -l) packages, key $(lock_key))"
      echo "root:      $KEYDIR/root $([ -d "$KEYDIR/root" ] && du -sh "$KEYDIR/root" | cut -f1 || echo '(not provisioned)')"
      echo "bazel:     $KEYDIR/bazel" ;;
    *) die "usage: toolchain.sh {bazel|exec|shell|refresh-lock|info} ..." ;;
  esac
}

main "$@"
