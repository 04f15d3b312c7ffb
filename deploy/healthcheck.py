"""The container's HEALTHCHECK: exit 0 when /healthz on this container's port answers 200.

Standard library only (the image has no curl), and it reads the port the way `planb serve`
does: PLANB_PORT, else 8080.
"""
import os
import sys
import urllib.request

port = (os.environ.get("PLANB_PORT") or "").strip() or "8080"
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=4) as response:
        sys.exit(0 if response.status == 200 else 1)
except Exception as exc:  # noqa: BLE001 - any failure means unhealthy
    print(f"healthcheck: {exc}", file=sys.stderr)
    sys.exit(1)
