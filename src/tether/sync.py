"""Blocking waits for plain `def` workflows, which cannot `await`.

    @app.workflow()
    def review(doc_id: str) -> str:
        tether.sync.sleep(60)
        answer = tether.sync.recv("review", timeout=3600)
        ...

They journal and evict exactly as their async counterparts do; a plain `def` workflow evicted
while it waits gives its thread back.
"""

from tether.engine.messages import recv_blocking as recv
from tether.engine.messages import set_event_blocking as set_event
from tether.engine.timers import sleep_blocking as sleep
from tether.engine.timers import sleep_until_blocking as sleep_until

__all__ = ["recv", "set_event", "sleep", "sleep_until"]
