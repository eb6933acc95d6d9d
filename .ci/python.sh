# Sourced by .ci/setup and .ci/run: sets PY to the Python that the project's packages go into.
# An active virtual environment is used as it is; otherwise the project's `.venv`, created on
# first use (on Debian/Ubuntu `python3 -m venv` needs the python3-venv package, installed here
# when missing). The venv sees the system's site-packages (read-only): what the machine already
# has (a preinstalled torch, numpy) is reused instead of downloaded again, and everything pip
# installs goes into .venv, never into the system Python.
if [ -n "${VIRTUAL_ENV:-}" ] && [ -x "$VIRTUAL_ENV/bin/python" ]; then
    PY="$VIRTUAL_ENV/bin/python"
else
    if [ ! -x .venv/bin/python ]; then
        printf '[setup %3ds] creating the project venv .venv (%s)\n' "$SECONDS" "$(python3 --version)" >&2
        if ! python3 -m venv --system-site-packages .venv 2>/dev/null; then
            rm -rf .venv
            pkg="python$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')-venv"
            printf '[setup %3ds] python3 -m venv failed: installing %s\n' "$SECONDS" "$pkg" >&2
            ${SUDO:-} apt-get install -y -qq "$pkg" >/dev/null 2>&1 || ${SUDO:-} apt-get install -y -qq python3-venv >/dev/null
            python3 -m venv --system-site-packages .venv
        fi
    fi
    PY="$PWD/.venv/bin/python"
fi
export PY
