"""The one registry idiom (`attention.registry`), enumerated: model families, map methods, model sources,
audit engines; discovery of a package's modules; the app reached only through entry points."""
from __future__ import annotations

import pkgutil
import subprocess
import sys

import pytest

import attention.audit.engines as engines_pkg
import attention.families as families_pkg
import attention.models as models_pkg
from attention.audit.engines import ENGINE_REGISTRY, ENGINES, get_engine
from attention.families import FAMILIES, families, family_of
from attention.methods import METHODS, get_method, method_names, methods
from attention.models import SOURCES, demo_names, name_syntax, sources
from attention.registry import PluginMissingError, Registry, discover, entry_point


def _module_names(pkg, suffix=""):
    return sorted(i.name for i in pkgutil.iter_modules(pkg.__path__) if i.name.endswith(suffix)
                  and not i.name.startswith("_"))


# ---------------------------------------------------------------------------- the idiom

def test_registry_as_decorator_and_call_with_a_clear_error():
    reg = Registry("widget")

    @reg.register
    class Alpha:
        name = "alpha"

    def beta():
        pass

    reg.register(beta)                     # no ``name``: its __name__
    reg.register(object(), name="gamma")
    assert reg.names() == ["alpha", "beta", "gamma"] and len(reg) == 3 and "beta" in reg
    assert reg.get("alpha") is Alpha and list(reg)[1] is beta
    with pytest.raises(KeyError, match=r"unknown widget 'delta'; available: alpha, beta, gamma"):
        reg.get("delta")
    reg.unregister("beta")
    assert reg.names() == ["alpha", "gamma"]
    with pytest.raises(ValueError, match="a widget needs a name"):
        reg.register(object(), name="")


def test_discover_imports_every_module_of_a_package():
    assert discover("attention.audit.engines") == _module_names(engines_pkg)
    assert discover("attention.models", suffix="_source") == _module_names(models_pkg, "_source")


# ---------------------------------------------------------------------------- the four registries

def test_families_one_per_module_highest_priority_first():
    import timm
    fams = families()
    assert [f.priority for f in fams] == sorted((f.priority for f in fams), reverse=True)
    assert sorted(f.name for f in fams) == sorted(FAMILIES.names())
    # every module except base holds at least one registered family
    modules = {type(f).__module__.rsplit(".", 1)[1] for f in fams}
    assert modules == set(_module_names(families_pkg)) - {"base"}
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=2, img_size=32, depth=1)
    assert family_of(vit).name == "timm-vit"


def test_methods_discovered_in_menu_order():
    assert method_names() == ["raw", "rollout", "grad_rollout", "transformer_attribution", "gradcam", "received",
                              "attnlrp"]
    assert [m.order for m in methods()] == sorted(m.order for m in methods())
    assert sorted(METHODS.names()) == sorted(method_names())
    for m in methods():                              # each method is defined in a module of the package
        assert type(m).__module__.startswith("attention.methods.") and get_method(m.name) is m
    with pytest.raises(KeyError, match="unknown method 'nope'; available: raw, rollout"):
        get_method("nope")


def test_model_sources_claim_order_and_name_syntax():
    assert [s.name for s in sources()] == ["demo", "torchvision", "transformers", "onnx", "open_clip", "timm"]
    assert sorted(SOURCES.names()) == sorted(s.name for s in sources())
    lines = name_syntax().splitlines()
    assert len(lines) == len(sources()) and all(s.syntax for s in sources())
    for prefix in ("demo-", "torchvision:", "hf:", "onnx:", "open_clip:", "timm"):
        assert any(prefix in line for line in lines), prefix
    assert name_syntax(sep="; ") == "; ".join(s.syntax for s in sources())
    assert demo_names() == sorted(demo_names()) and "demo-vit" in demo_names()
    from attention.errors import ModelNotFoundError
    from attention.models import load_model
    with pytest.raises(ModelNotFoundError, match=r"unknown model 'not_a_model_xyz'; a model name is one of:\n  - demo-"):
        load_model("not_a_model_xyz")


def test_audit_engines():
    assert ENGINES == ("local", "ray") == tuple(ENGINE_REGISTRY.names())
    assert ENGINE_REGISTRY.get("local").in_process and not ENGINE_REGISTRY.get("ray").in_process
    from attention.audit.engines.local import run
    assert get_engine("local") is run
    with pytest.raises(KeyError, match="unknown engine 'spark'; available: local, ray"):
        get_engine("spark")


def test_every_model_option_help_is_generated_from_the_sources():
    from attention.cli import build_parser
    text = build_parser()._subparsers._group_actions[0].choices["export"].format_help()
    assert "open_clip:ARCH/PRETRAINED" in " ".join(text.split())


# ---------------------------------------------------------------------------- the app as a plugin

def test_the_app_is_reached_through_entry_points():
    assert entry_point("attention_viz.commands", "app").__module__ == "viz_app.cli"
    assert entry_point("attention_viz.ui", "explore").__module__ == "viz_app.explore"
    with pytest.raises(PluginMissingError, match=r"no entry point 'nope' in group 'attention_viz\.ui'.*pip install"):
        entry_point("attention_viz.ui", "nope", "the nope UI")


def test_importing_the_library_does_not_import_the_app():
    code = ("import sys, attention, attention.cli, attention.notebook, attention.methods.menu, attention.audit; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('viz_app', 'gradio')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
