"""Statistics of the pairwise study: from a canonical votes table to tests, scores and plots.

Entry points: :func:`study.analysis.report.analyze` (everything, written to a folder),
:mod:`study.analysis.power` (sample size), :mod:`study.analysis.ui` (the app's Results tab).
See README.md in this folder for the outputs and formulas.
"""
