"""The sample tool: reads its arguments from TRELLIS_ARGS, prints a JSON object."""

import json
import os
import sys

args = json.loads(os.environ.get("TRELLIS_ARGS") or "{}") or {}
name = str(args.get("name", "")).strip()
if not name:
    print("greet: the name is empty", file=sys.stderr)
    sys.exit(2)
print(json.dumps({"greeting": f"Hello, {name}."}))
