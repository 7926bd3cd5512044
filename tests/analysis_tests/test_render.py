"""Markdown, LaTeX and CSV output; the LaTeX compiles with a real pdflatex.

``make test`` installs Debian's texlive (pdflatex + booktabs) where apt is available and it runs
as root, as it does for the SLURM cluster. Elsewhere the compile test is skipped with the
reason; on CI (``CI=true``) a missing pdflatex is an error.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from rich.cells import cell_len
from rich.console import Console

from analysis.render import latex_escape, print_tables, to_csv, to_latex, to_markdown
from analysis._tables import Table
from analysis.report import all_tables, collect
from tests.analysis_tests.run_records import plan_of, write_run, write_sweep

NO_PDFLATEX = "pdflatex not found: `make test` installs texlive-latex-base/-recommended where apt and root allow"


def _pdflatex() -> str:
    found = shutil.which("pdflatex")
    if found:
        return found
    if os.environ.get("CI") == "true":
        pytest.fail(NO_PDFLATEX + " (CI=true: the LaTeX tables must be compiled)")
    pytest.skip(NO_PDFLATEX)


def _tricky_table() -> Table:
    header = ["mix.mask_ratio", "top-1", "n", "Δ top-1", "p", "95 % CI"]
    rows = [["0.3 & 50%_#$", "52.1 ± 0.4", "3/3", "baseline", "", ""],
            ["{a}~^\\", "55.0 ± 1.2", "1/3 †", "+2.9", "<0.001", "[+0.5, +3.1]"]]
    return Table("s", "s-mix-mask_ratio", "s: mix.mask_ratio", "Top-1 (%), Δ vs base; † unfinished.", header, rows,
                 {(1, 1)}, pd.DataFrame({"label": ["a", "b"], "top1_mean": [52.1, 55.0]}))


def test_latex_escapes_specials_and_marks_best_bold() -> None:
    tex = to_latex(_tricky_table())
    assert r"0.3 \& 50\%\_\#\$" in tex
    assert r"\{a\}\textasciitilde{}\textasciicircum{}\textbackslash{}" in tex
    assert r"\textbf{55.0 $\pm$ 1.2}" in tex and r"1/3 $^{\dagger}$" in tex and r"$\Delta$ top-1" in tex
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex
    assert "\\label{tab:s-mix-mask-ratio}" in tex
    assert latex_escape("<0.001") == "$<$0.001"
    assert latex_escape("TokenMix · area labels") == r"TokenMix $\cdot$ area labels"


def test_markdown_and_csv() -> None:
    table = _tricky_table()
    md = to_markdown(table)
    assert "| **55.0 ± 1.2** |" in md and md.count("\n|") == 4 and table.caption in md
    frame = pd.read_csv(io.StringIO(to_csv(table)))
    assert list(frame["top1_mean"]) == [52.1, 55.0]


@pytest.mark.latex
def test_latex_tables_compile_with_pdflatex(tmp_path: Path) -> None:
    pdflatex = _pdflatex()
    path = write_sweep(tmp_path, "ratio_ablation", axes={"mix.mask_ratio": [0.3, 0.7]}, mode="one_at_a_time",
                       seeds=[0, 1])
    plan = plan_of(path)
    for cond in plan.conditions:
        for seed, rid in cond.run_ids.items():
            write_run(plan, rid, 50.0 + 3 * seed + len(cond.label), occ50=30.0 + seed)
    (tmp_path / "tables").mkdir()
    names = []
    for table in [*all_tables(collect([path], cache=False)), _tricky_table()]:
        (tmp_path / "tables" / f"{table.name}.tex").write_text(to_latex(table))
        names.append(table.name)
    body = "\n".join(f"\\input{{tables/{name}.tex}}" for name in names)
    (tmp_path / "paper.tex").write_text(
        "\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n" + body + "\n\\end{document}\n"
    )
    result = subprocess.run([pdflatex, "-interaction=nonstopmode", "-halt-on-error", "paper.tex"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:]
    assert (tmp_path / "paper.pdf").stat().st_size > 1000
    assert "Missing character" not in (tmp_path / "paper.log").read_text(errors="replace")


def _methods_tables(folder: Path) -> list[Table]:
    path = write_sweep(folder, "methods", include=[
        {"mix.method": "none"}, {"mix.method": "cutmix", "mix.mixup_alpha": 0.0},
        {"mix.method": "tokenmix", "mix.target": "area"}], seeds=[0, 1, 2])
    plan = plan_of(path)
    for cond in plan.conditions:
        for seed, rid in cond.run_ids.items():
            write_run(plan, rid, 50.0 + cond.index * (1 + seed) + 0.3 * seed, occ50=30.0 + seed)
    return all_tables(collect([path], cache=False))


def test_every_row_has_a_cell_per_column(tmp_path: Path) -> None:
    (table,) = _methods_tables(tmp_path)
    assert {len(row) for row in table.rows} == {len(table.header)}
    md_rows = [line for line in to_markdown(table).splitlines() if line.startswith("| ")]
    assert {line.count(" | ") for line in md_rows} == {len(table.header) - 1}


@pytest.mark.parametrize("width", [40, 72, 80, 120, 160])
def test_terminal_tables_fit_the_terminal(tmp_path: Path, width: int) -> None:
    (table,) = _methods_tables(tmp_path)
    out = io.StringIO()
    print_tables([table], Console(file=out, width=width, force_terminal=True, color_system=None))
    text = out.getvalue()
    assert max(cell_len(line) for line in text.splitlines()) <= width
    if width < 66:  # not even label, top-1, Δ, p (Holm) and CI fit: the Markdown, wrapped at the width
        assert "| condition |" in text and "Seeds needed" in text
        return
    ci = table.rows[2][table.header.index("95 % CI")]
    assert ci in text and table.rows[2][table.header.index("p (Holm)")] in text  # numbers are never cut
    assert "CutMix" in text and "labels" in text and "Seeds needed" in text
    left_out = "left out to fit the terminal" in text
    assert left_out == (width <= 80)  # a wide terminal shows every column; a narrow one names those it drops
    if left_out:
        assert "GPU-h" in text.split("left out to fit the terminal")[1]
