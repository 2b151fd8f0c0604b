"""Home Assistant's Wyoming protocol: ``voice-assistant serve`` and the remote speech engines.

Kept apart from the live loop: :mod:`.server` and :mod:`.handlers` serve this project's
Whisper, Piper and agent to Wyoming clients; :mod:`.remote` makes a Wyoming server (another
machine's ``serve``, wyoming-faster-whisper, wyoming-piper) a speech engine of the live loop,
with the local model as its fallback.
"""
