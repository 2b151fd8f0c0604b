"""Real audio I/O through PortAudio (sounddevice): the microphone and the speaker.

``sounddevice`` is imported inside the functions: importing it initializes PortAudio, which
enumerates the ALSA devices once, so the environment (e.g. ``PULSE_SERVER``) must be final by
then; and importing this module stays cheap.

Both devices run one PortAudio stream with a callback that only moves samples between the
device and a buffer under a lock; everything else happens on the caller's thread.
"""

from voice.devices.base import (
    AudioSink,
    AudioSource,
    SampleClock,
    find_device,
    list_devices,
)
from voice.devices.duplex import DuplexDevice
from voice.devices.microphone import Microphone
from voice.devices.speaker import RecoveringSpeaker, Speaker

__all__ = [
    "AudioSink",
    "AudioSource",
    "DuplexDevice",
    "Microphone",
    "RecoveringSpeaker",
    "SampleClock",
    "Speaker",
    "find_device",
    "list_devices",
]
