#!/usr/bin/env bash
# make teeth: every planted bug in this directory must be caught.
#
# Each NN-name.patch is a small diff against main that plants one bug. Its
# header (the lines before the diff) records what catches it:
#
#   check:  kvsim -seed N                 one simulator seed, or
#   check:  go test ./core/ -run '^TestX$'  a unit or property test
#   expect: text the failing check must print (the kind of violation, or
#           the failing test)
#
# The other fields (bug, introduced, found, violation) are the record that
# docs/sim.md's tables are made from.
#
# For every patch this copies the source (the working tree, or the commit
# TEETH_REV) to a scratch directory under /tmp, applies the patch, runs its
# check and requires it to fail with the expected text. Every check must also
# pass on the unpatched copy, so that a catch is the bug's and not a failure
# main already has. It fails naming each patch that did not apply, did not
# build, or was not caught.
#
#   sim/testdata/teeth/run.sh [NN-name.patch ...]   check some (default: all)
#   sim/testdata/teeth/run.sh -search [patch ...]   re-measure instead: run
#       kvsim -swarm -seed 1 -count 300 (plus the header's "search:" flags;
#       SEARCH_COUNT changes the count) on each patched copy and print the
#       first failing seed and violation, to update the headers and
#       docs/sim.md after the simulator changed.
#
# missed/ holds planted bugs that nothing catches yet, with what was run;
# make teeth leaves them out (run.sh -search 'missed/*.patch' re-tries them).
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
search=0
if [[ ${1:-} == -search ]]; then
	search=1
	shift
