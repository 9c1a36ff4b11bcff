"""The report: report.json, per_image.csv, the PNGs and report.html, published as one set.

Rule: a report module imports only `privjax.runtime`, the spine leaves and other report
modules: it reads numbers the stages computed and computes none.
"""

__all__: list[str] = []  # its modules' names are theirs: import the module
