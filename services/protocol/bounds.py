"""Bounds of the integers that cross a service boundary.

Every integer in a path, query, header or message is a bounded type: a value outside its range
is refused as a 4xx naming the parameter, before it reaches arithmetic that overflows
(``int / 1000`` of a 400-digit number) or a database column (SQLite and PostgreSQL integers are
64 bits, version columns 32).
"""

from __future__ import annotations

INT32_MAX = 2**31 - 1
"""Largest value of a 32-bit signed column (versions, counts)."""
INT64_MAX = 2**63 - 1
"""Largest value of a 64-bit signed column (sequence numbers)."""
MAX_DEADLINE_MS = 7 * 24 * 3600 * 1000
"""Longest deadline a caller may announce (``X-Splice-Deadline``): a week, in milliseconds."""
MAX_INT_DIGITS = 19
"""Digits of the longest decimal integer a header may carry (``INT64_MAX`` has 19)."""
