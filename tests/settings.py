"""The test suite's settings: the project's own, with a secret key made for this run.

The key goes into the environment, so the qcluster, watcher and worker processes that the
tests start share it (they load ``mqic_site.settings`` and read it from there).
"""

import os
import secrets

os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))

from mqic_site.settings import *  # noqa: F403
