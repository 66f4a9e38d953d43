# shellcheck shell=bash
# What systemd-run and systemctl of this directory share: a unit is a
# directory below $FAKE_SYSTEMD_STATE named after it, holding
#   argv     the command, NUL-separated
#   log      the file its stdout and stderr are appended to
#   pid      its main process and that process's start time (/proc/PID/stat
#            field 22), so that a reused pid is not taken for it
#   stopped  present once systemctl stop ran (the unit is then inactive)
# Every call takes $FAKE_SYSTEMD_STATE/.lock first and writes a line to
# $FAKE_SYSTEMD_STATE/calls.log.
set -euo pipefail

[[ -n ${FAKE_SYSTEMD_STATE:-} ]] || { echo "${0##*/}: FAKE_SYSTEMD_STATE not set (this is e2e/node/run.sh's systemd stand-in)" >&2; exit 1; }
mkdir -p "$FAKE_SYSTEMD_STATE"
exec 9>>"$FAKE_SYSTEMD_STATE/.lock"
flock 9
echo "$(date -u +%FT%T.%3N) ${0##*/} $*" >>"$FAKE_SYSTEMD_STATE/calls.log"

# unit_name NAME: NAME with .service added when it has no unit type (systemctl
# takes "kubelet-X" for "kubelet-X.service").
unit_name() {
	case $1 in
	*.service | *.scope | *.slice | *.socket | *.target | *.timer | *.mount) echo "$1" ;;
	*) echo "$1.service" ;;
	esac
}

# proc_field PID: prints "STATE STARTTIME" of PID, or fails when there is no
# such process.
proc_field() {
	local s f
	s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	s=${s##*) }
	read -ra f <<<"$s"
	echo "${f[0]} ${f[19]}"
}

# unit_running DIR: the unit's main process lives (a zombie does not).
unit_running() {
	local pid start now
	[[ -s $1/pid ]] || return 1
	read -r pid start <"$1/pid"
	now=$(proc_field "$pid") || return 1
	[[ ${now#* } == "$start" && ${now%% *} != [ZX] ]]
}

unit_pid() { local pid _; read -r pid _ <"$1/pid"; echo "$pid"; }

# unit_start DIR: starts the recorded command in a session of its own,
# detached from the caller (not waited for: PID 1 reaps it), its output
# appended to the unit's log.
unit_start() {
	local dir=$1 log pid argv=()
	mapfile -d '' -t argv <"$dir/argv"
	log=$(<"$dir/log")
	# A background job of a shell without job control is no process group
	# leader: setsid makes the session in place and execs, so $! is the
	# command's pid.
	setsid "${argv[@]}" </dev/null >>"$log" 2>&1 9>&- &
	pid=$!
	local f
	f=$(proc_field "$pid") || { echo "$pid 0" >"$dir/pid"; rm -f "$dir/stopped"; return 0; }
	echo "$pid ${f#* }" >"$dir/pid"
	rm -f "$dir/stopped"
}

# unit_signal DIR SIGNAL: sends SIGNAL to the unit's main process if it runs.
unit_signal() {
	unit_running "$1" || return 0
	kill -s "$2" "$(unit_pid "$1")" 2>/dev/null || true
}

# unit_wait_stopped DIR: SIGTERM, then after 90 s (systemd's default
# TimeoutStopSec) SIGKILL; returns once the process is gone.
unit_wait_stopped() {
	local i
	unit_signal "$1" TERM
	for ((i = 0; i < 450; i++)); do
		unit_running "$1" || return 0
		sleep 0.2
	done
	unit_signal "$1" KILL
	for ((i = 0; i < 100; i++)); do
		unit_running "$1" || return 0
		sleep 0.2
	done
	echo "${0##*/}: $(basename "$1"): pid $(unit_pid "$1") survived SIGKILL" >&2
	return 1
}
