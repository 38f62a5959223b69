"""Layers import one way: base → data → models → processes → samplers / hooks → checkpoints / trainer →
methods → analyses / evaluation / studies → reports → cli / demo. Every ``import`` of an ``interp``
module, at module level or inside a function, is checked, so no module reaches up a layer (method
specs name the reports that show them by string; :mod:`interp.registry` imports method modules by name)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

LAYERS = {
    0: ("interp", "interp.errors", "interp.config", "interp.io", "interp.interpretable", "interp.steps", "interp.registry",
        "interp.protocols"),
    1: ("interp.data",),
    2: ("interp.models",),
    3: ("interp.processes",),
    4: ("interp.samplers", "interp.hooks"),
    5: ("interp.checkpoints", "interp.train"),
    6: ("interp.methods",),
    7: ("interp.analyses", "interp.evaluation", "interp.studies"),
    8: ("interp.reports",),
    9: ("interp.cli", "interp.demo"),
}  # fmt: skip


def layer(module: str) -> int:
    matches = [(len(prefix), level) for level, prefixes in LAYERS.items() for prefix in prefixes
               if module == prefix or module.startswith(prefix + ".")]  # fmt: skip
    assert matches, f"{module} is in no layer: add it to LAYERS"
    return max(matches)[1]


def imports(path: Path, module: str) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("interp")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.rsplit(".", node.level)[0]
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            if name.startswith("interp"):
                found += [(node.lineno, f"{name}.{a.name}" if name in ("interp", "interp.hooks") else name)
                          for a in node.names]  # fmt: skip
    return found


def test_no_module_imports_a_layer_above_its_own():
    violations = []
    for path in sorted((ROOT / "interp").rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        own = layer(module)
        for lineno, target in imports(path, module):
            if target == "interp" or (
                target.startswith(("interp.hooks.", "interp.hooks")) and module.startswith("interp.hooks")
            ):
                continue
            if layer(target) > own:
                violations.append(f"{path.relative_to(ROOT)}:{lineno} ({own}) imports {target} ({layer(target)})")
    assert not violations, "\n".join(violations)


def test_hooks_core_imports_no_adapter():
    core = ROOT / "interp" / "hooks" / "attach.py"
    names = [t for _, t in imports(core, "interp.hooks.attach")]
    assert not [n for n in names if "adapter" in n], names


def test_no_dispatch_on_a_kind_string_outside_its_method_module():
    """No ``x.kind == "dlm"``, ``kind in ("dlm", "ar")`` or ``expected_kind="image"`` outside the method's own
    module: code asks the registry or a protocol instead."""
    kinds = {"dlm": "diffusion_lm.py", "ar": "autoregressive.py", "image": "image_diffusion.py",
             "feature_net": "feature_net.py", "autoencoder": "autoencoder.py",
             "flowbender": "flowbender.py", "lwd": "lwd.py",
             "latent_flow": "latent_flow.py", "crossflow": "crossflow.py",
             "hf_diffusion_gemma": "hf_diffusion_gemma.py", "dgemma": "diffusion_gemma.py"}  # fmt: skip

    def is_kind(node: ast.AST) -> bool:
        return (isinstance(node, ast.Attribute) and node.attr == "kind") or (
            isinstance(node, ast.Name) and node.id == "kind"
        )

    def constants(node: ast.AST) -> list[str]:
        return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and n.value in kinds]

    found = []
    for path in sorted((ROOT / "interp").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            literals = []
            if isinstance(node, ast.Compare) and any(is_kind(x) for x in [node.left, *node.comparators]):
                literals = constants(node)
            elif isinstance(node, ast.keyword) and node.arg == "expected_kind":
                literals = constants(node.value)
            found += [f"{path.relative_to(ROOT)}:{node.lineno} {v!r}" for v in literals if path.name != kinds[v]]
    assert not found, "\n".join(found)
