#!/usr/bin/env bash
# Gets the live-analysis tests' real Prometheus server, cached outside the repo:
#
#   $LLM_ROLLOUT_CACHE/prometheus/bin/prometheus   Debian's prometheus package (bookworm: 2.42)
#
# The cache root is ${LLM_ROLLOUT_CACHE:-$HOME/.cache/llm-rollout}. The binary comes from the
# machine's own apt sources, like the test API server's etcd (scripts/build-test-apiserver.sh):
# `apt-get download prometheus` into a scratch directory and `dpkg-deb -x` there - nothing is
# installed and the system's packages stay untouched. Debian builds it as a Go binary linked only to
# libc, so it runs from the cache. Override the package version with LLM_ROLLOUT_PROMETHEUS_VERSION
# (an apt version string); the script reads the machine's apt lists and, when they do not know the
# package, says to run `apt-get update`.
#
# About 20 MB downloaded, a few seconds. When the binary exists and runs, the script says so and
# exits at once. Concurrent runs wait for each other through a lock file.
set -euo pipefail

cache=${LLM_ROLLOUT_CACHE:-$HOME/.cache/llm-rollout}
bin_dir="$cache/prometheus/bin"
prometheus_bin="$bin_dir/prometheus"
pkg=prometheus

binary_works() {
    [[ -x $prometheus_bin ]] && "$prometheus_bin" --version >/dev/null 2>&1
}

mkdir -p "$bin_dir"
exec 9>"$cache/prometheus/.build.lock"
if ! flock -n 9; then
    echo "==> another download of the test Prometheus is running; waiting for it"
    flock 9
fi

if binary_works; then
    echo "==> test Prometheus up to date: $prometheus_bin"
    exit 0
fi

for tool in apt-get apt-cache dpkg-deb flock; do
    command -v "$tool" >/dev/null || {
        echo "error: $tool not found (this script needs a Debian-like machine)" >&2
        exit 1
    }
done

version=${LLM_ROLLOUT_PROMETHEUS_VERSION:-$(apt-cache policy "$pkg" 2>/dev/null | awk '/Candidate:/ { print $2 }')}
if [[ -z $version || $version == "(none)" ]]; then
    echo "error: apt knows no '$pkg' package here; run 'sudo apt-get update' (Debian 12 ships 2.42)" >&2
    exit 1
fi

start=$SECONDS
scratch=$(mktemp -d "${TMPDIR:-/tmp}/llm-rollout-prometheus.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
trap 'exit 130' INT TERM

echo "==> downloading $pkg $version (apt-get download; nothing is installed)"
# apt's sandbox user cannot write a private scratch directory; download as the caller.
(cd "$scratch" && apt-get download -q -o APT::Sandbox::User="$(id -un)" "$pkg=$version" >"$scratch/download.log" 2>&1) || {
    tail -n 20 "$scratch/download.log" >&2
    exit 1
}
dpkg-deb -x "$scratch"/"$pkg"_*.deb "$scratch/root"
"$scratch/root/usr/bin/prometheus" --version 2>&1 | head -n1
install -m 0755 "$scratch/root/usr/bin/prometheus" "$prometheus_bin.new"
mv -f "$prometheus_bin.new" "$prometheus_bin"
echo "$pkg $version ($(. /etc/os-release && echo "$PRETTY_NAME"))" >"$cache/prometheus/VERSION"
echo "==> test Prometheus ready in $((SECONDS - start)) s: $prometheus_bin"
