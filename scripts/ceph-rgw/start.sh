#!/usr/bin/env bash
# (The team's tested recipe from shared/s3/ceph-rgw, kept here so a clean checkout has it.)
# Start a throw-away single-node Ceph cluster (1 mon, 1 OSD, 1 radosgw) on 127.0.0.1.
# Needs Debian bookworm packages:  apt-get install -y --no-install-recommends radosgw ceph-mon ceph-osd
# No mgr, no cephx, one replica. Every daemon runs in the foreground under this script's
# control; their PIDs go to $CEPH_DIR/pids, and stop.sh kills exactly those PIDs.
#
# Env (all optional):
#   CEPH_DIR     state dir (default /tmp/clary-ceph); wiped at start
#   RGW_PORT     S3 port (default 7480)
#   MON_PORT     mon v1 port (default 16789); the v2 port is MON_PORT+1
#   OSD_PORTS    port range for the OSD, "min-max" (default 16800-16899)
#   OSD_STORE    memstore (default; data in RAM, gone at stop) or bluestore (sparse file on disk)
#   S3_ACCESS_KEY / S3_SECRET_KEY  (default clary / clarysecret)
set -euo pipefail
export CEPH_DIR=${CEPH_DIR:-/tmp/clary-ceph}
RGW_PORT=${RGW_PORT:-7480}
MON_PORT=${MON_PORT:-16789}
MON2_PORT=$((MON_PORT + 1))
OSD_PORTS=${OSD_PORTS:-16800-16899}
OSD_STORE=${OSD_STORE:-memstore}
S3_ACCESS_KEY=${S3_ACCESS_KEY:-clary}
S3_SECRET_KEY=${S3_SECRET_KEY:-clarysecret}
CONF=$CEPH_DIR/ceph.conf

if [ -f "$CEPH_DIR/pids" ]; then
  "$(dirname "$0")/stop.sh" || true
fi
rm -rf "$CEPH_DIR"
mkdir -p "$CEPH_DIR"/{run,log,mon.a,osd.0,rgw}
FSID=$(cat /proc/sys/kernel/random/uuid)

cat > "$CONF" <<CONF
[global]
fsid = $FSID
mon_host = [v2:127.0.0.1:$MON2_PORT,v1:127.0.0.1:$MON_PORT]
public_addr = 127.0.0.1
cluster_addr = 127.0.0.1
ms_bind_ipv4 = true
ms_bind_ipv6 = false
ms_bind_port_min = ${OSD_PORTS%-*}
ms_bind_port_max = ${OSD_PORTS#*-}
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
run_dir = $CEPH_DIR/run
admin_socket = $CEPH_DIR/run/\$name.asok
log_file = $CEPH_DIR/log/\$name.log
pid_file = $CEPH_DIR/run/\$name.pid
keyring = $CEPH_DIR/keyring
crash_dir = $CEPH_DIR/crash
log_to_stderr = false
err_to_stderr = true
osd_pool_default_size = 1
osd_pool_default_min_size = 1
mon_allow_pool_size_one = true
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
mon_max_pg_per_osd = 1000
osd_crush_chooseleaf_type = 0
mon_warn_on_pool_no_redundancy = false
mon_allow_pool_delete = true
mon_data_avail_warn = 1
mon_data_avail_crit = 1
[mon]
mon_data = $CEPH_DIR/mon.\$id
[osd]
osd_data = $CEPH_DIR/osd.\$id
osd_objectstore = $OSD_STORE
memstore_device_bytes = 8589934592
bluestore_block_create = true
bluestore_block_size = 10737418240
bluestore_block_path = $CEPH_DIR/osd.\$id.block
osd_memory_target = 939524096
bluestore_cache_autotune = true
osd_op_num_shards = 2
osd_op_num_threads_per_shard = 1
[client.rgw.a]
rgw_frontends = beast endpoint=127.0.0.1:$RGW_PORT
rgw_data = $CEPH_DIR/rgw
rgw_thread_pool_size = 32
# Level 1 writes one access line per request (method, path with query, status): the tests
# read it to see who reached the store.
debug_rgw = 1
# radosgw defaults to ms_mon_client_mode=secure + auth_client_required=cephx;
# with cephx off that makes it fail with "get_initial_auth_request returned -13"
ms_mon_client_mode = crc
auth_client_required = none
CONF

: > "$CEPH_DIR/pids"
# on any failure, stop what was started so far (by PID) and leave the logs
trap 'echo "[ceph-rgw] start failed; logs in $CEPH_DIR/log" >&2; "$(dirname "$0")/stop.sh"' ERR
log() { echo "[ceph-rgw $(date +%T)] $*" >&2; }

# --- monitor ---------------------------------------------------------------
monmaptool --create --fsid "$FSID" --addv a "[v2:127.0.0.1:$MON2_PORT,v1:127.0.0.1:$MON_PORT]" "$CEPH_DIR/monmap" >/dev/null
ceph-authtool --create-keyring "$CEPH_DIR/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
ceph-mon -c "$CONF" --mkfs -i a --monmap "$CEPH_DIR/monmap" --keyring "$CEPH_DIR/keyring"
ceph-mon -c "$CONF" -i a -f >"$CEPH_DIR/log/mon.a.out" 2>&1 &
echo "$! mon.a" >> "$CEPH_DIR/pids"
for i in $(seq 1 60); do
  ceph -c "$CONF" --connect-timeout 2 mon stat >/dev/null 2>&1 && break
  sleep 0.5
done
ceph -c "$CONF" --connect-timeout 5 mon stat >/dev/null
log "mon up"

# --- one OSD ---------------------------------------------------------------
OSD_UUID=$(cat /proc/sys/kernel/random/uuid)
OSD_ID=$(ceph -c "$CONF" osd new "$OSD_UUID")
ceph-osd -c "$CONF" -i "$OSD_ID" --mkfs --osd-uuid "$OSD_UUID" >"$CEPH_DIR/log/osd.mkfs.out" 2>&1
ceph-osd -c "$CONF" -i "$OSD_ID" -f >"$CEPH_DIR/log/osd.$OSD_ID.out" 2>&1 &
echo "$! osd.$OSD_ID" >> "$CEPH_DIR/pids"
for i in $(seq 1 120); do
  ceph -c "$CONF" osd dump 2>/dev/null | grep -q "^osd.$OSD_ID up" && break
  sleep 0.5
done
ceph -c "$CONF" osd dump | grep -q "^osd.$OSD_ID up" || { log "osd did not come up"; false; }
log "osd.$OSD_ID up"

# --- radosgw ---------------------------------------------------------------
radosgw -c "$CONF" -n client.rgw.a -f >"$CEPH_DIR/log/rgw.a.out" 2>&1 &
RGW_PID=$!
echo "$RGW_PID rgw.a" >> "$CEPH_DIR/pids"
rgw_ready() { kill -0 "$RGW_PID" 2>/dev/null &&
  curl -s "http://127.0.0.1:$RGW_PORT/" | grep -q ListAllMyBucketsResult; }
for i in $(seq 1 120); do rgw_ready && break; kill -0 "$RGW_PID" 2>/dev/null || break; sleep 0.5; done
rgw_ready || { log "radosgw did not answer (port $RGW_PORT taken?)"; false; }
radosgw-admin -c "$CONF" user create --uid=clary --display-name=clary \
  --access-key="$S3_ACCESS_KEY" --secret-key="$S3_SECRET_KEY" >/dev/null
log "radosgw up on http://127.0.0.1:$RGW_PORT (access key $S3_ACCESS_KEY)"
