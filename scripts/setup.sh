# Shared set-up for the README commands: a project virtualenv and the system services tests use.
# Sourced by scripts/test (and later scripts/demo); safe to run again, it only does what is missing.

PYTHON="${PYTHON:-python3}"
VENV=".venv"

ensure_python_env() {
    # $1: the optional-dependency group to install ("dev" for tests).
    local extra="$1"
    if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        echo "error: Python >= 3.11 is required; set PYTHON=/path/to/python3.11 or newer" >&2
        exit 2
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        echo "==> creating $VENV"
        "$PYTHON" -m venv "$VENV"
    fi
    local stamp
    stamp="$VENV/.installed-$extra-$(sha256sum pyproject.toml | cut -c1-16)"
    if [ ! -f "$stamp" ]; then
        echo "==> installing the project and its $extra dependencies into $VENV"
        "$VENV/bin/python" -m pip install --quiet --upgrade pip
        "$VENV/bin/python" -m pip install --quiet -e ".[$extra]"
        rm -f "$VENV"/.installed-"$extra"-*
        touch "$stamp"
    fi
}

have_program() {
    command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]
}

ensure_system_packages() {
    # Arguments: program:debian-package pairs; installs the packages whose program is missing.
    local missing=() pair
    for pair in "$@"; do
        have_program "${pair%%:*}" || missing+=("${pair#*:}")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo="sudo"
        else
            echo "error: missing system packages: ${missing[*]} (install them with apt-get as root)" >&2
            exit 2
        fi
    fi
    echo "==> installing system packages: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
