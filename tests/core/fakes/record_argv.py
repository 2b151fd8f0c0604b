"""``record_argv.py LOG PROGRAM ARGS...``: append the argv to LOG (one JSON list a line), then
become PROGRAM, so a test can see every invocation of a real agent CLI."""

from __future__ import annotations

import json
import os
import sys

log, program, *args = sys.argv[1:]
with open(log, "a") as f:
    f.write(json.dumps([program, *args]) + "\n")
os.execv(program, [program, *args])
