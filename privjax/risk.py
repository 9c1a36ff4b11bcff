"""The old path of `privjax.levels` (the release gate's `reaches`), kept for one release."""

from privjax.levels import *  # noqa: F403
