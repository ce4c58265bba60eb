"""The tour's tool: reads its arguments from TRELLIS_ARGS, prints a JSON object."""

import json
import os
import sys

args = json.loads(os.environ.get("TRELLIS_ARGS") or "{}") or {}
word = str(args.get("word", "")).strip()
if not word:
    print("word_stats: the word is empty", file=sys.stderr)
    sys.exit(2)
letters = [c for c in word if c.isalpha()]
vowels = [c for c in letters if c.lower() in "aeiou"]
print(json.dumps({"word": word, "letters": len(letters), "vowels": vowels}))
