"""The example notebooks are stored with outputs cleared and run on small settings here, so
they never rot (``PCAD_EXAMPLE_SMALL=1``; outputs go to a temporary folder)."""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="nbformat runs the example notebooks")
nbclient = pytest.importorskip("nbclient", reason="nbclient runs the example notebooks")
pytest.importorskip("ipykernel", reason="ipykernel runs the example notebooks")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))
#: Files each notebook must write (relative to its output folder).
EXPECTED = {
    "01_synthesis_parameters": ["before_after.html", "sweep.html"],
    "02_dataset_generation": ["dataset/dataset.json", "sample.html", "cloud.png"],
    "03_train_and_evaluate": ["run/metrics.json", "run/scores.csv", "report.html"],
}


def test_every_notebook_is_listed() -> None:
    assert sorted(p.stem for p in NOTEBOOKS) == sorted(EXPECTED)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_with_outputs_cleared(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, \
                f"{path.name}: clear the outputs before committing"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_on_small_settings(path: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PCAD_EXAMPLE_SMALL", "1")
    monkeypatch.setenv("PCAD_EXAMPLE_OUT", str(tmp_path / "out"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    out = tmp_path / "out" / path.stem
    for name in EXPECTED[path.stem]:
        assert (out / name).is_file(), f"{path.name} did not write {name}"
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors


def test_clear_outputs_script_clears_what_the_check_above_requires(tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("clear_outputs",
                                                  EXAMPLES / "clear_outputs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    path = tmp_path / "n.ipynb"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1", execution_count=2),
                                         nbformat.v4.new_markdown_cell("text")])
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", text="1\n")]
    nbformat.write(nb, path)
    assert mod.clear_outputs(path) == 1 and mod.clear_outputs(path) == 0
    cell = nbformat.read(path, as_version=4).cells[0]
    assert cell.outputs == [] and cell.execution_count is None


def test_examples_readme_names_only_installed_tools() -> None:
    import shutil

    text = (EXAMPLES / "README.md").read_text()
    assert "nbconvert" not in text  # not installed by any extra
    bin_dir = Path(__file__).resolve().parents[1] / ".venv" / "bin"
    if (bin_dir / "jupyter").exists() or shutil.which("jupyter"):
        import subprocess

        exe = str(bin_dir / "jupyter") if (bin_dir / "jupyter").exists() else "jupyter"
        out = subprocess.run([exe, "execute", "--help"], capture_output=True, text=True,
                             timeout=60)
        assert "--inplace" in out.stdout  # the command the README gives exists
