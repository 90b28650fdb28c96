#!/usr/bin/env python3
"""cocin: a small Docker-like container runtime. ``sudo python3 cocin.py --help``."""

import os
import sys

if sys.version_info < (3, 9):  # noqa: UP036 - say it clearly on an old python3
    sys.exit("cocin: error: Python 3.9 or newer is needed")

# Called as `cocin-oci` (a link to this file, scripts/cocin-oci) or `cocin.py oci ...`:
# runc's command line, for podman and containerd (cocin/oci). Nothing else imports it.
_oci = os.path.basename(sys.argv[0]) == "cocin-oci"
if not _oci and sys.argv[1:2] == ["oci"]:
    _oci = True
    del sys.argv[1]
if _oci:
    from cocin.oci.cli import main
else:
    from cocin.cli import main  # noqa: E402

if __name__ == "__main__":
    code = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:  # "cocin ps | head": the reader went away, as it may
        pass
    # Skip the interpreter's tear-down (freeing every object and module): there
    # is nothing left to clean up, and it costs every command a few milliseconds.
    # Not under a profiler or coverage tool: they write their results at exit.
    if sys.getprofile() is None and sys.gettrace() is None:
        os._exit(code or 0)
    sys.exit(code)
