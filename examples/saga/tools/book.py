"""Book something (argv[1] names what) and print the booking as JSON."""

import json
import sys

from ledger import call_args, record

kind = sys.argv[1]
args = call_args()
# A booking reference derived from the arguments, so a rerun gives the same one.
booking = f"{kind[:1].upper()}-" + "-".join(str(args[k]) for k in sorted(args))
record(f"booked {kind} {booking}")
print(json.dumps({"booking": booking, "kind": kind}))
