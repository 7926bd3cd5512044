"""The former name of :mod:`analysis.render`, importable until its last importers use the public one."""

from analysis.render import latex_escape, print_tables, to_csv, to_latex, to_markdown, to_rich

__all__ = ["latex_escape", "print_tables", "to_csv", "to_latex", "to_markdown", "to_rich"]
