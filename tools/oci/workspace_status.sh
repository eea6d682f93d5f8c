#!/bin/sh
# Bazel workspace status for stamped image builds (no git needed: the toolchain root has none).
#   ./bazelw build --stamp --workspace_status_command=tools/oci/workspace_status.sh //apps/api:image
# Prints STABLE_GIT_COMMIT (HEAD's commit) and STABLE_GIT_REMOTE_URL (origin, credentials removed).
set -eu
git_dir=.git
[ -d "$git_dir" ] || exit 0
head=$(cat "$git_dir/HEAD")
case "$head" in
  "ref: "*)
    ref=${head#ref: }
    if [ -f "$git_dir/$ref" ]; then commit=$(cat "$git_dir/$ref")
    else commit=$(sed -n "s| $ref\$||p" "$git_dir/packed-refs" 2>/dev/null | head -n1); fi ;;
  *) commit=$head ;;
esac
[ -n "${commit:-}" ] && echo "STABLE_GIT_COMMIT $commit"
url=$(sed -n '/^\[remote "origin"\]/,/^\[/s/^[[:space:]]*url[[:space:]]*=[[:space:]]*//p' "$git_dir/config" | head -n1)
[ -n "$url" ] && echo "STABLE_GIT_REMOTE_URL $(echo "$url" | sed 's|://[^/@]*@|://|')"
exit 0
