#!/usr/bin/env bash
# The system tools the demo and the tests use, apt-get installed where missing (`make system-deps`):
#   espeak-ng  speaks questions (quickstart's spoken evaluation, spoken datasets, the Whisper tests)
#   sox        converts audio
#   flite      a second synthesizer: spoken test questions in a voice unlike espeak-ng's (robustness sets)
#   chromium   the browser of the web-page test (tests/test_serve_web.py)
# It never fails the build: where it cannot install (no apt-get, not root, apt fails) it says so, the tests
# that need a missing tool skip with the reason and the quickstart skips its spoken questions.
set -u
missing=()
for tool in espeak-ng sox flite chromium; do  # each Debian package is named as its command
  if command -v "$tool" >/dev/null 2>&1; then echo "system-deps: $tool is present"; else missing+=("$tool"); fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=()
if ! command -v apt-get >/dev/null 2>&1; then
  reason="no apt-get on this machine; install ${missing[*]} with your package manager"
elif [ "$(id -u)" -ne 0 ] && ! { command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; }; then
  reason="not root; run: sudo apt-get install -y ${missing[*]}"
else
  [ "$(id -u)" -ne 0 ] && sudo=(sudo -n)
  echo "system-deps: installing ${missing[*]} with apt-get (make ... SYSTEM_DEPS=skip skips this step)"
  start=$SECONDS
  if "${sudo[@]}" apt-get update -qq && "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      --no-install-recommends "${missing[@]}" >/dev/null; then
    echo "system-deps: installed ${missing[*]} in $((SECONDS - start)) s"
    exit 0
  fi
  reason="apt-get failed (see above); run: apt-get install -y ${missing[*]}"
fi
echo "system-deps: warning: ${missing[*]} not installed: $reason." >&2
echo "system-deps: the tests that need them will skip, and the quickstart skips its spoken questions." >&2
exit 0
