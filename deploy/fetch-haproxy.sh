#!/bin/sh
# HAProxy from Debian for tests/test_balancer.py, without root: `apt-get download` of the
# package and the libraries it needs beyond a base system, unpacked into .cache/haproxy
# (dpkg-deb -x), run through a wrapper that sets LD_LIBRARY_PATH. A haproxy on PATH is used
# as is. Run by `make lb-deps` (and so by `make test`).
set -eu
out="${1:-.cache/haproxy}"
if command -v haproxy >/dev/null 2>&1; then
    mkdir -p "$out/bin"
    ln -sf "$(command -v haproxy)" "$out/bin/haproxy"
    exit 0
fi
if [ -x "$out/bin/haproxy" ] && "$out/bin/haproxy" -v >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "lb-deps: no apt-get and no haproxy on PATH: install HAProxy (>= 2.6) for the balancer test"
    exit 1
fi
mkdir -p "$out/debs" "$out/root" "$out/bin"
packages="haproxy liblua5.3-0 libopentracing-c-wrapper0 libopentracing1"
(cd "$out/debs" && apt-get download $packages >/dev/null 2>&1) || {
    # a fresh machine may have no package lists yet; only root can fetch them
    [ "$(id -u)" = 0 ] && apt-get update -q >/dev/null 2>&1
    (cd "$out/debs" && apt-get download $packages)
}
for deb in "$out"/debs/*.deb; do dpkg-deb -x "$deb" "$out/root"; done
root="$(cd "$out/root" && pwd -P)"  # physical: a .cache shared through a symlink outlives the link
libs="$(find "$root" -name '*.so*' -printf '%h\n' | sort -u | tr '\n' ':')"
cat > "$out/bin/haproxy" <<WRAP
#!/bin/sh
LD_LIBRARY_PATH="$libs\${LD_LIBRARY_PATH:-}" exec "$root/usr/sbin/haproxy" "\$@"
WRAP
chmod +x "$out/bin/haproxy"
"$out/bin/haproxy" -v | head -1
