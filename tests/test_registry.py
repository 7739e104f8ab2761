"""The one registry type behind detectors, defects and backbones (pcad.registry)."""

from __future__ import annotations

import sys
import types

import pytest

from pcad.errors import InvalidInputError
from pcad.registry import Registry


def _obj(name: str):
    def f():
        return name

    f.__qualname__ = name
    return f


def test_register_get_names_info():
    reg = Registry("widget")
    a, b = _obj("a"), _obj("b")
    reg.register("beta", colour="red")(b)
    reg.register("alpha", colour="blue", description="The first.")(a)
    assert reg.names() == ["alpha", "beta"]
    assert reg.names("b*") == ["beta"]
    assert reg.names(colour="blue") == ["alpha"]
    assert reg.get("beta") is b
    entry = reg.info("alpha")
    assert (entry.name, entry.obj, entry.info["colour"], entry.description) == (
        "alpha", a, "blue", "The first.")
    assert "alpha" in reg and "gamma" not in reg


def test_clash_policy_one_rule():
    reg = Registry("widget")
    first, second = _obj("first"), _obj("second")
    reg.register("x")(first)
    with pytest.raises(InvalidInputError, match="widget 'x' is already registered by .*first; "
                                                "pass overwrite=True"):
        reg.register("x")(second)
    assert reg.get("x") is first  # the failed registration changed nothing
    reg.register("x")(first)  # the same object again (a module reload) is fine
    reg.register("x", overwrite=True)(second)
    assert reg.get("x") is second


@pytest.mark.parametrize("bad", ["", None, 3])
def test_bad_names(bad):
    with pytest.raises(InvalidInputError, match="widget name: a non-empty string"):
        Registry("widget").register(bad)


def test_unknown_name_lists_known():
    reg = Registry("widget")
    reg.register("only")(_obj("only"))
    with pytest.raises(InvalidInputError,
                       match=r"widget: unknown 'nope'; expected one of \['only'\]"):
        reg.get("nope")
    with pytest.raises(InvalidInputError, match="unknown"):
        reg.info(["not", "a", "name"])


def test_builtins_load_lazily_once(monkeypatch, tmp_path):
    reg = Registry("widget", builtins=["_pcad_widgets_builtin"])
    holder = types.ModuleType("_pcad_widgets_holder")
    holder.reg, holder.imports = reg, []
    monkeypatch.setitem(sys.modules, "_pcad_widgets_holder", holder)
    (tmp_path / "_pcad_widgets_builtin.py").write_text(
        "import _pcad_widgets_holder as h\n"
        "h.imports.append(1)\n"
        "h.reg.register('builtin')(len)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "_pcad_widgets_builtin", raising=False)
    assert holder.imports == []  # nothing imported before first use
    assert reg.names() == ["builtin"]
    assert reg.get("builtin") is len and "builtin" in reg
    assert holder.imports == [1]  # imported once
