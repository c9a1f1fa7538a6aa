#!/usr/bin/env bash
# The container image without a Docker engine: the release binary, the Debian 12 libraries it
# links, a CA bundle and the recordings, as one layer built with umoci, configured as the
# Dockerfile declares, exported as an OCI archive and a docker-archive, with a CycloneDX SBOM of
# the binary's crates beside it. Timestamps come from SOURCE_DATE_EPOCH (default: the commit
# time), so two builds of the same binary give the same digest.
#
#   scripts/image.sh tools                 install umoci, skopeo, runc and cargo-cyclonedx (pinned)
#   scripts/image.sh build [OUT_DIR]       build from target/release/kfp-event-bridge
#   scripts/image.sh reproduce [OUT_DIR]   build again (in OUT_DIR/again) and compare with OUT_DIR's
#
# OUT_DIR defaults to .state/image. It then holds oci/ (an OCI layout, tag = crate version),
# kfp-event-bridge.oci.tar, kfp-event-bridge.docker.tar (tagged kfp-event-bridge:VERSION),
# kfp-event-bridge.cdx.json (the SBOM) and digest (the manifest digest). Needs root (the layer's
# files are owned by root and 65532) and an already built release binary.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

# Debian 12 packages, as the apt sources (a dated snapshot) have them.
umoci_deb=0.4.7+ds-3+b7
skopeo_deb=1.9.3+ds1-1+b10
runc_deb=1.1.5+ds1-1+deb12u1
cyclonedx_version=0.5.9

die() { echo "image.sh: $*" >&2; exit 1; }

tools() {
  local missing=""
  dpkg-query -W -f '${Version}' umoci 2>/dev/null | grep -qx "$umoci_deb" || missing="$missing umoci=$umoci_deb"
  dpkg-query -W -f '${Version}' skopeo 2>/dev/null | grep -qx "$skopeo_deb" || missing="$missing skopeo=$skopeo_deb"
  dpkg-query -W -f '${Version}' runc 2>/dev/null | grep -qx "$runc_deb" || missing="$missing runc=$runc_deb"
  if [ -n "$missing" ]; then
    # Installing must not start anything: policy-rc.d keeps package scripts from starting services.
    [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; }
    apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing >/dev/null
  fi
  cargo cyclonedx --version 2>/dev/null | grep -qx "cargo-cyclonedx $cyclonedx_version" ||
    cargo install cargo-cyclonedx --version "$cyclonedx_version" --locked --quiet
}

