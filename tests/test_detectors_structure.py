"""The shape of :mod:`pcad.detectors`: imports go one way, built-ins register by import, one
clash policy, capabilities declared on the class.

The import graph is read from the source with :mod:`ast` (module-level and function-level
imports alike), so a cycle is caught even when it would only bite at run time.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import pcad
from pcad.detectors import create_detector, detector_info, list_detectors, register_detector
from pcad.detectors.base import Detector
from pcad.errors import InvalidInputError

PACKAGE = "pcad.detectors"
FOLDER = Path(pcad.__file__).parent / "detectors"
#: the shared modules every detector builds on; they import none of the detectors
CORE = {f"{PACKAGE}.{m}" for m in ("base", "registry", "patches", "training")}
CAPABILITIES = ("supports_distributed", "needs_defect_source", "modalities")


def module_name(path: Path) -> str:
    return PACKAGE if path.stem == "__init__" else f"{PACKAGE}.{path.stem}"


def modules() -> dict[str, ast.Module]:
    return {module_name(p): ast.parse(p.read_text(), str(p)) for p in sorted(FOLDER.glob("*.py"))}


def imported(tree: ast.Module, known: set[str]) -> set[str]:
    """The modules of the package that ``tree`` imports anywhere (functions included);
    ``from pcad.detectors import name`` is the submodule ``name`` when there is one, else
    the package itself."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith(PACKAGE)}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x / from .x import y
                base = ".".join([PACKAGE, *filter(None, [base])])
            if base == PACKAGE:
                out |= {f"{PACKAGE}.{a.name}" if f"{PACKAGE}.{a.name}" in known else PACKAGE
                        for a in node.names}
            elif base.startswith(PACKAGE + "."):
                out.add(base)
    return out


def import_graph() -> dict[str, set[str]]:
    trees = modules()
    known = set(trees)
    return {name: imported(tree, known) - {name} for name, tree in trees.items()}


def registering(tree: ast.Module) -> list[str]:
    """The names a module registers with ``@register_detector("name")``."""
    return [d.args[0].value for node in ast.walk(tree) if isinstance(node, ast.ClassDef)
            for d in node.decorator_list
            if isinstance(d, ast.Call) and getattr(d.func, "id", None) == "register_detector"
            and d.args and isinstance(d.args[0], ast.Constant)]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert CORE <= set(graph), sorted(graph)
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_shared_modules_import_no_detector():
    graph = import_graph()
    for name in sorted(CORE):
        assert graph[name] <= CORE, f"{name} imports {sorted(graph[name] - CORE)}"


def test_detector_modules_do_not_import_the_package():
    """A detector module that took a name from ``pcad.detectors`` itself would run into the
    half-initialised package (its ``__init__`` imports the detectors)."""
    graph = import_graph()
    for name, targets in graph.items():
        if name != PACKAGE:
            assert PACKAGE not in targets, f"{name} imports from {PACKAGE} itself"


def test_every_builtin_is_one_module_imported_by_the_package():
    trees = modules()
    init = imported(trees[PACKAGE], set(trees))
    names: list[str] = []
    for module, tree in trees.items():
        registered = registering(tree)
        names += registered
        if registered:
            assert module in init, f"{module} registers {registered} but {PACKAGE} does not " \
                                   "import it"
            assert module not in CORE
    assert sorted(names) == list_detectors()


def test_registering_a_taken_name_raises_unless_overwrite():
    original = detector_info("btf").obj

    class Other(original):
        pass

    with pytest.raises(InvalidInputError, match="'btf' is already registered by "
                                                "pcad.detectors.btf.BTFDetector"):
        register_detector("btf")(Other)
    assert detector_info("btf").obj is original and original.name == "btf"
    register_detector("btf")(original)  # the same class again (a module reload): fine
    try:
        assert register_detector("btf", overwrite=True)(Other) is Other
        assert detector_info("btf").obj is Other and Other.name == "btf"
        assert type(create_detector("btf", image_size=64)) is Other
    finally:
        register_detector("btf", overwrite=True)(original)
    assert detector_info("btf").obj is original
    with pytest.raises(InvalidInputError, match="expected a Detector subclass"):
        register_detector("not-a-detector")(object)
    with pytest.raises(InvalidInputError, match="non-empty string"):
        register_detector("")
    assert "not-a-detector" not in list_detectors()


def test_registry_api():
    assert list_detectors("patch*") == ["patchcore-rgb"]
    entry = detector_info("cfm")
    assert entry.name == "cfm" and issubclass(entry.obj, Detector)
    assert entry.description.startswith("Crossmodal Feature Mapping")
    with pytest.raises(InvalidInputError, match=r"detector: unknown 'nope'; expected one of \["):
        detector_info("nope")
    with pytest.raises(InvalidInputError, match="unknown 'nope'"):
        create_detector("nope")


def test_capabilities_are_class_attributes():
    for name in list_detectors():
        cls = detector_info(name).obj
        assert isinstance(cls.supports_distributed, bool)
        assert isinstance(cls.needs_defect_source, bool)
        assert isinstance(cls.modalities, tuple) and cls.modalities
    assert detector_info("synthsup").obj.needs_defect_source
    assert {n for n in list_detectors() if detector_info(n).obj.supports_distributed} == {
        "btf", "cfm", "fpfh", "lsfa", "m3dm", "patchcore-rgb"}


def test_no_getattr_probes_for_capabilities():
    root = Path(pcad.__file__).parent
    for path in [root / "engine.py", root / "distributed.py", *sorted((root / "cli").glob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("getattr",
                                                                                  "hasattr")
                    and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)):
                assert node.args[1].value not in CAPABILITIES, \
                    f"{path.name}:{node.lineno}: {node.args[1].value} probed with getattr"
