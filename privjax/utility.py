"""The old path of `privjax.defenses.utility`, kept for one release."""

from privjax.defenses.utility import *  # noqa: F403
