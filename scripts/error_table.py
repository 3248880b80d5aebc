"""Print README's "Errors" table from the error classes (fbil.service.errors.ERROR_CODES).

python scripts/error_table.py   # paste over the table; tests/service/test_error_codes.py
                                # fails while they differ
"""

from __future__ import annotations

from fbil.service.errors import ERROR_CODES


def table() -> str:
    rows = ["| status | code | when |", "|---|---|---|"]
    rows += [f"| {e.status} | `{e.code}` | {e.meaning} |" for e in ERROR_CODES]
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(table(), end="")
