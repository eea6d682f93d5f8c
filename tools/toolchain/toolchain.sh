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
# As root the root filesystem is built with debootstrap and entered through a mount namespace; as
# any other user with mmdebstrap --mode=unshare and a user namespace that maps the caller to uid 0
# and the caller's subordinate ids (/etc/subuid, /etc/subgid) to 1..65535, so the root's files
# keep their owners and podman inside can run containers without privileges on the host.
#
# Environment: BAZELW_CACHE (default ${XDG_CACHE_HOME:-~/.cache}/churn-mlops-toolchain),
# BAZELW_DEBIAN_MIRROR (default: the host's own apt sources). Why not chroot: runc and
# `podman exec` need the root to be the namespace's root mount.
set -euo pipefail
# pivot_root, chroot and debootstrap live in sbin, which a normal user's PATH often lacks.
PATH=$PATH:/usr/sbin:/sbin

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
WORKSPACE=$(cd "$HERE/../.." && pwd -P)
LOCK=$HERE/toolchain.lock
PACKAGES=$HERE/packages.txt
SUITE=sid
CACHE=${BAZELW_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/churn-mlops-toolchain}
# Bump when the provisioning steps change in a way that needs a new root.
FORMAT=1
# Top-level directories that belong to the toolchain root; every other one is the host's, bound
# at its own path (home directories, /tmp, /mnt, /srv, any data directory).
SYSTEM_DIRS=" bin boot dev etc lib lib32 lib64 libx32 proc run sbin sys usr var "
if [ "$(id -u)" = 0 ]; then PRIVILEGED=1; else PRIVILEGED=; fi

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
  for tool in unshare nsenter mount pivot_root flock; do
    command -v "$tool" >/dev/null || die "'$tool' is missing on this host." "Install util-linux: apt-get install util-linux"
  done
  if [ -n "$PRIVILEGED" ]; then
    unshare --mount true 2>/dev/null || die "this host does not allow mount namespaces (unshare --mount failed)." \
      "Run on a host (or privileged container) that allows them."
    return
  fi
  local user
  user=$(id -un)
  for tool in newuidmap newgidmap; do
    command -v "$tool" >/dev/null || die "'$tool' is missing on this host (needed to map your subordinate ids)." \
      "As root: apt-get install uidmap"
  done
  grep -qE "^($user|$(id -u)):[0-9]+:[0-9]+" /etc/subuid 2>/dev/null \
    && grep -qE "^($user|$(id -u)):[0-9]+:[0-9]+" /etc/subgid 2>/dev/null \
    || die "user '$user' has no subordinate ids in /etc/subuid and /etc/subgid (the toolchain root needs 65536 of each)." \
      "As root: usermod --add-subuids 100000-165535 --add-subgids 100000-165535 $user   (pick a range no other user has)"
  # Not needed to build: containers with a network (slirp4netns) need the tun device, which udev
  # makes usable by everyone on a normal Debian; some machines leave it to root.
  [ -w /dev/net/tun ] \
    || say "note: /dev/net/tun is not usable by you: podman containers with a network will fail (tests of images, e2e). As root: chmod 0666 /dev/net/tun"
  local err
  err=$(unshare --user --map-auto --map-root-user --mount true 2>&1) \
    || die "this host does not let you create a user namespace: $err" \
      "Enable unprivileged user namespaces (as root): sysctl -w kernel.unprivileged_userns_clone=1 user.max_user_namespaces=15000" \
      "or run ./bazelw as root."
}

# Run CMD as uid 0 of the caller's user namespace (the caller itself when root).
as_root() {
  if [ -n "$PRIVILEGED" ]; then "$@"; else unshare --user --map-auto --map-root-user "$@"; fi
}

# Remove a directory tree that may hold files owned by subordinate ids.
remove_tree() { [ ! -e "$1" ] || as_root rm -rf --one-file-system "$1"; }

