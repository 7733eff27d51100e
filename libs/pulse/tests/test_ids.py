"""Random UUIDs from a block of OS randomness: well-formed, never repeated, not shared with
a forked child."""

from __future__ import annotations

import os
import threading
import uuid

from pulse.ids import uuid4


def test_ids_are_version_4_uuids_and_never_repeat() -> None:
    ids = [uuid4() for _ in range(2000)]  # several blocks' worth
    assert all(i.version == 4 and i.variant == uuid.RFC_4122 for i in ids)
    assert len(set(ids)) == len(ids)


def test_threads_drawing_together_get_different_ids() -> None:
    drawn: list[list[uuid.UUID]] = [[] for _ in range(8)]

    def draw(into: list[uuid.UUID]) -> None:
        into.extend(uuid4() for _ in range(500))

    threads = [threading.Thread(target=draw, args=(ids,)) for ids in drawn]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [i for ids in drawn for i in ids]
    assert len(set(every)) == len(every) == 4000


def test_a_forked_child_does_not_draw_its_parents_ids() -> None:
    uuid4()  # the parent holds a block
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent
        try:
            os.write(write, b"".join(uuid4().bytes for _ in range(10)))
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    child = {uuid.UUID(bytes=data[i : i + 16]) for i in range(0, len(data), 16)}
    parent = {uuid4() for _ in range(10)}
    assert len(child) == 10
    assert not child & parent
