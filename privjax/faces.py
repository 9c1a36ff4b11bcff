"""The old path of `privjax.models.faces`, kept for one release."""

from privjax.models.faces import *  # noqa: F403
