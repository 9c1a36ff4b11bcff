"""The old path of `privjax.data.sources`, kept for one release."""

from privjax.data.sources import *  # noqa: F403
