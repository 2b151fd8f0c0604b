"""Saves sessions in a loop and reports each completed save on stdout: ``<session id> <count>``.

``save_loop.py REPO STORE forever`` runs until killed (the kill -9 test);
``save_loop.py REPO STORE count N`` makes N new sessions and exits (the multi-process test).
Runs with ``python -I -S``, so the repository is put on the path by hand.
"""

from __future__ import annotations

import random
import sys
import time


def main() -> int:
    repo, store_dir, mode, *rest = sys.argv[1:]
    sys.path.insert(0, repo)
    from core.session import Session, make_message
    from core.store import SessionStore

    store = SessionStore(store_dir)
    out = sys.stdout
    mine: list[Session] = []

    def save(session: Session) -> None:
        now = time.time()
        session.add(make_message("user", f"message {len(session.messages)}", timestamp=now))
        store.save(session)
        out.write(f"{session.session_id} {len(session.messages)}\n")
        out.flush()

    if mode == "count":
        for _ in range(int(rest[0])):
            save(Session(room_id="proc"))
        return 0
    rng = random.Random()
    while True:
        if not mine or rng.random() < 0.3:
            mine.append(Session(room_id=f"room-{rng.randrange(4)}"))
        save(rng.choice(mine))


if __name__ == "__main__":
    sys.exit(main())
