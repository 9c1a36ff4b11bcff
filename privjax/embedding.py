"""The old path of `privjax.models.kinds`, kept for one release."""

from privjax.models.kinds import *  # noqa: F403
