"""Always fails: no cars left. Its node's `on_error: rollback` starts the compensation."""

import sys

from ledger import record

record("rent_car failed")
print("no cars available", file=sys.stderr)
sys.exit(1)
