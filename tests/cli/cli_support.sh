# The checks shared by the command-line tests (sourced): fail, ok, rejects and finish, run in
# the test's work directory.

failures=0
fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}

# ok <description> <command...>: the command must succeed.
ok() {
  local description=$1
  shift
  "$@" > last.out 2> last.err
  local status=$?
  if [ "$status" -ne 0 ]; then
    fail "$description: exit status $status: $(cat last.err)"
    return 1
  fi
  echo "ok: $description"
}

# rejects <description> <output-file> <command...>: the command must fail with one line on
# stderr starting "flowmatch: error:", and leave neither the output nor a temporary file.
rejects() {
  local description=$1 output=$2
  shift 2
  "$@" > last.out 2> last.err
  local status=$?
  local lines
  lines=$(wc -l < last.err)
  if [ "$status" -eq 0 ]; then
    fail "$description: exit status 0"
  elif [ "$lines" -ne 1 ] || ! grep -q '^flowmatch: error: ' last.err; then
    fail "$description: expected one line 'flowmatch: error: ...' on stderr, got $lines:"
    cat last.err
  elif [ -e "$output" ]; then
    fail "$description: left $output behind"
  elif compgen -G '*.tmp*' > /dev/null; then
    fail "$description: left a temporary file: $(echo *.tmp*)"
  else
    echo "ok: $description rejected: $(cat last.err)"
  fi
  rm -f "$output"
}

# finish <what>: the exit status of the test, after a summary line.
finish() {
  if [ "$failures" -ne 0 ]; then
    echo "$failures check(s) failed"
    exit 1
  fi
  echo "all $1 passed"
}
