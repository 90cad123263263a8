"""Stand-in for ansible-test's pip bootstrap script, which it downloads from a host this
machine cannot reach (ci-files.testing.ansible.com). tests/run installs it into ansible-test's
cache. Like get-pip.py it installs pip into the running (empty) virtual environment and then
the packages it is given, here from the local Python's ensurepip and the package index.
"""

import subprocess
import sys

GET_PIP_ONLY = {"--no-setuptools", "--no-wheel"}

subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade", "--default-pip"])
args = [a for a in sys.argv[1:] if a not in GET_PIP_ONLY]
subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", *args])
