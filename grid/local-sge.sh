#!/usr/bin/env bash
# A single-node Grid Engine on this Debian machine, for recseg's tests and for trying the grid
# scripts locally:  bash grid/local-sge.sh start|stop|status
#
# start   installs gridengine-{master,exec,client} with apt-get when missing (root), names this
#         host `localhost` for Grid Engine, starts sge_qmaster and sge_execd with a clean
#         environment, and creates the queue all.q (one slot per core, no load thresholds,
#         1 s scheduling, a 10 s notify time) with the parallel environment smp (`qsub -pe smp
#         N`: N slots on this host, for `recseg train --nproc N`). Idempotent: a running
#         cluster is reconfigured only.
# stop    shuts both daemons down (jobs still running are killed; the spool stays).
# status  says whether the daemons run and lists the queue and the jobs; exit 1 when down.
#
# Environment: SGE_ROOT (default /var/lib/gridengine), SGE_CELL (default), RECSEG_SGE_SLOTS
# (default: the number of cores), RECSEG_SGE_NOTIFY (default 00:00:10).
set -euo pipefail

export SGE_ROOT=${SGE_ROOT:-/var/lib/gridengine}
export SGE_CELL=${SGE_CELL:-default}
SLOTS=${RECSEG_SGE_SLOTS:-$(OMP_NUM_THREADS= OMP_THREAD_LIMIT= nproc)}  # the cores (nproc alone obeys OMP_NUM_THREADS)
NOTIFY=${RECSEG_SGE_NOTIFY:-00:00:10}
PACKAGES=(gridengine-master gridengine-exec gridengine-client)
COMMON=$SGE_ROOT/$SGE_CELL/common
CLEAN_ENV=(env -i "SGE_ROOT=$SGE_ROOT" "SGE_CELL=$SGE_CELL" PATH=/usr/sbin:/usr/bin:/sbin:/bin)

say() { echo "local-sge: $*"; }
die() { echo "local-sge: $1" >&2; exit "${2:-1}"; }

installed() {
  local p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || return 1
  done
}

install_packages() {
  installed && return 0
  [ "$(id -u)" = 0 ] || die "Grid Engine is not installed and this is not root: run as root, or: sudo apt-get install ${PACKAGES[*]}" 3
  command -v apt-get >/dev/null 2>&1 || die "Grid Engine is not installed and there is no apt-get (Debian only)" 3
  say "installing ${PACKAGES[*]} (apt-get)"
  printf '%s\n' \
    "gridengine-common shared/gridengineconfig boolean true" \
    "gridengine-common shared/gridenginecell string $SGE_CELL" \
    "gridengine-common shared/gridenginemaster string localhost" | debconf-set-selections
  apt-get update -qq || die "apt-get update failed" 3
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${PACKAGES[@]}" >/dev/null 2>&1 || die "apt-get install ${PACKAGES[*]} failed" 3
}

running() {  # a live process of that name (a zombie left by a stopped daemon does not count)
  ps -eo stat=,comm= | awk -v name="$1" '$2 == name && $1 !~ /^Z/ { found = 1 } END { exit !found }'
}

qmaster_up() { qconf -sh >/dev/null 2>&1; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local limit=$1 what=$2 i
  shift 2
  for ((i = 0; i < limit * 4; i++)); do
    "$@" && return 0
    sleep 0.25
  done
  die "$what did not come up within ${limit} s (see /var/spool/gridengine/qmaster/messages)"
}

local_cell() {
  # never touch a cell whose qmaster is another machine (a real cluster this host submits to)
  local master="" host
  host=$(hostname)
  [ -f "$COMMON/act_qmaster" ] && master=$(tr -d '[:space:]' <"$COMMON/act_qmaster")
  case "$master" in
    "" | localhost | "$host" | "$(hostname -f 2>/dev/null || echo "$host")") return 0 ;;
  esac
  die "the cell $SGE_ROOT/$SGE_CELL belongs to the cluster of $master; this script only manages a single-node Grid Engine (use another SGE_CELL)" 2
}

name_this_host() {
  # Grid Engine knows this machine as `localhost` whatever its hostname is (both resolve to
  # a loopback address here), so the queue, the admin and the submit host agree.
  [ -d "$COMMON" ] || die "$COMMON is missing: the gridengine-master package did not set up the cell"
  local host
  host=$(hostname)
  echo "localhost $host $(hostname -f 2>/dev/null || echo "$host")" >"$COMMON/host_aliases"
  echo localhost >"$COMMON/act_qmaster"
  chown sgeadmin: "$COMMON/host_aliases" "$COMMON/act_qmaster" 2>/dev/null || true
}

