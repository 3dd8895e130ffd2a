"""A prelude for child interpreters that records every network or installer attempt.

Tests run ``AUDIT_PRELUDE + code`` in a fresh Python; the code prints ``json.dumps(events)``
at the end, and an empty list proves nothing reached for the network or a package installer.
"""

AUDIT_PRELUDE = """
import json, sys
events = []
def hook(event, args):
    spawn = event == "subprocess.Popen" and any(k in str(args) for k in ("pip", "uv", "apt"))
    if event.startswith(("socket.", "urllib.", "http.")) or spawn:
        events.append(f"{event} {args!r}"[:200])
sys.addaudithook(hook)
"""
