#!/usr/bin/env bash
# The whole test suite, as the README promises: installs the real peers the interop tests
# talk to (uWSGI 2.0.21 with its python3 plugin, nginx), then runs fmt, clippy, every test
# (unit, property, vectors, fuzz regressions, interop, examples), doc tests, a per-crate
# build without optional features, rustdoc with warnings denied, the benches' build and
# `cargo package` for the publishable crates.
#
# Usage: scripts/test.sh        (as root on Debian, or with the peers already installed)
# Under CI=true a missing peer is an error, never a skip.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export PROPTEST_CASES="${PROPTEST_CASES:-256}"
# Seeded simulations: every sweep runs this many seeds (the legion sweep must cover 1000).
export SIM_SEEDS="${SIM_SEEDS:-1000}"
start=$(date +%s)
step() { printf '\n==> [%3ss] %s\n' "$(($(date +%s) - start))" "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# --- 1. peers -------------------------------------------------------------------------
APT_PACKAGES=(uwsgi-core uwsgi-plugin-python3 nginx-light iproute2)
peers_present() {
  command -v uwsgi >/dev/null 2>&1 &&
    { command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ]; } &&
    [ -e /usr/lib/uwsgi/plugins/python3_plugin.so ] &&
    { command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; }
}
step "peers: ${APT_PACKAGES[*]}"
if ! peers_present; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    # Debian's nginx postinst would start a service; nothing here wants one.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
      trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${APT_PACKAGES[@]}" >/dev/null
  else
    die "the interop tests need ${APT_PACKAGES[*]}; install them (apt-get install -y ${APT_PACKAGES[*]}) or run this script as root"
  fi
fi
peers_present || die "peers still missing after installing ${APT_PACKAGES[*]}"
uwsgi --version
/usr/sbin/nginx -v 2>&1 || nginx -v

# --- 2. static checks -------------------------------------------------------------------
step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy (all targets, all features, -D warnings)"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

# --- 3. tests -----------------------------------------------------------------------------
step "tests (all features)"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --all-features --locked --no-fail-fast
else
  cargo test --workspace --all-features --locked --no-fail-fast --lib --bins --tests
fi

step "doc tests"
cargo test --workspace --all-features --locked --doc

# --- 4. builds ----------------------------------------------------------------------------
step "each crate on its own, default features (the cores must not need mio)"
for manifest in crates/*/Cargo.toml; do
  cargo check --locked --manifest-path "$manifest" --quiet
done

step "rustdoc, warnings denied"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --all-features --locked --quiet

step "benches compile"
cargo bench --workspace --no-run --locked --quiet

step "cargo package (publishable crates, verified together so path dependencies resolve)"
packages=()
for manifest in crates/*/Cargo.toml; do
  if ! grep -q '^publish *= *false' "$manifest"; then
    packages+=(-p "$(sed -n 's/^name *= *"\(.*\)"/\1/p' "$manifest" | head -n1)")
  fi
done
cargo package --locked --quiet --allow-dirty "${packages[@]}"

step "all checks passed"
