"""Container health check: exit 0 when ``GET /readyz`` answers 200, else 1 (stdlib only).

Docker's HEALTHCHECK and compose's ``healthcheck`` run it inside the container, where the service
listens on ``FBIL_PORT`` (8000) on every interface (``FBIL_HOST=0.0.0.0``).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main() -> int:
    url = f"http://127.0.0.1:{os.environ.get('FBIL_PORT', '8000')}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=4) as response:  # noqa: S310 (fixed local URL)
            return 0 if response.status == 200 else 1
    except urllib.error.HTTPError as e:  # 503 while loading or when the model failed
        print(f"{url}: HTTP {e.code}", file=sys.stderr)
    except OSError as e:  # not listening yet, timeout
        print(f"{url}: {e}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
