#!/usr/bin/env bash
# The multi-host test fleet: podman containers running systemd, one per inventory host of
# inventories/fleet, on a dedicated podman network with the static addresses the inventory
# names. Ansible reaches them with the containers.podman.podman connection (no SSH).
#
#   tests/fleet/fleet.sh image          build the base image if its package list changed
#   tests/fleet/fleet.sh up [HOST...]   start the base fleet (lb1 api1 worker1 data1 mon1 s3), or HOSTs
#   tests/fleet/fleet.sh down [HOST...] remove the fleet's containers (all, or HOSTs); keeps the image
#   tests/fleet/fleet.sh status         list the fleet's containers
#   tests/fleet/fleet.sh tag            print the image reference for the current package list
#
# No image registry is needed: the image is a debootstrap of Debian 12 with systemd and the
# Debian packages the roles install (so a deploy does not spend minutes in apt; the roles still
# install them on a bare host). It is tagged with a hash of its package list and rebuilt only
# when that list (or this script's image recipe) changes.
set -euo pipefail
cd "$(dirname "$0")/../.."

IMAGE_REPO=localhost/ffmpeg-api-fleet
NETWORK=${FLEET_NETWORK:-ffmpeg-api-fleet}
SUBNET=${FLEET_SUBNET:-10.89.77.0/24}
MIRROR=${FLEET_MIRROR:-http://deb.debian.org/debian}
LABEL=ffmpeg-api-fleet=1

# Host -> address; the same addresses are ffmpeg_api_listen_address in inventories/fleet.
declare -A ADDRESS=(
    [lb1]=10.89.77.10
    [api1]=10.89.77.21
    [api2]=10.89.77.22
    [worker1]=10.89.77.31
    [worker2]=10.89.77.32
    [data1]=10.89.77.40
    [mon1]=10.89.77.50
    [s3]=10.89.77.60
)
BASE_HOSTS=(lb1 api1 worker1 data1 mon1 s3)
# No host shares a file system with another: media lives in object storage, an S3 API served
# by the s3 host (a moto server standing in for AWS S3 or MinIO; not an inventory host, as a
# bucket is provisioned outside the service's deployment). Its bucket is created here.
S3_PORT=9000
S3_BUCKET=ffmpeg-api-fleet
# moto and what its server needs, as wheels built on the controller (containers reach Debian's
# packages, not PyPI), pinned to the controller's moto.
MOTO_WHEELS=var/fleet-wheels/moto

# What debootstrap puts in the root file system, then what apt adds on top (the roles' packages).
BOOTSTRAP_PACKAGES=(python3 python3-apt systemd systemd-sysv dbus iproute2 procps ca-certificates)
PACKAGES=(
    postgresql postgresql-contrib python3-psycopg2
    redis-server redis-tools
    haproxy socat
    prometheus prometheus-alertmanager prometheus-node-exporter
    prometheus-redis-exporter prometheus-postgres-exporter
    ffmpeg python3-venv curl
)

# The packages enable their services; a host runs only what its roles start.
SERVICES=(
    postgresql redis-server haproxy prometheus prometheus-alertmanager prometheus-node-exporter
    prometheus-redis-exporter prometheus-postgres-exporter
)

image_tag() {
    printf '%s\n' "bookworm" "${BOOTSTRAP_PACKAGES[@]}" -- "${PACKAGES[@]}" -- "${SERVICES[@]}" "recipe=3" \
        | sha256sum | cut -c1-12
}

image_ref() { echo "$IMAGE_REPO:bookworm-$(image_tag)"; }

cmd_image() {
    local ref rootfs
    ref=$(image_ref)
    if podman image exists "$ref"; then
        podman tag "$ref" "$IMAGE_REPO:bookworm"
        echo "$ref"
        return
    fi
    echo "==> building $ref" >&2
    rootfs=$(mktemp -d /var/tmp/ffmpeg-api-fleet-rootfs.XXXXXX)
    trap 'rm -rf "$rootfs"' RETURN
    local include
    include=$(IFS=,; echo "${BOOTSTRAP_PACKAGES[*]}")
    debootstrap --variant=minbase --include="$include" bookworm "$rootfs" "$MIRROR" >&2
    # Containers have no udev or getty; keep systemd from waiting for them.
    chroot "$rootfs" systemctl mask systemd-udevd.service systemd-udevd-kernel.socket \
        systemd-udevd-control.socket getty@tty1.service console-getty.service \
        systemd-logind.service sys-kernel-config.mount >/dev/null 2>&1 || true
    tar -C "$rootfs" -c . | podman import - "$IMAGE_REPO:base-$(image_tag)" >&2
    local build
    build=$(mktemp -d)
    cat >"$build/Containerfile" <<EOF
FROM $IMAGE_REPO:base-$(image_tag)
ENV DEBIAN_FRONTEND=noninteractive
RUN printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d \\
 && apt-get update -qq \\
 && apt-get install -y -qq --no-install-recommends ${PACKAGES[*]} \\
 && rm -f /usr/sbin/policy-rc.d \\
 && systemctl disable ${SERVICES[*]} \\
 && apt-get clean
STOPSIGNAL SIGRTMIN+3
CMD ["/sbin/init"]
EOF
    podman build --network host -t "$ref" "$build" >&2
    rm -rf "$build"
    podman rmi "$IMAGE_REPO:base-$(image_tag)" >/dev/null 2>&1 || true
    podman tag "$ref" "$IMAGE_REPO:bookworm"
    echo "$ref"
}

ensure_network() {
    podman network exists "$NETWORK" \
        || podman network create --subnet "$SUBNET" --label "$LABEL" "$NETWORK" >/dev/null
}

cmd_up() {
    local hosts=("$@") ref h
    ((${#hosts[@]})) || hosts=("${BASE_HOSTS[@]}")
    ref=$(cmd_image)
    ensure_network
    for h in "${hosts[@]}"; do
        [[ -n "${ADDRESS[$h]:-}" ]] || { echo "unknown fleet host: $h" >&2; exit 2; }
        if podman container exists "fleet-$h"; then
            podman start "fleet-$h" >/dev/null
            continue
        fi
        podman run -d --name "fleet-$h" --hostname "$h" --label "$LABEL" \
            --network "$NETWORK" --ip "${ADDRESS[$h]}" \
            --systemd=always --cap-add SYS_ADMIN,NET_ADMIN,SYS_PTRACE,SYS_RESOURCE \
            --tmpfs /tmp --tmpfs /run --tmpfs /run/lock \
            "$ref" /sbin/init >/dev/null
    done
    # Wait until systemd in every container has finished booting.
    for h in "${hosts[@]}"; do
        for _ in $(seq 60); do
            state=$(podman exec "fleet-$h" systemctl is-system-running 2>/dev/null || true)
            [[ $state == running || $state == degraded ]] && break
            sleep 1
        done
        echo "fleet-$h ${ADDRESS[$h]} ${state:-unknown}"
    done
    for h in "${hosts[@]}"; do
        [[ $h == s3 ]] && setup_s3
    done
    return 0
}

moto_wheels() {
    local version
    version=$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("moto"))')
    if [[ ! -e $MOTO_WHEELS/.moto-$version ]]; then
        rm -rf "$MOTO_WHEELS"
        mkdir -p "$MOTO_WHEELS"
        .venv/bin/pip wheel -q --disable-pip-version-check -w "$MOTO_WHEELS" \
            "moto==$version" flask flask-cors >&2
        touch "$MOTO_WHEELS/.moto-$version"
    fi
}

# The S3 server: moto in a venv of its own, under systemd, and the fleet's bucket.
setup_s3() {
    local c=fleet-s3
    if ! podman exec "$c" test -x /opt/moto/bin/moto_server; then
        moto_wheels
        podman exec "$c" rm -rf /tmp/moto-wheels
        podman cp "$MOTO_WHEELS" "$c:/tmp/moto-wheels"
        podman exec "$c" python3 -m venv /opt/moto
        podman exec "$c" /opt/moto/bin/pip install -q --no-index --disable-pip-version-check \
            -f /tmp/moto-wheels moto flask flask-cors
        podman exec -i "$c" sh -c 'cat >/etc/systemd/system/moto-s3.service' <<EOF
[Unit]
Description=S3 API (moto server) for the test fleet
After=network-online.target

[Service]
ExecStart=/opt/moto/bin/moto_server -H 0.0.0.0 -p $S3_PORT
Restart=always

[Install]
WantedBy=multi-user.target
EOF
        podman exec "$c" systemctl daemon-reload
        podman exec "$c" systemctl enable moto-s3.service >/dev/null 2>&1
    fi
    podman exec "$c" systemctl start moto-s3.service
    local up=
    for _ in $(seq 60); do
        podman exec "$c" curl -sf -o /dev/null "http://127.0.0.1:$S3_PORT/" && { up=1; break; }
        sleep 0.5
    done
    [[ -n $up ]] || { echo "the fleet's S3 server did not start" >&2; exit 1; }
    # moto does not check signatures: a plain PUT creates the bucket (200 when it exists).
    podman exec "$c" curl -sf -o /dev/null -X PUT "http://127.0.0.1:$S3_PORT/$S3_BUCKET"
    echo "fleet-s3 S3 API http://${ADDRESS[s3]}:$S3_PORT bucket $S3_BUCKET"
}

cmd_down() {
    local names=()
    if (($#)); then
        for h in "$@"; do names+=("fleet-$h"); done
    else
        mapfile -t names < <(podman ps -a --filter "label=$LABEL" --format '{{.Names}}')
    fi
    ((${#names[@]})) && podman rm -f -t 5 "${names[@]}" >/dev/null
    if ! (($#)); then
        podman network exists "$NETWORK" && podman network rm "$NETWORK" >/dev/null
    fi
    return 0
}

case "${1:-}" in
    image) cmd_image ;;
    up) shift; cmd_up "$@" ;;
    down) shift; cmd_down "$@" ;;
    status) podman ps -a --filter "label=$LABEL" --format '{{.Names}} {{.Status}}' ;;
    tag) image_ref ;;
    *) sed -n '2,13p' "$0" >&2; exit 2 ;;
esac