# The bootstrapper: debootstrap as root (installed on the fly), mmdebstrap otherwise.
ensure_debootstrap() {
  if [ -z "$PRIVILEGED" ]; then
    command -v mmdebstrap >/dev/null || die "mmdebstrap is missing on this host (it builds the toolchain root without root)." \
      "As root: apt-get install mmdebstrap uidmap"
    return
  fi
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
  local -a ns=(unshare --mount --propagation private)
  [ -n "$PRIVILEGED" ] || ns=(unshare --user --map-auto --map-root-user --mount --propagation private)
  "${ns[@]}" /bin/bash -c '
    set -e; R=$1; shift
    # A fresh proc needs a PID namespace in a user namespace: bind the host one instead.
    mount -t proc proc "$R/proc" 2>/dev/null || mount --rbind /proc "$R/proc"
    mount --rbind /dev "$R/dev"; mount --rbind /sys "$R/sys"
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
  if [ -n "$PRIVILEGED" ]; then
    timed "debootstrap $SUITE (minbase)" debootstrap --variant=minbase "$SUITE" "$STAGE/root" "$mirror"
    configure_apt "$STAGE/root"
    timed "apt-get update" in_new_root "$STAGE/root" apt-get update -q
    if [ "$mode" = pinned ]; then
      say "installing $(pinned_packages | wc -l) pinned packages ..."
      local start=$SECONDS
      install_pinned "$STAGE/root"
      say "installed in $((SECONDS - start)) s"
    else
      # shellcheck disable=SC2046
      timed "apt-get install (unpinned, from packages.txt)" \
        in_new_root "$STAGE/root" apt-get install -y -q $(wanted_packages)
    fi
  else
    mmdebstrap_root "$mode" "$mirror"
    configure_apt "$STAGE/root"
  fi
  [ "$mode" != pinned ] || verify_lock "$STAGE/root"
  timed "update-ca-certificates" in_new_root "$STAGE/root" update-ca-certificates
  in_new_root "$STAGE/root" apt-get clean
}

