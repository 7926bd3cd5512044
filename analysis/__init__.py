"""Ablation reports: sweep runs -> one DataFrame -> tables over seeds (Markdown, LaTeX, CSV) and plots.

Public entry points live in :mod:`analysis.report` (``collect``, ``build_tables``,
``write_report``), :mod:`analysis.render` (``print_tables``, ``to_markdown``, ``to_latex``,
``to_csv``) and :mod:`analysis.cli` (``suite report``). pandas, scipy and matplotlib are
imported only here, never by ``suite``.
"""