fi
patches=()
if (($# > 0)); then
	for p in "$@"; do
		if [[ -f $p ]]; then
			patches+=("$(realpath "$p")")
			continue
		fi
		# A name or pattern relative to this directory (missed/*.patch).
		n=${#patches[@]}
		for f in "$here"/$p; do [[ -f $f ]] && patches+=("$f"); done
		if ((${#patches[@]} == n)); then
			echo "run.sh: no patch $p" >&2
			exit 2
		fi
	done
else
	patches=("$here"/*.patch)
fi
GO=${GO:-go}
SEARCH_COUNT=${SEARCH_COUNT:-300}

work=$(mktemp -d /tmp/keyval-teeth.XXXXXX)
trap 'rm -rf "$work"' EXIT
start=$SECONDS

# copy_source DIR: the code the patches apply to, without build output,
# local clusters or binaries built at the top level.
copy_source() {
	mkdir -p "$1"
	if [[ -n ${TEETH_REV:-} ]]; then
		git -C "$root" archive "$TEETH_REV" | tar -x -C "$1"
		return
	fi
	local ex=(--exclude=./.git --exclude=./bin --exclude=./.cluster --exclude=./.benchdata --exclude='*.test')
	for c in "$root"/cmd/*/; do ex+=(--exclude="./$(basename "$c")"); done
	tar -C "$root" "${ex[@]}" -cf - . | tar -C "$1" -xf -
}

# field PATCH NAME: a header field's value.
field() { sed -n "/^diff --git /q; s/^$2:[[:space:]]*//p" "$1" | head -n 1; }

# build_kvsim DIR: the simulator of that copy, built once.
build_kvsim() {
	[[ -x $1/.kvsim ]] && return 0
	(cd "$1" && $GO build -trimpath -o .kvsim ./cmd/kvsim)
}

# run_check DIR CHECK LOG: runs a recorded check in a copy; its status is
# the check's (0: passed). Status 125: the check could not run (bad check
# line, or the copy does not build).
run_check() {
	local dir=$1 check=$2 log=$3
	local -a args
	eval "args=($check)"
	case ${args[0]:-} in
	kvsim)
		build_kvsim "$dir" >"$log" 2>&1 || return 125
		(cd "$dir" && timeout 600 ./.kvsim "${args[@]:1}" -out "$dir/.sim-out") >"$log" 2>&1
		;;
	go)
		[[ ${args[1]:-} == test ]] || return 125
		local -a pkgs=()
		for a in "${args[@]:2}"; do [[ $a == ./* ]] && pkgs+=("$a"); done
		# Compile first, so that a patch that does not build is not
		# mistaken for a catch.
		(cd "$dir" && $GO test -trimpath -count=1 -run '^$' "${pkgs[@]}") >"$log" 2>&1 || return 125
		(cd "$dir" && timeout 900 $GO test -trimpath -count=1 "${args[@]:2}") >"$log" 2>&1
		;;
	*)
		echo "unknown check: $check" >"$log"
		return 125
		;;
	esac
}

first_line() { grep -m 1 -e "$1" "$2" | cut -c 1-200; }

failures=()
fail() {
	failures+=("$1")
	echo "FAIL  $1"
}

if ((search)); then
	for p in "${patches[@]}"; do
		name=$(basename "$p" .patch)
		dir=$work/$name
		copy_source "$dir"
		if ! (cd "$dir" && git apply "$p") >"$work/$name.log" 2>&1; then
			fail "$name: the patch does not apply: $(head -n 1 "$work/$name.log")"
			continue
		fi
		if ! build_kvsim "$dir" >"$work/$name.log" 2>&1; then
			fail "$name: does not build: $(head -n 1 "$work/$name.log")"
			continue
		fi
		read -r -a extra <<<"$(field "$p" search)"
		(cd "$dir" && ./.kvsim -swarm "${extra[@]}" -seed 1 -count "$SEARCH_COUNT" -workers 2 -out "$dir/.sim-out") >"$work/$name.log" 2>&1
		seed=$(sed -n 's/^make sim SEED=\([0-9]*\) .*/\1/p' "$work/$name.log" | sort -n | head -n 1)
		if [[ -z $seed ]]; then
			echo "none  $name: no failing seed in $SEARCH_COUNT ($(head -n 1 "$work/$name.log"))"
		else
			echo "seed  $name: $seed ($(grep -c '^make sim SEED=' "$work/$name.log") of $SEARCH_COUNT failed): $(grep -m 1 "^make sim SEED=$seed " "$work/$name.log" | sed 's/^[^#]*# //; s/ (artifacts:.*//')"
		fi
		rm -rf "$dir"
	done
	echo "searched in $((SECONDS - start))s"
	((${#failures[@]} == 0))
	exit
fi

# Main must pass every recorded check.
main=$work/main
copy_source "$main"
for p in "${patches[@]}"; do
	name=$(basename "$p" .patch)
	check=$(field "$p" check)
	if [[ -z $check || -z $(field "$p" expect) ]]; then
		fail "$name: the header has no check: or no expect: line"
		continue
	fi
	run_check "$main" "$check" "$work/main-$name.log"
	case $? in
	0)
		if grep -q 'no tests to run' "$work/main-$name.log"; then
			fail "$name: '$check' runs no test on main"
		fi
		;;
	125) fail "$name: '$check' cannot run on main: $(tail -n 3 "$work/main-$name.log" | tr '\n' ' ')" ;;
	*) fail "$name: '$check' fails on main too: $(first_line 'FAIL\|violat\|answered\|node ' "$work/main-$name.log")" ;;
	esac
done
echo "main passes the recorded checks ($((SECONDS - start))s)"
rm -rf "$main"

for p in "${patches[@]}"; do
	name=$(basename "$p" .patch)
	check=$(field "$p" check)
	expect=$(field "$p" expect)
	[[ -n $check && -n $expect ]] || continue
	t0=$SECONDS
	dir=$work/$name
	copy_source "$dir"
	if ! (cd "$dir" && git apply "$p") >"$work/$name.log" 2>&1; then
		fail "$name: the patch does not apply: $(head -n 1 "$work/$name.log")"
		rm -rf "$dir"
		continue
	fi
	run_check "$dir" "$check" "$work/$name.log"
	status=$?
	if ((status == 125)); then
		fail "$name: '$check' cannot run with the patch: $(tail -n 3 "$work/$name.log" | tr '\n' ' ')"
	elif ((status == 0)); then
		fail "$name: not caught: '$check' passes with the bug planted"
	elif ! grep -qF -- "$expect" "$work/$name.log"; then
		fail "$name: '$check' fails, but not with \"$expect\": $(first_line 'FAIL\|violat\|answered\|node \|panic' "$work/$name.log")"
	else
		echo "ok    $name: caught by $check ($((SECONDS - t0))s): $(grep -m 1 -F -- "$expect" "$work/$name.log" | sed 's/^[[:space:]]*//' | cut -c 1-160)"
	fi
	rm -rf "$dir"
done

echo "${#patches[@]} planted bugs, ${#failures[@]} failed, $((SECONDS - start))s"
if ((${#failures[@]} > 0)); then
	printf '  %s\n' "${failures[@]}"
	exit 1
fi
