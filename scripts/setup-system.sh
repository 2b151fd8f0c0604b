#!/usr/bin/env bash
# Installs the Debian packages the assistant and its audio test rig need, if any are missing.
set -euo pipefail

packages=(
  libportaudio2        # PortAudio, used by sounddevice
  libasound2-plugins   # ALSA's pulse plugin: PortAudio reaches PulseAudio/PipeWire through it
  libspeexdsp1         # the linear echo canceller that keeps words said over a reply
  pulseaudio           # the test rig's sound server (null sinks instead of a sound card)
  pulseaudio-utils     # paplay, parec, pacat, pactl for the rig
  nodejs npm           # the real Claude Code CLI for the compatibility tests
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# node may come from elsewhere than Debian (nvm, NodeSource): accept a working npm.
if command -v npm >/dev/null 2>&1; then
  missing=("${missing[@]/nodejs/}"); missing=("${missing[@]/npm/}")
fi
read -r -a missing <<< "${missing[*]}"
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing Debian packages: ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
