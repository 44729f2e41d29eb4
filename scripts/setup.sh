#!/bin/sh
# Idempotent installer: everything a fresh Debian 12 machine lacks for Lockstep, its lab and its tests.
# Called by `npm run demo`, `npm test` and `.ci/run`; cheap when nothing is missing.
set -eu
cd "$(dirname "$0")/.."

# Debian packages the product and its tests need, and why:
#   qemu-system-x86, qemu-utils  the data plane: VMs, qcow2 images, NBD
#   iproute2, nftables           the lab's namespaces, veths, bridges and faults
#   busybox-static, cpio         the lab guest's initramfs
#   gcc, libc6-dev               static build of the guest's record service and the lab's A-Link wire
#   e2fsprogs, xfsprogs          each lab host's disk is an ext4 image; xfs_io shuts it down for `fail disk`
#   iputils-ping, kmod           reachability checks in tests; modinfo for the guest image builder
#   ca-certificates              apt-get download of the guest kernel over https mirrors
#   openssl                      the pair CA and host certificates (A-Link, quorum servers: mutual TLS)
#   g++, make, python3           node-gyp builds better-sqlite3 (lockstepd's durable state) from source
#   snmptrapd                    a real SNMP trap receiver for the notification tests (test/notify/snmp.test.ts)
#   curl                         the lab's management API from the client (README, docs/lab.md, lab-cli e2e test)
#   chromium                     the browser playwright-core drives in the console's tests (test/console/, test/lab/console.e2e.test.ts)
#   genisoimage                  real ISO 9660 images for the virtual CD tests (test/support/iso.ts)
packages="qemu-system-x86 qemu-utils iproute2 nftables busybox-static cpio gcc libc6-dev e2fsprogs xfsprogs iputils-ping kmod ca-certificates openssl g++ make python3 snmptrapd chromium curl genisoimage"

missing=""
for p in $packages; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "lockstep setup: missing Debian packages:$missing" >&2
    echo "lockstep setup: run as root, or: sudo apt-get install -y$missing" >&2
    exit 1
  fi
  echo "lockstep setup: installing Debian packages:$missing"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# npm dependencies: install when node_modules is missing or older than the lock file.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "lockstep setup: installing npm dependencies"
  npm ci --no-audit --no-fund --loglevel=error
fi

# Build the TypeScript (incremental: fast when nothing changed).
npx --no-install tsc -p .