configure_cluster() {
  local dir
  dir=$(mktemp -d)
  # root may run jobs; accounting reaches qacct within a second; shells behave as in a terminal
  qconf -sconf global | sed -e 's/^min_uid .*/min_uid 0/' -e 's/^min_gid .*/min_gid 0/' \
    -e 's/flush_time=[0-9:]*/flush_time=00:00:01/' \
    -e 's/^load_report_time .*/load_report_time 00:00:05/' \
    -e 's/^shell_start_mode .*/shell_start_mode unix_behavior/' >"$dir/global"
  qconf -Mconf "$dir/global" >/dev/null 2>&1
  qconf -ssconf | sed -e 's/^schedule_interval .*/schedule_interval 0:0:1/' \
    -e 's/^flush_submit_sec .*/flush_submit_sec 1/' -e 's/^flush_finish_sec .*/flush_finish_sec 1/' \
    >"$dir/sched"
  qconf -Msconf "$dir/sched" >/dev/null 2>&1
  qconf -sh 2>/dev/null | grep -qx localhost || qconf -ah localhost >/dev/null 2>&1
  qconf -ss 2>/dev/null | grep -qx localhost || qconf -as localhost >/dev/null 2>&1
  rm -rf "$dir"
}

write_queue() {
  local file=$1
  cat >"$file" <<EOF
qname                 all.q
hostlist              localhost
seq_no                0
load_thresholds       NONE
suspend_thresholds    NONE
nsuspend              1
suspend_interval      00:05:00
priority              0
min_cpu_interval      00:05:00
processors            UNDEFINED
qtype                 BATCH INTERACTIVE
ckpt_list             NONE
pe_list               make smp
rerun                 FALSE
slots                 $SLOTS
tmpdir                /tmp
shell                 /bin/bash
prolog                NONE
epilog                NONE
shell_start_mode      unix_behavior
starter_method        NONE
suspend_method        NONE
resume_method         NONE
terminate_method      NONE
notify                $NOTIFY
owner_list            NONE
user_lists            NONE
xuser_lists           NONE
subordinate_list      NONE
complex_values        NONE
projects              NONE
xprojects             NONE
calendar              NONE
initial_state         default
s_rt                  INFINITY
h_rt                  INFINITY
s_cpu                 INFINITY
h_cpu                 INFINITY
s_fsize               INFINITY
h_fsize               INFINITY
s_data                INFINITY
h_data                INFINITY
s_stack               INFINITY
h_stack               INFINITY
s_core                INFINITY
h_core                INFINITY
s_rss                 INFINITY
h_rss                 INFINITY
s_vmem                INFINITY
h_vmem                INFINITY
EOF
}

configure_pe() {
  # smp: every slot of a job on one host (data-parallel training's processes share a node)
  local dir
  dir=$(mktemp -d)
  cat >"$dir/smp" <<EOF
pe_name            smp
slots              $SLOTS
user_lists         NONE
xuser_lists        NONE
start_proc_args    NONE
stop_proc_args     NONE
allocation_rule    \$pe_slots
control_slaves     FALSE
job_is_first_task  TRUE
urgency_slots      min
accounting_summary FALSE
qsort_args         NONE
EOF
  local how=-Ap out
  qconf -spl 2>/dev/null | grep -qx smp && how=-Mp
  out=$(qconf "$how" "$dir/smp" 2>&1) || { rm -rf "$dir"; die "qconf $how smp failed: $out"; }
  rm -rf "$dir"
}

configure_queue() {
  local dir
  dir=$(mktemp -d)
  configure_pe  # before the queue that names it
  write_queue "$dir/all.q"
  if qconf -sql 2>/dev/null | grep -qx all.q; then
    qconf -Mq "$dir/all.q" >/dev/null 2>&1
  else
    qconf -Aq "$dir/all.q" >/dev/null 2>&1
  fi
  rm -rf "$dir"
  qmod -c 'all.q' >/dev/null 2>&1 || true  # clear an error state left by an earlier session
  qmod -e 'all.q' >/dev/null 2>&1 || true
}

queue_ready() {
  # the queue instance exists, reports a load and is in no state (alarm, unknown, error, ...)
  qstat -f -q all.q 2>/dev/null | awk '$1 == "all.q@localhost" { found = 1; ok = (NF == 5) }
    END { exit !(found && ok) }'
}

start() {
  install_packages
  local_cell
  name_this_host
  if ! running sge_qmaster; then
    "${CLEAN_ENV[@]}" /usr/sbin/sge_qmaster
  fi
  wait_for 30 sge_qmaster qmaster_up
  configure_cluster  # before the execd starts: it reads min_uid when it starts
  if ! running sge_execd; then
    "${CLEAN_ENV[@]}" /usr/sbin/sge_execd
  fi
  configure_queue
  wait_for 60 "the queue all.q@localhost" queue_ready
  say "Grid Engine is up: queue all.q on localhost, $SLOTS slots (SGE_ROOT=$SGE_ROOT)"
}

stop() {
  local_cell
  if qmaster_up; then
    qconf -ke localhost >/dev/null 2>&1 || true
    qconf -km >/dev/null 2>&1 || true
  fi
  local d i
  for d in sge_execd sge_qmaster; do
    for ((i = 0; i < 40; i++)); do running "$d" || break; sleep 0.25; done
    running "$d" && pkill -x "$d" || true
  done
  say "Grid Engine is stopped"
}

status() {
  local up=0
  running sge_qmaster && say "sge_qmaster runs" || { say "sge_qmaster does not run"; up=1; }
  running sge_execd && say "sge_execd runs" || { say "sge_execd does not run"; up=1; }
  if [ $up = 0 ]; then
    qstat -f -u '*' || up=1
  fi
  return $up
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) die "usage: bash grid/local-sge.sh start|stop|status" 2 ;;
esac
