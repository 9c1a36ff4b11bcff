"""The old path of `privjax.models.faces`, kept for one release (its face aligner is now
`privjax.data.align`)."""

from privjax.models.faces import *  # noqa: F403