# Without root: mmdebstrap builds the root in its own user namespace and streams it as a tar, which
# is unpacked as uid 0 of the caller's namespace, so the files get the owners the root expects
# under the mapping every later call uses (mmdebstrap's own mapping differs by one id).
mmdebstrap_root() {
  local mode=$1 mirror=$2 packages
  if [ "$mode" = pinned ]; then packages=$(pinned_packages | paste -sd,); else packages=$(wanted_packages | paste -sd,); fi
  say "mmdebstrap $SUITE (minbase + $(echo "$packages" | tr ',' '\n' | wc -l) packages, no root needed) ..."
  local start=$SECONDS log=$STAGE/mmdebstrap.log
  mkdir -p "$STAGE/root"
  if ! mmdebstrap --mode=unshare --variant=minbase --format=tar \
         --aptopt='Acquire::Check-Valid-Until "false"' --aptopt='APT::Install-Recommends "false"' \
         --skip=cleanup/apt/lists `# the images' base layer resolves packages from them` \
         --include="$packages" "$SUITE" - "$mirror" 2>"$log" \
       | as_root tar -C "$STAGE/root" --numeric-owner -xpf - --exclude='./dev/*' \
       || ! grep -q '^I: success' "$log"; then
    tail -n 30 "$log" >&2
    local gone
    gone=$(sed -n -e "s/.*Version '\([^']*\)' for '\([^']*\)' was not found.*/\2=\1/p" \
                  -e "s/.*Unable to locate package \(.*\)$/\1/p" "$log")
    [ -z "$gone" ] || die "pinned packages are gone from the Debian mirror: $(echo $gone)" \
      "The mirror dropped these versions. Refresh the lock: tools/toolchain/toolchain.sh refresh-lock"
    die "mmdebstrap failed (output above)."
  fi
  say "mmdebstrap done in $((SECONDS - start)) s"
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
  trap 'remove_tree "$STAGE"' EXIT
  local start=$SECONDS
  say "provisioning the build toolchain (Debian $SUITE, $1) in $CACHE"
  build_root "$1"
  if [ "$1" = unpinned ]; then write_lock "$STAGE/root"; fi
  local dest
  dest=$CACHE/$(lock_key)
  mkdir -p "$dest"
  remove_tree "$dest/root"
  mv "$STAGE/root" "$dest/root"
  say "toolchain ready in $((SECONDS - start)) s: $(du -sh "$dest/root" 2>/dev/null | cut -f1) at $dest/root"
  remove_tree "$STAGE"
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
  if [ -z "$PRIVILEGED" ]; then
    mkdir -p "$ROOT/etc/containers/containers.conf.d"
    replace_if_changed "$HERE/containers-userns.conf" "$ROOT/etc/containers/containers.conf.d/50-user-namespace.conf"
  fi
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

# One persistent namespace whose root mount is the toolchain root, so the Bazel server sees the
# same mounts on every call and survives between calls. As root it is a mount namespace pinned on
# a file; otherwise a user + mount namespace kept alive by a holder process (an unprivileged user
# cannot pin a namespace on a file: that is a mount in the host's namespace).
ensure_namespace() {
  NS=$KEYDIR/ns
  OUTPUT_ROOT=$KEYDIR/bazel
  mkdir -p "$NS" "$OUTPUT_ROOT"
  exec 7>"$KEYDIR/.ns.lock"
  flock 7  # concurrent calls: one makes the namespace, the others wait and use it
  local mounts
  mounts=$(host_mounts)
  if namespace_alive; then
    # A namespace made before mount signatures were recorded: its own check is the workspace's.
    [ -s "$NS/mounts" ] || echo "$mounts" >"$NS/mounts"
    if [ "$(cat "$NS/mounts")" = "$mounts" ] \
       && [ "$("${NSENTER[@]}" stat -c %d:%i "/.host$WORKSPACE" 2>/dev/null)" = "$(stat -c %d:%i "$WORKSPACE")" ]; then
      bind_host_paths
      exec 7>&-
      return
    fi
    # The namespace holds a copy of the host's mounts as they were when it was made (the host's
    # mounts are private here, nothing propagates): a file system mounted since is invisible in it.
    say "the host's mounts changed since the toolchain namespace was made: making a new one"
    drop_namespace
  fi
  make_namespace
  echo "$mounts" >"$NS/mounts"
  bind_host_paths
  exec 7>&-
}

# The host's mount points a call can reach (neither the toolchain's own directories nor the
# toolchain caches' namespace files), as one digest.
host_mounts() {
  sed 's/ - \([^ ]*\) .*/ \1/' /proc/self/mountinfo | awk -v cache="$CACHE/" -v sys="$SYSTEM_DIRS" '
    $NF == "nsfs" { next }
    { mp = $5; top = mp; sub(/^\//, "", top); sub(/\/.*/, "", top)
      if (index(mp "/", cache) == 1 || mp ~ /\/churn-mlops-toolchain\// || (top != "" && index(sys, " " top " "))) next
      print mp }' | sort | sha256sum | cut -c1-16
}

namespace_alive() {
  if [ -n "$PRIVILEGED" ]; then
    NSENTER=(nsenter --mount="$NS/mnt")
    nsenter --mount="$NS/mnt" true 2>/dev/null
    return
  fi
  local pid
  pid=$(cat "$NS/holder.pid" 2>/dev/null) || return 1
  NSENTER=(nsenter --target "$pid" --user --mount)
  # The holder is ours and still the process that made this namespace (not a reused pid).
  [ "$(stat -L -c %i "/proc/$pid/ns/mnt" 2>/dev/null)" = "$(cat "$NS/holder.mntns" 2>/dev/null)" ] \
    && "${NSENTER[@]}" true 2>/dev/null
}

drop_namespace() {
  if [ -n "$PRIVILEGED" ]; then
    umount "$NS/mnt"
  else
    kill "$(cat "$NS/holder.pid")" 2>/dev/null || true  # processes still inside keep their namespace
    rm -f "$NS/holder.pid" "$NS/holder.mntns"
  fi
}

# The namespace's mounts: the toolchain root as "/", the host's tree kept at /.host (host paths
# are bound at their own paths by bind_host_paths, on every call).
# shellcheck disable=SC2016
NS_SETUP='
  R=$1 OUT=$2
  mount --bind "$R" "$R"                       # pivot_root needs the new root to be a mount point
  # a fresh proc needs a PID namespace in a user namespace: there, bind the host one
  mount -t proc proc "$R/proc" 2>/dev/null || mount --rbind /proc "$R/proc"
  mount --rbind /dev "$R/dev"; mount --rbind /sys "$R/sys"
  # podman keeps its locks in /dev/shm/libpod_lock: a private /dev/shm, so a host podman (or another
  # toolchain) owning that file does not lock us out ("failed to open 2048 locks: permission denied")
  mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$R/dev/shm"
  mount -t tmpfs -o mode=755 tmpfs "$R/run"    # fresh /run: podman and netavark runtime state
  mkdir -p "$R$OUT"; mount --bind "$OUT" "$R$OUT"
  mkdir -p "$R/.host"; cd "$R"; pivot_root . .host
  mount --make-rslave /'

make_namespace() {
  if [ -n "$PRIVILEGED" ]; then
    mountpoint -q "$NS" || { mount --bind "$NS" "$NS"; mount --make-private "$NS"; }
    touch "$NS/mnt"
    unshare --mount="$NS/mnt" --propagation private /bin/sh -ec "$NS_SETUP" _ "$ROOT" "$OUTPUT_ROOT"
    NSENTER=(nsenter --mount="$NS/mnt")
    return
  fi
  rm -f "$NS/holder.pid" "$NS/holder.mntns"
  # The holder: sets the namespace up, says it is ready, then sleeps as long as the namespace lives.
  # shellcheck disable=SC2016
  (
    # The holder keeps no descriptor of the caller: a lock would stay taken, a pipe held open would
    # keep its reader waiting forever.
    for fd in $(ls "/proc/$BASHPID/fd"); do [ "$fd" -le 2 ] || eval "exec $fd>&-"; done
    exec setsid unshare --user --map-auto --map-root-user --mount --propagation private /bin/sh -ec "$NS_SETUP"'
    NS=/.host$3
    # cgroups v1 + v2 side by side ("hybrid"): crun refuses it even with cgroups disabled, and
    # podman here runs without cgroups anyway (containers-userns.conf): hide the v2 mount.
    if mountpoint -q /sys/fs/cgroup/unified; then mount -t tmpfs -o ro,size=4k,mode=555 no-cgroup2 /sys/fs/cgroup/unified; fi
    stat -L -c %i /proc/self/ns/mnt >"$NS/holder.mntns"
    echo $$ >"$NS/holder.pid.tmp"; mv "$NS/holder.pid.tmp" "$NS/holder.pid"
    exec sleep infinity' _ "$ROOT" "$OUTPUT_ROOT" "$NS"
  ) </dev/null >"$NS/holder.log" 2>&1 &
  local tries=0
  until [ -s "$NS/holder.pid" ]; do
    kill -0 $! 2>/dev/null || die "could not make the toolchain's user namespace:" "$(cat "$NS/holder.log")"
    tries=$((tries + 1)); [ "$tries" -lt 200 ] || die "the toolchain namespace did not come up in 20 s" "$(cat "$NS/holder.log")"
    sleep 0.1
  done
  namespace_alive || die "the toolchain namespace died right after it was made:" "$(cat "$NS/holder.log")"
}

# Every top-level directory of the host that is not one of the toolchain's own (SYSTEM_DIRS) is
# bound at its own path, and so is the workspace: home directories, /tmp, /mnt, /srv, data
# directories. Done on each call (a directory made on the host since is bound too), under the
# namespace lock, only where the namespace does not show the host's directory already.
bind_host_paths() {
  # shellcheck disable=SC2016
  "${NSENTER[@]}" /bin/sh -c '
    ws=$1 sys=$2
    same() { [ "$(stat -c %d:%i "$1" 2>/dev/null)" = "$(stat -c %d:%i "$2" 2>/dev/null)" ]; }
    for host in /.host/* /.host/.[!.]*; do
      name=${host#/.host/}
      case "$sys" in *" $name "*) continue ;; esac
      if [ -L "$host" ]; then [ -e "/$name" ] || [ -L "/$name" ] || ln -s "$(readlink "$host")" "/$name"; continue; fi
      [ -d "$host" ] && [ -x "$host" ] || continue   # a directory this user may enter
      same "/$name" "$host" && continue
      # still bound to a host directory that was deleted since (and maybe made anew): drop that bind
      mountpoint -q "/$name" 2>/dev/null && umount -l "/$name"
      mkdir -p "/$name"
      mount --rbind "$host" "/$name" 2>/dev/null || mount --bind "$host" "/$name"
    done
    # The workspace, when it lies inside one of the toolchain directories.
    if ! same "$ws" "/.host$ws"; then
      mountpoint -q "$ws" 2>/dev/null && umount -l "$ws"
      mkdir -p "$ws" && mount --bind "/.host$ws" "$ws"
    fi' _ "$WORKSPACE" "$SYSTEM_DIRS"
}

# A host path as the namespace shows it: the same path, except inside the toolchain's own dirs.
host_path() {
  local top=${1#/}; top=${top%%/*}
  case "$SYSTEM_DIRS" in *" $top "*) echo "/.host$1" ;; *) echo "$1" ;; esac
}

# Variables passed from the caller into the root; everything else is reset for hermeticity.
passthrough_env() {
  local name
  for name in TERM CI HTTP_PROXY HTTPS_PROXY NO_PROXY http_proxy https_proxy no_proxy; do
    [ -n "${!name:-}" ] && printf '%s=%s\0' "$name" "${!name}"
  done
  env -0 | tr '\0' '\n' | grep -E '^(CHURN_|BAZELW_)[A-Z0-9_]*=' | tr '\n' '\0' || true
  # kubectl (//k8s:apply) inside the root reads the caller's kubeconfig.
  local kubeconfig=${KUBECONFIG:-} path out=
  [ -n "$kubeconfig" ] || { [ -f "$HOME/.kube/config" ] && kubeconfig=$HOME/.kube/config; }
  if [ -n "$kubeconfig" ]; then
    local IFS=:
    for path in $kubeconfig; do out=${out:+$out:}$(host_path "$path"); done
    printf 'KUBECONFIG=%s\0' "$out"
  fi
}

enter() {  # enter CMD...: run CMD in the namespace, in the caller's directory when inside the workspace
  ensure_root
  sync_config
  ensure_namespace
  local cwd=$PWD
  case "$(pwd -P)/" in "$WORKSPACE"/*) cwd=$(pwd -P) ;; *) cwd=$WORKSPACE ;; esac
  local -a envs=()
  mapfile -d '' envs < <(passthrough_env)
  local home=/root
  [ -n "$PRIVILEGED" ] || home=$(host_path "$HOME")
  # shellcheck disable=SC2016
  exec "${NSENTER[@]}" /bin/sh -c 'cd "$1" && shift && exec "$@"' _ "$cwd" \
    /usr/bin/env -i HOME="$home" USER=root LANG=C.UTF-8 PODMAN_IGNORE_CGROUPSV1_WARNING=1 \
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
