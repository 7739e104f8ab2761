"""README and --help statements held to the code: which detectors train under torchrun."""

from __future__ import annotations

import re
from pathlib import Path

from pcad.cli.main import main
from pcad.cli.names import DISTRIBUTED_DETECTORS

ROOT = Path(__file__).resolve().parents[1]


def test_distributed_detectors_are_the_ones_the_code_supports() -> None:
    from pcad.detectors import create_detector, list_detectors

    supported = tuple(n for n in list_detectors()
                      if type(create_detector(n)).supports_distributed)
    assert DISTRIBUTED_DETECTORS == supported


def test_train_help_and_readme_name_the_same_distributed_detectors(capsys) -> None:
    try:
        main(["train", "--help"])
    except SystemExit:
        pass
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"({', '.join(DISTRIBUTED_DETECTORS)}; not the others)" in help_text
    readme = " ".join((ROOT / "README.md").read_text().split())
    line = readme.split("**Distributed training**")[1].split("data-parallel")[0]
    assert sorted(re.findall(r"`([a-z0-9-]+)`", line)) == sorted(DISTRIBUTED_DETECTORS)
