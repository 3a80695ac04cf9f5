"""Every default of the data options is written once (docs/design.md): in a field of the dataclasses that
cllm/data owns (CleaningOptions in cllm/data/clean.py, CorpusOptions in cllm/data/corpus.py, PrepareOptions
in cllm/data/prepare.py), never again in a command's or a library function's signature, nor in TrainConfig."""
import dataclasses
import importlib
import inspect
import pkgutil
import sys

import pytest
from train_helpers import ROOT

import cllm.data
from cllm.commands import command_function, command_parameters
from cllm.data.prepare import PrepareOptions
from cllm.training import TrainConfig

sys.path.insert(0, str(ROOT))
from cllm import cli  # noqa: E402

DATA_FIELDS = {f.name: f for f in dataclasses.fields(PrepareOptions)}  # CleaningOptions' and CorpusOptions' too


def _commands():
    """(command, action or "", function, module) for every command and sub-action cli.py knows."""
    out = []
    for name, module_name in sorted(cli.COMMANDS.items()):
        module = importlib.import_module("cllm.commands." + module_name)
        for action, func in (getattr(module, "ACTIONS", None) or {"": command_function(module, name)}).items():
            out.append((name, action, func, module))
    return out


# --progress is also a flag of commands that prepare nothing (evaluate's loop has its bar): not checked there
COMMAND_DATA_FIELDS = {name: f for name, f in DATA_FIELDS.items() if name != "progress"}


@pytest.mark.parametrize("name, action, func, module",
                         [pytest.param(*c, id=f"{c[0]} {c[1]}".strip()) for c in _commands()])
def test_a_data_flag_takes_its_default_from_the_data_options(name, action, func, module):
    """A flag named as a data option with a default (None: "decided later", such as tokenizer train's
    --vocab-size, is no default) comes from an OPTIONS dataclass, with the data option's default; and no
    flag of a signature repeats a field of its module's OPTIONS (the signature's default would silently
    win). A positional may (scrape's MAX_PAGES: a second way to give --max-pages), with the field's default."""
    options = getattr(module, "OPTIONS", None)
    fields = {f.name: f for f in dataclasses.fields(options)} if options else {}
    for p in inspect.signature(func).parameters.values():
        if p.name not in fields or p.default is None:
            continue
        assert p.kind is p.POSITIONAL_OR_KEYWORD, f"{func.__qualname__} repeats the flag --{p.name} of {options}"
        assert p.default == fields[p.name].default, (func.__qualname__, p.name)
    for pname, kind, _, default, _ in command_parameters(func, options):
        if pname not in COMMAND_DATA_FIELDS or default in (None, inspect.Parameter.empty):
            continue
        assert kind == "option", f"{name} {action}: --{pname}'s default {default!r} is written in the signature"
        field = DATA_FIELDS[pname]
        assert default == field.metadata.get("shown", field.default), (name, action, pname)


def test_train_takes_its_data_options_from_prepare_options():
    """TrainConfig's fields that PrepareOptions declares too are built from PrepareOptions' field
    (cllm/training/config.py prepare_field), so their defaults are written once, in cllm/data/prepare.py."""
    shared = [f for f in dataclasses.fields(TrainConfig) if f.name in DATA_FIELDS]
    assert {f.name for f in shared} >= {"tokenizer", "vocab_size", "val_fraction", "palette", "progress"}
    for f in shared:
        assert f.metadata.get("from") is PrepareOptions, f"TrainConfig.{f.name} declares its own default"
        assert f.default == DATA_FIELDS[f.name].default, f.name


def _library_modules():
    names = [m.name for m in pkgutil.iter_modules(cllm.data.__path__, "cllm.data.")]
    return sorted(names) + ["cllm.data", "cllm.vision.dataset", "cllm.vision.kind"]


def _functions(module):
    """The functions and methods defined in `module` (not the __init__ a dataclass writes from its fields)."""
    for obj in vars(module).values():
        if inspect.isfunction(obj) and obj.__module__ == module.__name__:
            yield obj
        elif inspect.isclass(obj) and obj.__module__ == module.__name__:
            yield from (f for n, f in vars(obj).items()
                        if inspect.isfunction(f) and not (n == "__init__" and dataclasses.is_dataclass(obj)))


@pytest.mark.parametrize("module_name", _library_modules())
def test_no_signature_repeats_a_data_option_default(module_name):
    """The data layer and its image kind take the options as the dataclass (or as **options checked against
    it), never as parameters with the default written again (the commands: the test above)."""
    module = importlib.import_module(module_name)
    repeats = [f"{func.__qualname__}({p.name}={p.default!r})" for func in _functions(module)
               for p in inspect.signature(func).parameters.values()
               if p.name in DATA_FIELDS and p.default is not p.empty and p.default is not None]
    assert not repeats, f"{module_name} repeats data option defaults: {', '.join(repeats)}"
