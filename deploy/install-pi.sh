#!/usr/bin/env bash
# Install voice-assistant as a headless user service on Raspberry Pi OS (Debian bookworm,
# aarch64). Run it as the user who will own the service, from a checkout of the project;
# it uses sudo for the apt, group and linger steps. Safe to run again: it updates the
# install and skips what is already done.
#
#   deploy/install-pi.sh [--dry-run] [--source DIR] [--no-start]
#
#   --dry-run    print every step, change nothing
#   --source     the project checkout to install (default: this script's parent directory)
#   --no-start   install and enable the service, but do not (re)start it now
set -euo pipefail

APP=voice-assistant
SOURCE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DRY_RUN=0
START=1

usage() { sed -n '2,11s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

while (($#)); do
    case "$1" in
        --dry-run) DRY_RUN=1 ;;
        --no-start) START=0 ;;
        --source)
            [[ $# -ge 2 ]] || { echo "--source needs a directory" >&2; exit 2; }
            SOURCE="$(cd "$2" && pwd)"
            shift
            ;;
        -h | --help) usage; exit 0 ;;
        *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

USER_NAME="${USER:-$(id -un)}"
# The paths the unit file uses (%h/...), so they do not follow XDG_* overrides.
VENV="$HOME/.local/share/$APP/venv"
CONFIG_DIR="$HOME/.config/$APP"
UNIT_DIR="$HOME/.config/systemd/user"
UNIT="$APP.service"

# python3-venv: the venv. libportaudio2: sounddevice's audio library.
# libasound2-plugins: ALSA's pulse plugin, so PortAudio reaches PipeWire / PulseAudio.
# gcc, libc6-dev, python3-dev: evdev ships no aarch64 wheel on PyPI, pip compiles it
# (scripts/check_aarch64.py reports this). No espeak-ng: piper-tts bundles its data.
APT_PACKAGES=(python3-venv python3-dev gcc libc6-dev libportaudio2 libasound2-plugins alsa-utils)
# input: read keyboards (evdev push-to-talk). gpio: a push button. audio: ALSA without a
# sound server (Raspberry Pi OS Lite).
GROUPS_NEEDED=(input gpio audio)

step() { printf '\n== %s\n' "$*"; }
run() {
    printf '+ %s\n' "$*"
    if ((!DRY_RUN)); then "$@"; fi
}
die() { echo "error: $*" >&2; exit 1; }

step "checks"
if ((EUID == 0)); then
    ((DRY_RUN)) || die "run this as the user who will own the service, not root (it uses sudo itself)"
    echo "warning: running as root (dry run only)"
fi
[[ -f "$SOURCE/pyproject.toml" ]] || die "$SOURCE is not the project checkout (no pyproject.toml); use --source"
[[ "$(uname -m)" == aarch64 ]] || echo "warning: this is $(uname -m), not aarch64; continuing"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "python3 is older than 3.11; use Raspberry Pi OS bookworm or newer"
echo "installing $SOURCE for $USER_NAME into $VENV"

step "system packages: ${APT_PACKAGES[*]}"
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    run sudo apt-get update
    run sudo apt-get install -y "${missing[@]}"
else
    echo "all installed"
fi

step "python environment"
if [[ -x "$VENV/bin/python" ]]; then
    echo "keeping the existing venv $VENV"
else
    run python3 -m venv "$VENV"
fi
# lgpio: gpiozero's pin factory on bookworm (the only one that works on a Pi 5).
run "$VENV/bin/pip" install --upgrade "$SOURCE[evdev,gpio]" lgpio
run "$VENV/bin/python" "$SOURCE/scripts/fetch_smart_turn.py"  # the end-of-turn model

step "configuration"
run install -d -m 700 "$CONFIG_DIR"
if [[ -e "$CONFIG_DIR/config.toml" ]]; then
    echo "keeping the existing $CONFIG_DIR/config.toml"
    # The assistant refuses a config file others can change (it names the program it runs).
    if [[ -n "$(find "$CONFIG_DIR/config.toml" -maxdepth 0 -perm /022 2>/dev/null)" ]]; then
        run chmod go-w "$CONFIG_DIR/config.toml"
    fi
else
    run install -m 600 "$SOURCE/config.toml" "$CONFIG_DIR/config.toml"
fi
if [[ ! -e "$CONFIG_DIR/env" ]]; then
    # Secrets for the agent (e.g. ANTHROPIC_API_KEY=...), read by the unit's EnvironmentFile.
    run install -m 600 /dev/null "$CONFIG_DIR/env"
fi

step "groups: ${GROUPS_NEEDED[*]}"
regroup=0
member_of="$(id -nG "$USER_NAME" 2>/dev/null || true)"
for group in "${GROUPS_NEEDED[@]}"; do
    if ! getent group "$group" >/dev/null; then
        echo "no $group group on this system; skipping"
    elif [[ " $member_of " == *" $group "* ]]; then
        echo "already in $group"
    else
        run sudo usermod -aG "$group" "$USER_NAME"
        regroup=1
    fi
done

step "start at boot without a login (linger)"
if [[ "$(loginctl show-user "$USER_NAME" -p Linger --value 2>/dev/null || true)" == yes ]]; then
    echo "linger already enabled"
else
    run sudo loginctl enable-linger "$USER_NAME"
fi

step "user service"
# Over SSH after `su` the runtime dir may be unset; systemctl --user needs it.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/run/user/$(id -u)}"
run install -d "$UNIT_DIR"
run install -m 644 "$SOURCE/deploy/$UNIT" "$UNIT_DIR/$UNIT"
run systemctl --user daemon-reload
run systemctl --user enable "$UNIT"
if ((START)); then
    run systemctl --user restart "$UNIT"
fi

step "done"
echo "logs:    journalctl --user -u $APP -f"
echo "control: $VENV/bin/$APP --help"
# The service's PATH (the unit's Environment=PATH): `claude` must be found there.
SERVICE_PATH="$HOME/.local/bin:/usr/local/bin:/usr/bin:/bin"
if claude_at="$(PATH="$SERVICE_PATH" command -v claude)"; then
    echo "agent:   $claude_at; log in once (run claude) or put ANTHROPIC_API_KEY=... in"
else
    echo "agent:   claude is not on the service's PATH ($SERVICE_PATH): install it with"
    echo "         npm config set prefix ~/.local && npm install -g @anthropic-ai/claude-code"
    echo "         then log in once (run claude) or put ANTHROPIC_API_KEY=... in"
fi
echo "         $CONFIG_DIR/env"
if [[ -r /sys/fs/cgroup/cgroup.controllers ]] && ! grep -qw memory /sys/fs/cgroup/cgroup.controllers; then
    echo "NOTE: the kernel's memory controller is off, so the unit's MemoryMax does not apply:"
    echo "      add cgroup_enable=memory to /boot/firmware/cmdline.txt and reboot to have it."
fi
if ((regroup)); then
    echo "NOTE: new groups apply to new sessions only: reboot (sudo reboot) so the service"
    echo "      can read the keyboard and GPIO."
fi
