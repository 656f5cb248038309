#!/usr/bin/env bash
# Build the image from this checkout's Dockerfile and run the container tests against it: what CI does,
# on a machine with no Docker engine and no container registry, only Debian's package mirror and a
# Python package index. Run it as root from the repository root, after `make venv` (or `make test`):
#
#   deploy/image-ci.sh
#
# 1. Debian's buildah, podman, runc and mmdebstrap (installed when missing).
# 2. A base equivalent to python:3.11-slim-bookworm, made from Debian packages with mmdebstrap (from the
#    Debian mirror this machine's apt already uses, never one named here) and trusting what this machine
#    trusts (its CA bundle: a TLS-inspecting proxy in front of the package index works). It is the
#    Dockerfile's one seam, PYTHON_IMAGE; in production the base comes from a registry, pinned by digest
#    (deploy/README.md).
# 3. `buildah bud` of the Dockerfile as it is (--format docker: the OCI format drops HEALTHCHECK).
# 4. The lock: `make lock` on the committed versions must write the committed lock again.
# 5. `pytest tests/container` with BACKFILL_CONTAINER_TESTS=required: a container test that skips fails.
#
# Everything lives in one directory (BACKFILL_CONTAINERS_DIR, else a new temporary one): the storage of
# images and containers, and the base's root file system. A directory given by the caller is kept, so
# the base is built once per CI run however often this runs; one made here is removed at the end, with
# every container and image in it.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_IMAGE=localhost/python-bookworm:3.11
IMAGE=${BACKFILL_IMAGE:-localhost/pmoves-jellyfin-backfill:ci}
PYTHON=${PYTHON:-.venv/bin/python}

say() { printf '== image-ci: %s\n' "$*" >&2; }
fail() { printf 'image-ci: %s\n' "$*" >&2; exit 2; }

[ "$(id -u)" -eq 0 ] || fail "needs root (buildah and podman without a daemon, chroot isolation)"
[ -x "$PYTHON" ] || fail "no $PYTHON: run \`make venv\` first"

tools=()
for tool in buildah podman runc mmdebstrap; do command -v "$tool" >/dev/null 2>&1 || tools+=("$tool"); done
if [ "${#tools[@]}" -gt 0 ]; then
    command -v apt-get >/dev/null 2>&1 || fail "missing ${tools[*]} and no apt-get to install them"
    say "installing ${tools[*]} from Debian"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${tools[@]}" >/dev/null
fi

if [ -n "${BACKFILL_CONTAINERS_DIR:-}" ]; then
    work=$BACKFILL_CONTAINERS_DIR
    mkdir -p "$work"
    keep=1
else
    work=$(mktemp -d /tmp/backfill-containers.XXXXXX)
    keep=0
fi
work=$(cd "$work" && pwd)

# One storage for buildah and podman (else podman looks for the image in a registry); runc (crun refuses
# a hybrid cgroup layout), cgroupfs and a file event log (no systemd); ulimits a sandbox can grant.
cat >"$work/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$work/storage"
runroot = "$work/run"
EOF
cat >"$work/containers.conf" <<'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
export CONTAINERS_STORAGE_CONF="$work/storage.conf" CONTAINERS_CONF="$work/containers.conf"

cleanup() {
    status=$?
    podman rm --all --force --time 0 >/dev/null 2>&1 || true
    buildah rm --all >/dev/null 2>&1 || true
    if [ "$keep" -eq 0 ]; then
        podman system reset --force >/dev/null 2>&1 || true
        rm -rf "$work" 2>/dev/null || { umount -R "$work"/storage/overlay 2>/dev/null || true; rm -rf "$work"; }
    fi
    exit "$status"
}
trap cleanup EXIT

if podman image exists "$BASE_IMAGE"; then
    say "base $BASE_IMAGE already built in $work"
else
    # The Debian archive this machine's apt uses: the repository of its main suite (no -updates, -security).
    mirror=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 'Identifier: Packages' 2>/dev/null |
        awk '$2 !~ /-/ { print $1; exit }')
    [ -n "$mirror" ] || fail "no Debian mirror in this machine's apt sources"
    say "base $BASE_IMAGE from Debian bookworm (this machine's mirror)"
    started=$SECONDS
    mmdebstrap --quiet --variant=apt --include=python3,python3-venv,python3-pip,ca-certificates \
        --customize-hook='ln -sf python3 "$1/usr/bin/python"' \
        --customize-hook='cat /etc/ssl/certs/ca-certificates.crt > "$1/etc/ssl/certs/ca-certificates.crt"' \
        bookworm "$work/rootfs.tar" "$mirror"
    podman import --quiet \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' \
        "$work/rootfs.tar" "$BASE_IMAGE" >/dev/null
    rm -f "$work/rootfs.tar"
    say "base built in $((SECONDS - started)) s"
fi

say "building $IMAGE from ./Dockerfile"
started=$SECONDS
buildah bud --quiet --format docker --pull=never --isolation chroot --network host --layers \
    --build-arg PYTHON_IMAGE="$BASE_IMAGE" --tag "$IMAGE" . >/dev/null
say "image built in $((SECONDS - started)) s: $(podman image inspect --format '{{.Size}}' "$IMAGE") bytes"

say "the committed lock is what \`make lock\` writes for its versions"
"$PYTHON" requirements/lock.py --from-pins --out "$work/runtime.lock"
cmp requirements/runtime.lock "$work/runtime.lock" || fail "requirements/runtime.lock differs from \`make lock\`"

say "container tests"
BACKFILL_IMAGE="$IMAGE" BACKFILL_BASE_IMAGE="$BASE_IMAGE" BACKFILL_CONTAINER_TESTS=required \
    PATH="$PWD/.venv/bin:$PATH" "$PYTHON" -m pytest -p no:cacheprovider -m container tests/container "$@"