# Copies a host file into the root file system at the same path, with its mode; a symbolic link
# is copied as a link and its target follows.
copy_in() {
  local path=$1 rootfs=$2
  [ -e "$rootfs$path" ] || [ -L "$rootfs$path" ] && return 0
  mkdir -p "$rootfs$(dirname "$path")"
  if [ -L "$path" ]; then
    cp -P "$path" "$rootfs$path"
    local target
    target=$(readlink "$path")
    case $target in
      /*) copy_in "$target" "$rootfs" ;;
      *) copy_in "$(dirname "$path")/$target" "$rootfs" ;;
    esac
  else
    cp --preserve=mode "$path" "$rootfs$path"
  fi
}

# The Debian package a library comes from (dpkg knows the paths as shipped, /lib not /usr/lib).
package_of() {
  local path=$1
  dpkg-query -S "$path" 2>/dev/null || dpkg-query -S "${path#/usr}" 2>/dev/null || dpkg-query -S "/usr$path"
}

# What distroless/cc-debian12:nonroot has and the binary uses: the libraries `ldd` lists and the
# loader, CA certificates, users root, nobody and nonroot (65532), /tmp and the home directories,
# each package's copyright file and dpkg status (image scanners read /var/lib/dpkg/status.d).
assemble() {
  local bin=$1 rootfs=$2
  install -d -m 0755 "$rootfs"/{etc/ssl/certs,usr/local/bin,usr/share/kfp-event-bridge,var/lib/dpkg/status.d}
  install -d -m 0700 "$rootfs/root"
  install -d -m 0700 -o 65532 -g 65532 "$rootfs/home/nonroot"
  install -d -m 1777 "$rootfs/tmp"
  install -m 0755 "$bin" "$rootfs/usr/local/bin/kfp-event-bridge"
  cp -r examples/recordings "$rootfs/usr/share/kfp-event-bridge/recordings"
  local packages="ca-certificates" lib
  for lib in $(ldd "$bin" | awk '$1 ~ /^\// { print $1 } $3 ~ /^\// { print $3 }'); do
    copy_in "$lib" "$rootfs"
    packages="$packages $(package_of "$(readlink -f "$lib")" | cut -d: -f1)"
  done
  local package
  for package in $(printf '%s\n' $packages | sort -u); do
    install -d -m 0755 "$rootfs/usr/share/doc/$package"
    cp "/usr/share/doc/$package/copyright" "$rootfs/usr/share/doc/$package/copyright"
    dpkg-query -s "$package" | grep -vE '^(Status|Conffiles):' >"$rootfs/var/lib/dpkg/status.d/$package"
  done
  cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
  printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' 'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' \
    'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' >"$rootfs/etc/passwd"
  printf '%s\n' 'root:x:0:' 'nobody:x:65534:' 'nonroot:x:65532:' >"$rootfs/etc/group"
  printf '%s\n' 'passwd: files' 'group: files' 'hosts: files dns' >"$rootfs/etc/nsswitch.conf"
  # The libraries are Debian 12's: scanners match the dpkg entries against that release.
  grep -E '^(ID|VERSION_ID|VERSION_CODENAME)=' /etc/os-release >"$rootfs/etc/os-release"
  echo 'PRETTY_NAME="kfp-event-bridge on Debian 12 libraries"' >>"$rootfs/etc/os-release"
  chmod 0644 "$rootfs"/etc/{passwd,group,nsswitch.conf,os-release,ssl/certs/ca-certificates.crt}
}

build() {
  local out=${1:-$root/.state/image}
  local bin=$root/target/release/kfp-event-bridge
  [ -x "$bin" ] || die "$bin missing: run cargo build --release --locked first"
  [ "$(id -u)" = 0 ] || die "run as root (the layer's files are owned by root and 65532)"
  tools
  local t0
  t0=$(date +%s%N)
  local version source licenses revision epoch created tag
  # The package's fields, or the workspace's where the package inherits them or has none.
  IFS=$'\t' read -r version source licenses < <(python3 -c '
import tomllib
with open("Cargo.toml", "rb") as f:
    cargo = tomllib.load(f)
def field(name):
    value = cargo["package"].get(name)
    return value if isinstance(value, str) else cargo["workspace"]["package"][name]
print(field("version"), field("repository"), field("license"), sep="\t")')
  revision=$(git rev-parse HEAD)
  epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}
  created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)
  tag=$version

  mkdir -p "$out"
  out=$(cd "$out" && pwd)
  local layout=$out/oci bundle=$out/bundle
  rm -rf "$layout" "$bundle" "$out"/kfp-event-bridge.{oci.tar,docker.tar,cdx.json} "$out/digest"

  local history=(--history.created "$created" --history.author "scripts/image.sh")
  umoci init --layout "$layout"
  umoci new --image "$layout:$tag"
  # unpack + repack rather than `umoci insert`: 0.4.7's insert leaves the layer's tar without
  # its end-of-archive blocks (fixed upstream after 0.4.7), which GNU tar and scanners reject.
  umoci unpack --image "$layout:$tag" "$bundle" >/dev/null
  (umask 022 && assemble "$bin" "$bundle/rootfs")
  chmod 0755 "$bundle/rootfs"
  find "$bundle/rootfs" -exec touch -h -d "@$epoch" {} +
  umoci repack --image "$layout:$tag" "${history[@]}" \
    --history.created_by "binary, libraries, CA bundle, users and recordings" "$bundle"
  # As the Dockerfile declares (tests/live/image.rs compares the two), with what the Dockerfile
  # inherits from distroless/cc-debian12:nonroot: PATH, SSL_CERT_FILE and the working directory.
  umoci config --image "$layout:$tag" "${history[@]}" --history.created_by "scripts/image.sh config" \
    --created "$created" --author "scripts/image.sh" --architecture amd64 --os linux \
    --config.user 65532:65532 \
    --config.entrypoint /usr/local/bin/kfp-event-bridge \
    --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --config.env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    --config.env KFP_BRIDGE_ADMIN_ADDR=0.0.0.0:8080 \
    --config.exposedports 8080/tcp \
    --config.workingdir /home/nonroot \
    --config.label "org.opencontainers.image.source=$source" \
    --config.label "org.opencontainers.image.version=$version" \
    --config.label "org.opencontainers.image.revision=$revision" \
    --config.label "org.opencontainers.image.licenses=$licenses"
  umoci gc --layout "$layout"
  rm -rf "$bundle"

  # An OCI archive is the layout as a tar; skopeo's stamps its entries with the current time.
  tar --create --file "$out/kfp-event-bridge.oci.tar" --directory "$layout" --format gnu --sort name \
    --mtime "@$epoch" --owner 0 --group 0 --numeric-owner oci-layout index.json blobs
  skopeo copy --quiet "oci:$layout:$tag" "docker-archive:$out/kfp-event-bridge.docker.tar:kfp-event-bridge:$tag"
  sbom "$out/kfp-event-bridge.cdx.json" "$epoch"

  local digest
  digest=$(skopeo inspect --format '{{.Digest}}' "oci:$layout:$tag")
  echo "$digest" >"$out/digest"
  local seconds
  seconds=$((($(date +%s%N) - t0) / 1000000))
  echo "image: oci:$layout:$tag"
  echo "digest: $digest"
  echo "layer: $(layer_size "$layout" "$tag") KiB gzip, $(unpacked_size "$layout" "$tag") KiB unpacked"
  echo "archives: $(du -k --apparent-size "$out/kfp-event-bridge.oci.tar" | cut -f1) KiB (OCI), $(du -k --apparent-size "$out/kfp-event-bridge.docker.tar" | cut -f1) KiB (docker-archive)"
  echo "build time: $((seconds / 1000)).$(printf '%03d' $((seconds % 1000))) s"
  echo "export KFP_TEST_IMAGE=$layout:$tag"
}

# The image's one layer: its digest (hex), its compressed size and its size unpacked, in KiB.
layer_blob() {
  skopeo inspect --raw "oci:$1:$2" | python3 -c 'import json, sys; print(json.load(sys.stdin)["layers"][0]["digest"].split(":")[1])'
}
layer_size() {
  du -k --apparent-size "$1/blobs/sha256/$(layer_blob "$1" "$2")" | cut -f1
}
unpacked_size() {
  gzip -dc "$1/blobs/sha256/$(layer_blob "$1" "$2")" | wc -c | awk '{ print int($1 / 1024) }'
}

# The CycloneDX SBOM of the crates in the binary (default features, normal dependencies; cargo
# metadata unifies features over the workspace, so a few crates only the tests use may appear).
# cargo-cyclonedx writes beside Cargo.toml: it runs on a copy of the sources.
sbom() {
  local dest=$1 epoch=$2 copy
  copy=$(mktemp -d)
  git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -xf - -C "$copy"
  (cd "$copy" && SOURCE_DATE_EPOCH=$epoch cargo cyclonedx --manifest-path Cargo.toml --format json \
    --describe binaries --spec-version 1.5 --no-build-deps --quiet)
  # Local crates are named by path: the copy's, which differs per build, becomes the Dockerfile's /src.
  python3 -c 'import sys; sys.stdout.write(sys.stdin.read().replace("file://" + sys.argv[1], "file:///src"))' \
    "$copy" <"$copy/kfp-event-bridge_bin.cdx.json" >"$dest"
  rm -rf "$copy"
}

# Builds again in OUT_DIR/again and compares with the build in OUT_DIR.
reproduce() {
  local out=${1:-$root/.state/image}
  [ -s "$out/digest" ] || die "no build in $out: scripts/image.sh build $out first"
  build "$out/again" >/dev/null
  local file
  for file in digest kfp-event-bridge.oci.tar kfp-event-bridge.docker.tar kfp-event-bridge.cdx.json; do
    cmp -s "$out/$file" "$out/again/$file" || die "built again, $file differs"
  done
  echo "built again: the same digest $(cat "$out/digest"), the same archives and SBOM"
  rm -rf "$out/again"
}

case ${1:-} in
  tools) tools ;;
  build) build "${2:-}" ;;
  reproduce) reproduce "${2:-}" ;;
  *) echo "usage: scripts/image.sh tools | build [OUT_DIR] | reproduce [OUT_DIR]" >&2; exit 2 ;;
esac
