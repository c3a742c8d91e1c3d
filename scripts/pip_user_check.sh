#!/usr/bin/env bash
# CI as a pip user: build the sdist and wheel, check them with twine, then, outside the
# repository and with the repository hidden, follow the README's install steps into a new
# virtual environment and run the README quickstart, `fabstir demo` (without the p2p extra,
# then with it, installed by the command the demo's message names) and the README's
# three-line test with the plugin's fixtures. Fails if any step fails or needs the checkout.
#
# Needs: the repository's .venv (`make setup`: hatchling, twine), python3 >= 3.11 with venv,
# Node.js and npm, and the package indexes pip and npm are configured with. Run as root,
# the user steps run in a private mount namespace where the checkout is an empty directory;
# elsewhere they run with the checkout only off PATH, and a grep checks nothing points at it.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/fabstir-pip-user.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
case "$WORK/" in "$REPO"/*)
  echo "pip-user check: the temp dir $WORK is inside the repository" >&2
  exit 1
  ;;
esac
started=$(date +%s)

step() { printf '\n== pip-user check: %s (%d s in)\n' "$1" $(($(date +%s) - started)); }

step "build the sdist and wheel, twine check"
"$REPO/.venv/bin/python" -m hatchling build -d "$WORK/dist" >/dev/null
"$REPO/.venv/bin/python" -m twine check --strict "$WORK/dist/"*
"$REPO/.venv/bin/python" "$REPO/scripts/readme_steps.py" "$WORK/readme"
mkdir "$WORK/user"
cp "$WORK/dist/"*.whl "$WORK/user/"

# The user's half, run by a bash that cannot see the repository.
cat >"$WORK/user_steps.sh" <<'USER'
set -euo pipefail
WORK=$1
started=$2
step() { printf '\n== pip-user check: %s (%d s in)\n' "$1" $(($(date +%s) - started)); }
VENV=$WORK/user/.venv

step "the README's install steps, as written (new venv, fabstir devnet install, fabstir demo)"
cd "$WORK/user"
cat "$WORK/readme/install.sh"
bash -euo pipefail "$WORK/readme/install.sh" 2>&1 | tee "$WORK/install.log"
grep -q "^Found host 0x[0-9a-fA-F]\{40\} in the registry;$" "$WORK/install.log"
dht_line=$(grep '^DHT ' "$WORK/install.log")
suggested=$(sed -n 's/.*which is not installed: \(.*\) (the p2p extra)$/\1/p' <<<"$dht_line")
[ "$suggested" = "pip install 'fabstir-sdk[p2p]'" ] || {
  echo "unexpected install hint: $dht_line" >&2
  exit 1
}

step "the command the demo suggested, then fabstir demo with the DHT (from another dir)"
mkdir "$WORK/elsewhere"
cd "$WORK/elsewhere"
bash -euo pipefail -c ". '$VENV/bin/activate' && $suggested -q && fabstir demo" \
  2>&1 | tee "$WORK/demo_p2p.log"
grep -q "^Found host 0x[0-9a-fA-F]\{40\} in the registry and on the DHT;$" "$WORK/demo_p2p.log"
if grep '^DHT ' "$WORK/demo_p2p.log"; then exit 1; fi

step "with no anvil anywhere: the error names the one command to run"
if out=$(XDG_CACHE_HOME="$WORK/no-cache" bash -c ". '$VENV/bin/activate' && fabstir devnet up" 2>&1); then
  echo "fabstir devnet up ran without an anvil: $out" >&2
  exit 1
fi
echo "$out"
grep -q '^fabstir: error: anvil not found: run `fabstir devnet install` (it installs' <<<"$out"

step "the README quickstart (from another dir), output as the README shows it"
mkdir "$WORK/quickstart"
cd "$WORK/quickstart"
cp "$WORK/readme/quickstart.py" .
"$VENV/bin/python" quickstart.py >quickstart.log
diff -u "$WORK/readme/quickstart.out" quickstart.log

step "the README's three-line test with the plugin's fixtures: no config, -W error"
mkdir "$WORK/usertest"
cd "$WORK/usertest"
cp "$WORK/readme/test_user.py" .
"$VENV/bin/python" -m pytest -W error -q -p no:cacheprovider test_user.py 2>&1 | tee pytest.log
grep -Eq '^1 passed in [0-9.]+s$' pytest.log
if grep -i 'warning' pytest.log; then exit 1; fi
USER

step "hide the repository; the user's steps from $WORK"
clean_path=$(tr ':' '\n' <<<"$PATH" | grep -v "^$REPO" | paste -sd: -)
user_env=(env -u FABSTIR_ANVIL -u PYTHONPATH -u VIRTUAL_ENV -u PYTHONHOME
  "PATH=$clean_path" "XDG_CACHE_HOME=$WORK/cache" "PIP_DISABLE_PIP_VERSION_CHECK=1")
if [ "$(id -u)" = 0 ] && unshare -m --propagation private true 2>/dev/null; then
  echo "the checkout $REPO is an empty tmpfs for these steps"
  "${user_env[@]}" unshare -m --propagation private bash -c \
    "mount -t tmpfs fabstir-repo-hidden '$REPO' && exec bash '$WORK/user_steps.sh' '$WORK' $started"
else
  echo "NOTE: cannot hide $REPO here (needs root and unshare): it is only off PATH"
  "${user_env[@]}" bash "$WORK/user_steps.sh" "$WORK" "$started"
fi

step "nothing installed points at the checkout"
if grep -rlI --exclude-dir=__pycache__ "$REPO" "$WORK/user/.venv"; then
  echo "the files above name $REPO" >&2
  exit 1
fi
printf '\npip-user check: PASSED in %d s\n' $(($(date +%s) - started))
