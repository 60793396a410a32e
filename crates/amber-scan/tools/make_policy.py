"""Turns collect_policy.py's output into the simple lines of src/policy.txt.

    python3 crates/amber-scan/tools/make_policy.py /tmp/uses.json > /tmp/generated.txt

Plain Python classes that the streams make with NEWOBJ or
copyreg._reconstructor and give a dict state become `class new build=attrs`
(plus `items` if the stream also fills them, as for the dict subclass Bunch);
names only ever referenced become `ref`. Everything the streams *call*
(NumPy reconstructors, Cython types, containers) is written by hand in the
"hand-written" part of policy.txt and skipped here.
"""

import json
import sys

HAND = set()
for line in open(sys.argv[2] if len(sys.argv) > 2 else "crates/amber-scan/src/policy.txt"):
    line = line.split("#")[0].strip()
    if line:
        HAND.add(line.split()[0])

uses = json.load(open(sys.argv[1]))["uses"]
out = []
for name, u in sorted(uses.items()):
    if name in HAND or name.startswith("?"):
        continue
    kinds = set(u)
    made = any(k.startswith("newobj ()") or k.startswith("instantiated via copyreg") for k in kinds)
    others = {k for k in kinds if not (k in ("global", "build dict", "items") or k.startswith("newobj ()")
                                       or k.startswith("instantiated via copyreg"))}
    if others:
        out.append(f"# TODO by hand: {name} {sorted(kinds)}")
    elif made:
        out.append(f"{name} class new build=attrs" + (" items" if "items" in kinds else ""))
    elif kinds == {"global"}:
        out.append(f"{name} ref")
print("\n".join(out))
