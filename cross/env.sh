# Sourced, not run: the environment that cross-builds focusd's C dependencies for boards.
# `focusd_cross_env SYSROOTS_DIR TARGET...`: for each target whose sysroot exists
# (cross/sysroot.sh made SYSROOTS_DIR/ARCH), pkg-config looks in it, and the linker is told
# where its libraries' own dependencies are. Every cargo command of one target dir must
# see the same environment, or cargo rebuilds everything: cross/build.sh and tests/run.sh
# both use this.

# The Debian architecture and multiarch directory of a Rust target.
focusd_deb_arch() {
  case "$1" in
    aarch64-unknown-linux-gnu) echo "arm64 aarch64-linux-gnu" ;;
    armv7-unknown-linux-gnueabihf) echo "armhf arm-linux-gnueabihf" ;;
    x86_64-unknown-linux-gnu) echo "amd64 x86_64-linux-gnu" ;;
  esac
}

focusd_cross_env() {
  local root target arch multiarch sysroot var
  root=$(realpath -m "$1")
  shift
  for target in "$@"; do
    read -r arch multiarch <<<"$(focusd_deb_arch "$target")"
    sysroot="$root/$arch"
    [ -f "$sysroot/.focusd-sysroot" ] || continue
    var=${target//-/_}
    export PKG_CONFIG_ALLOW_CROSS=1
    export "PKG_CONFIG_SYSROOT_DIR_$var=$sysroot"
    export "PKG_CONFIG_LIBDIR_$var=$sysroot/usr/lib/$multiarch/pkgconfig:$sysroot/usr/share/pkgconfig"
    export "CARGO_TARGET_${var^^}_RUSTFLAGS=-C link-arg=-Wl,-rpath-link,$sysroot/usr/lib/$multiarch -C link-arg=-Wl,-rpath-link,$sysroot/lib/$multiarch"
  done
}
