"""Cancel a booking (argv[1] names what); the compensation of book.py."""

import json
import sys

from ledger import call_args, record

kind = sys.argv[1]
booking = call_args().get("booking", "")
record(f"cancelled {kind} {booking}")
print(json.dumps({"cancelled": booking}))
