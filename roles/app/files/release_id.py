#!/usr/bin/env python3
"""Print the release id of a source tree: <version>-<12 hex of the content hash>.

Two deploys of the same code get the same id (so a re-run changes nothing); any change to the
service's code, migrations or dependencies gives a new release directory.
"""

import hashlib
import os
import re
import sys

root = sys.argv[1]
with open(os.path.join(root, "pyproject.toml"), encoding="utf-8") as fh:
    pyproject = fh.read()
version = re.search(r'^version\s*=\s*"([^"]+)"', pyproject, re.M).group(1)
digest = hashlib.sha256(pyproject.encode())
package = os.path.join(root, "app", "ffmpeg_api")
for dirpath, dirnames, filenames in sorted(os.walk(package)):
    dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
    for name in sorted(filenames):
        if name.endswith((".py", ".sql")):
            path = os.path.join(dirpath, name)
            digest.update(os.path.relpath(path, root).encode())
            with open(path, "rb") as fh:
                digest.update(fh.read())
print(f"{version}-{digest.hexdigest()[:12]}")
