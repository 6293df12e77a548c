"""__NAME__: a notifier. It receives every event of a run (started, step,
analysis failed, awaiting approval, succeeded, rolled back...) and tells
someone; here, one log line per event, prefixed by `prefix`.

To tell a chat or a ticketing system instead, send the event with
`wasi_http.request` and grant the plugin that host (`allow_hosts`).
"""

from typing import Optional

import rollcage
from wit_world import exports
from wit_world.imports.rollcage_plugin_types import Event

# The plugin's `config` table: each key with its default.
CONFIG = {
    "prefix": "rollcage",  # put before every line
}


def render(prefix: str, event: Event) -> str:
    """The line for an event."""
    environment: Optional[str] = event.environment
    return f"{prefix}: {event.pipeline} {event.release.version} in {environment or '-'}: {event.message}"


class NotifierApi(exports.NotifierApi):
    @rollcage.returns_errors
    def notify(self, event: Event) -> None:
        config = rollcage.config(CONFIG)
        rollcage.log("info", render(config["prefix"], event), run_id=event.run_id)
