# Sourced by serve-demo.sh and test.sh (from the checkout's root): make .venv and
# install this checkout into it (editable), unless it is already installed from this
# very pyproject.toml. Each install leaves a stamp in .venv holding pyproject.toml's
# hash; a later run with the same pyproject.toml skips pip (a second or two saved on
# every start, and no network needed). Force an install with REINSTALL=1.

# ensure_venv EXTRA: the checkout with its [EXTRA] dependencies ("dev" holds every extra).
ensure_venv() {
  local extra="$1"
  local py="${PYTHON:-python3}"
  if [ ! -x .venv/bin/python ]; then
    "$py" -m venv .venv
  fi
  local want
  want="$(.venv/bin/python -c 'import hashlib, sys; print(hashlib.sha256(open("pyproject.toml", "rb").read()).hexdigest(), sys.version.split()[0])')"
  if [ "${REINSTALL:-0}" != 1 ]; then
    local stamp
    for stamp in ".venv/.installed-$extra" ".venv/.installed-dev"; do
      if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return 0
      fi
    done
  fi
  echo "installing mef3io-server[$extra] into .venv (once per change of pyproject.toml)..." >&2
  # pip's and the build's chatter goes to a log, shown only when the install fails.
  if ! { .venv/bin/python -m pip install --quiet --upgrade pip \
         && .venv/bin/python -m pip install --quiet -e ".[$extra]"; } > .venv/install.log 2>&1; then
    cat .venv/install.log >&2
    echo "installing mef3io-server[$extra] failed (the log above is in .venv/install.log)" >&2
    return 1
  fi
  echo "$want" > ".venv/.installed-$extra"
}
